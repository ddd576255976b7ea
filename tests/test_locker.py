"""Locker against the moto server: obtaining, heartbeats, cancellation on loss, faults."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aiolease import (
    Lease,
    LeaseLostError,
    LeaseNotObtainedError,
    LeaseRequest,
    Locker,
    LockStore,
)
from aiolease._wire import calls

from . import faults
from .faults import FaultyClient
from .history import Hold, check_history

SHORT = 1.5  # seconds: a short lease, so that losses happen within a test


def request(name: str = "worker-a", duration: float = SHORT) -> LeaseRequest:
    return LeaseRequest(name, duration)


async def holder_of(client: Any, store: LockStore, lease_id: str) -> str | None:
    response = await client.get_item(
        TableName=store.table_name, Key={"LeaseID": {"S": lease_id}}, ConsistentRead=True
    )
    return response["Item"].get("ProcessID", {}).get("S")


async def steal(client: Any, store: LockStore, lease_id: str, thief: str = "thief") -> None:
    """Take the row over behind the locker's back, as another holder would."""
    await client.update_item(
        TableName=store.table_name,
        Key={"LeaseID": {"S": lease_id}},
        UpdateExpression="SET #l = :l, #t = #t + :one",
        ExpressionAttributeNames={"#l": "ProcessID", "#t": "LeaseToken"},
        ExpressionAttributeValues={":l": {"S": thief}, ":one": {"N": "1"}},
    )


# -- obtain_lease -------------------------------------------------------------------------


async def test_obtain_lease_takes_a_free_item(store: LockStore) -> None:
    await store.add_item("only")
    lease = await Locker(store).obtain_lease(request())
    assert (lease.lease_id, lease.fencing_token) == ("only", 1)


async def test_obtain_lease_skips_held_items(store: LockStore) -> None:
    for i in range(5):
        await store.add_item(f"item-{i}")
    for i in range(4):
        await store.lease(f"item-{i}", request("other", 30))
    lease = await Locker(store).obtain_lease(request())
    assert lease.lease_id == "item-4"


async def test_obtain_lease_raises_not_obtained_when_nothing_is_free(store: LockStore) -> None:
    await store.add_item("a")
    await store.lease("a", request("other", 30))
    with pytest.raises(LeaseNotObtainedError, match=store.table_name):
        await Locker(store).obtain_lease(request())


async def test_obtain_lease_waits_out_max_clock_skew_on_expired_items(store: LockStore) -> None:
    await store.add_item("a")
    await store.lease("a", request("other"), datetime.now(UTC) - timedelta(seconds=0.5))
    with pytest.raises(LeaseNotObtainedError):
        await Locker(store, max_clock_skew=30).obtain_lease(request())
    lease = await Locker(store, max_clock_skew=0.1).obtain_lease(request())
    assert lease.lease_id == "a" and lease.fencing_token == 2


async def test_obtain_lease_never_hands_out_an_item_the_same_lessee_holds(store: LockStore) -> None:
    await store.add_item("a")
    locker = Locker(store)
    await locker.obtain_lease(request())
    with pytest.raises(LeaseNotObtainedError):
        await locker.obtain_lease(request())  # same lessee ID, another task: not re-entrant


async def test_concurrent_workers_spread_over_the_pool(
    faulty: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = faulty
    for i in range(20):
        await store.add_item(f"item-{i:02d}")
    proxy.calls.clear()
    leases = await asyncio.gather(
        *(Locker(store).obtain_lease(request(f"w{i}", 30)) for i in range(10))
    )
    assert len({lease.lease_id for lease in leases}) == 10
    # Random order: ten workers over twenty items rarely collide; in-order would need ~55.
    assert proxy.calls["update_item"] < 20, proxy.calls


async def test_obtain_lease_finds_the_one_free_item_among_many_held(
    client: Any, faulty: tuple[LockStore, FaultyClient]
) -> None:
    """Scan layout: past the first 1 MB page. Indexed: in whichever bucket it is."""
    store, proxy = faulty
    payload = "x" * 4000
    ids = [f"item-{i:04d}" for i in range(300)]  # 1.2 MB: several scan pages
    for start in range(0, 300, 25):
        await client.batch_write_item(
            RequestItems={
                store.table_name: [
                    {
                        "PutRequest": {
                            "Item": {
                                "LeaseID": {"S": i},
                                "LeaseUntil": {"N": str(2**62)},  # held for ever...
                                "ProcessID": {"S": "other"},
                                "payload": {"S": payload},
                                **(
                                    {"LeaseBucket": {"N": str(store.bucket_of(i))}}
                                    if store.indexed
                                    else {}
                                ),
                            }
                        }
                    }
                    for i in ids[start : start + 25]
                ]
            }
        )
    free = ids[-1]
    await store.force_release(free)  # ...but for the last one
    proxy.calls.clear()
    lease = await Locker(store).obtain_lease(request())
    assert lease.lease_id == free
    if store.indexed:
        assert proxy.calls["scan"] == 0, "the indexed layout never scans"
        assert 1 <= proxy.calls["query"] <= store.buckets, proxy.calls
    else:
        assert proxy.calls["scan"] >= 2, "the free item was on a later page"


# -- wait_until_lease_obtained -------------------------------------------------------------


async def test_wait_until_lease_obtained_returns_once_an_item_is_released(store: LockStore) -> None:
    await store.add_item("a")
    held = await store.lease("a", request("other", 30))
    waiter = asyncio.create_task(Locker(store).wait_until_lease_obtained(request(), 0.2))
    await asyncio.sleep(0.5)
    assert not waiter.done(), "nothing was free yet"
    assert await store.release(held)
    lease = await asyncio.wait_for(waiter, 5)
    assert lease.lease_id == "a" and lease.lessee_id == "worker-a"


# -- heartbeat ------------------------------------------------------------------------------


async def test_heartbeat_keeps_a_lease_alive_against_a_competitor(store: LockStore) -> None:
    await store.add_item("a")
    locker = Locker(store, max_clock_skew=0.1)
    lease = await locker.obtain_lease(request())
    beat = asyncio.create_task(locker.heartbeat(lease, SHORT / 3))
    try:
        end = time.monotonic() + 3 * SHORT
        attempts = 0
        while time.monotonic() < end:
            with pytest.raises(LeaseNotObtainedError):
                await store.lease("a", request("competitor"), max_clock_skew=0.1)
            attempts += 1
            await asyncio.sleep(0.2)
        assert not beat.done()
        assert attempts > 5
    finally:
        beat.cancel()
        with pytest.raises(asyncio.CancelledError):
            await beat


async def test_heartbeat_renewals_queue_by_the_lease_deadline(
    client: Any, store: LockStore
) -> None:
    deadlines: list[float | None] = []
    renewing = asyncio.Event()

    class Recording(LockStore):
        async def renew(self, lease: Lease, until: datetime | None = None) -> Lease:
            deadlines.append(calls._deadline.get())
            renewing.set()
            return await super().renew(lease, until)

    recording = Recording(client, store.table_name)
    await recording.add_item("a")
    lease = await recording.acquire("a", request())
    locker = Locker(recording, safety_margin=0.2)
    expected = lease._sent_at + SHORT - 0.2  # the first renewal's local deadline
    beat = asyncio.create_task(locker.heartbeat(lease, SHORT / 3))
    await asyncio.wait_for(renewing.wait(), 2 * SHORT)
    beat.cancel()
    await asyncio.gather(beat, return_exceptions=True)
    assert deadlines[0] is not None and abs(deadlines[0] - expected) < 1e-6, (
        f"the renewal waited for a slot with deadline {deadlines[0]}, not the lease's {expected}"
    )


async def test_heartbeat_raises_lease_lost_when_the_row_is_taken(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a")
    locker = Locker(store)
    lease = await locker.obtain_lease(request())
    beat = asyncio.create_task(locker.heartbeat(lease, SHORT / 3))
    await steal(client, store, "a")
    with pytest.raises(LeaseLostError, match="thief"):
        await asyncio.wait_for(beat, SHORT)


async def test_heartbeat_stops_cleanly_when_cancelled(
    faulty: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = faulty
    await store.add_item("a")
    locker = Locker(store)
    lease = await locker.obtain_lease(request())
    beat = asyncio.create_task(locker.heartbeat(lease, 0.1))
    await asyncio.sleep(0.35)
    beat.cancel()
    with pytest.raises(asyncio.CancelledError):
        await beat
    sent = proxy.calls["update_item"]
    await asyncio.sleep(0.5)
    assert proxy.calls["update_item"] == sent, "renewals went on after cancellation"


async def test_heartbeat_in_a_task_group_cancels_siblings_on_loss(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a")
    locker = Locker(store)
    lease = await locker.obtain_lease(request())
    sibling_cancelled = asyncio.Event()

    async def work() -> None:
        try:
            await steal(client, store, "a")
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            sibling_cancelled.set()
            raise

    with pytest.raises(ExceptionGroup) as info:  # noqa: PT012
        async with asyncio.TaskGroup() as tg:
            tg.create_task(locker.heartbeat(lease, SHORT / 3))
            tg.create_task(work())
    assert info.group_contains(LeaseLostError)
    assert sibling_cancelled.is_set()


def test_heartbeat_period_must_be_shorter_than_the_lease(store: LockStore) -> None:
    locker = Locker(store)
    with pytest.raises(ValueError, match="heartbeat_period"):
        locker.lease(request(duration=2), heartbeat_period=2)
    with pytest.warns(RuntimeWarning, match="fewer than 3 renewal"):
        locker.lease(request(duration=3), heartbeat_period=1.5)


# -- async with locker.lease(...) -------------------------------------------------------------


async def test_lease_scope_obtains_heartbeats_and_releases(client: Any, store: LockStore) -> None:
    await store.add_item("a")
    locker = Locker(store)
    async with locker.lease(request()) as lease:
        assert await holder_of(client, store, "a") == "worker-a"
        await asyncio.sleep(2 * SHORT)  # outlives the lease duration: the heartbeat renews
        assert await holder_of(client, store, "a") == "worker-a"
    assert lease.lease_id == "a"
    assert await holder_of(client, store, "a") is None, "released on exit"


async def test_lease_scope_on_a_named_item(store: LockStore) -> None:
    for name in ("a", "b", "c"):
        await store.add_item(name)
    async with Locker(store).lease(request(), "b") as lease:
        assert lease.lease_id == "b"


async def test_lease_scope_on_a_missing_named_item_fails_at_once(store: LockStore) -> None:
    started = time.monotonic()
    with pytest.raises(LeaseNotObtainedError, match="ghost"):
        async with Locker(store).lease(request(), "ghost", timeout=30):
            pytest.fail("entered a scope for an item that does not exist")
    assert time.monotonic() - started < 5, "waited for a row that cannot appear"


async def test_lease_scope_timeout_raises_not_obtained(store: LockStore) -> None:
    await store.add_item("a")
    await store.lease("a", request("other", 30))
    started = time.monotonic()
    with pytest.raises(LeaseNotObtainedError, match=r"within 0\.6 s"):
        async with Locker(store).lease(request(), wait_period=0.1, timeout=0.6):
            pytest.fail("entered a scope without a lease")
    assert time.monotonic() - started < 3


async def test_lost_lease_cancels_the_body_and_raises_lease_lost(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a")
    locker = Locker(store)
    period = SHORT / 3
    reached_after_await = False
    with pytest.raises(LeaseLostError, match="thief") as info:  # noqa: PT012
        async with locker.lease(request(), heartbeat_period=period):
            await steal(client, store, "a")
            stolen_at = time.monotonic()
            await asyncio.sleep(30)
            reached_after_await = True
    elapsed = time.monotonic() - stolen_at
    assert not reached_after_await, "the body went on after the lease was lost"
    assert elapsed < 2 * period + 0.5, f"loss noticed after {elapsed:.2f} s"
    assert isinstance(info.value.__cause__, LeaseLostError)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    assert await holder_of(client, store, "a") == "thief", "release must not free the thief's lease"


async def test_body_exceptions_propagate_unchanged_and_the_lease_is_released(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a")

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with Locker(store).lease(request()):
            raise Boom
    assert await holder_of(client, store, "a") is None


async def test_outer_cancellation_propagates_and_the_lease_is_released(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a")
    entered = asyncio.Event()

    async def holder() -> None:
        async with Locker(store).lease(request()):
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(holder())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):  # the release goes on, shielded, after the cancellation propagated
        if await holder_of(client, store, "a") is None:
            break
        await asyncio.sleep(0.05)
    assert await holder_of(client, store, "a") is None


async def test_outer_cancellation_during_a_loss_still_propagates(
    client: Any, faulty: tuple[LockStore, FaultyClient]
) -> None:
    store, proxy = faulty
    await store.add_item("a")
    scope = Locker(store).lease(request(), heartbeat_period=SHORT / 3)

    releasing = asyncio.Event()

    def slow_release(call: Any) -> Any:
        async def run() -> Any:
            releasing.set()
            await asyncio.sleep(2)
            return await call()

        return run()

    async def holder() -> None:
        async with scope:
            await steal(client, store, "a")
            # the next renewal finds the thief; the release on exit then takes 2 s
            proxy.inject("update_item", faults.delay(0), slow_release)
            await asyncio.sleep(30)

    task = asyncio.create_task(holder())
    await releasing.wait()
    assert scope.lost and not task.done(), "the scope should be releasing after the loss"
    task.cancel()  # from outside, while the loss is unwinding
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_run_returns_the_work_result(store: LockStore) -> None:
    await store.add_item("a")

    async def work(lease: Lease) -> str:
        return f"did {lease.lease_id}"

    assert await Locker(store).run(request(), work) == "did a"


async def test_run_cancels_the_work_on_loss(client: Any, store: LockStore) -> None:
    await store.add_item("a")
    cancelled = asyncio.Event()

    async def work(lease: Lease) -> None:
        await steal(client, store, lease.lease_id)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(LeaseLostError):
        await Locker(store).run(request(), work, heartbeat_period=SHORT / 3)
    assert cancelled.is_set()


async def test_a_scope_cannot_be_entered_twice(store: LockStore) -> None:
    await store.add_item("a")
    await store.add_item("b")
    scope = Locker(store).lease(request())
    async with scope:
        pass
    with pytest.raises(RuntimeError, match="once"):
        async with scope:
            pass


async def test_an_acquisition_cancelled_in_flight_leaves_no_row_held(
    client: Any, faulty: tuple[LockStore, FaultyClient]
) -> None:
    store, proxy = faulty
    await store.add_item("a")
    landed = asyncio.Event()
    proxy.inject("update_item", faults.land_then_hang(landed))

    async def holder() -> None:
        async with Locker(store).lease(request(), "a"):
            pytest.fail("entered")

    task = asyncio.create_task(holder())
    await landed.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.aclose()
    assert await holder_of(client, store, "a") is None


# -- the local deadline under faults ---------------------------------------------------------


async def test_transient_renewal_failures_shorter_than_the_lease_keep_it(
    faulty: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = faulty
    await store.add_item("a")
    async with Locker(store).lease(request(duration=3), heartbeat_period=0.5) as lease:
        # about a second of throttling and 5xx: several renewal attempts fail, none is lost
        proxy.inject("update_item", *[faults.throttle, faults.server_error] * 6)
        await asyncio.sleep(4)
        assert not proxy.faults["update_item"], "the faults were not all consumed"
    assert lease.lease_id == "a"


async def test_renewals_that_hang_cancel_the_work_before_the_expiry(
    faulty: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = faulty
    await store.add_item("a")
    with pytest.raises(LeaseLostError, match="deadline"):  # noqa: PT012
        async with Locker(store).lease(request(duration=2), heartbeat_period=0.5) as lease:
            proxy.always("update_item", faults.hang)
            try:
                await asyncio.sleep(30)
            finally:
                cancelled_at = datetime.now(UTC)
                proxy.always("update_item", None)
    assert cancelled_at < lease.until, "the work ran past the lease's expiry"


async def test_renewals_failing_until_the_deadline_cancel_the_work_before_the_expiry(
    faulty: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = faulty
    await store.add_item("a")
    with pytest.raises(LeaseLostError):  # noqa: PT012
        async with Locker(store).lease(request(duration=2), heartbeat_period=0.5):
            proxy.always("update_item", faults.server_error)
            renewed_until = None
            try:
                await asyncio.sleep(30)
            finally:
                cancelled_at = datetime.now(UTC)
                proxy.always("update_item", None)
                # The stored expiry, read before the scope's release removes it. The scope
                # cancels a body still running 0.2 s after the loss again, and a loaded
                # server can take that long to answer: the read must outlive those.
                read = asyncio.ensure_future(
                    store.client.get_item(TableName=store.table_name, Key={"LeaseID": {"S": "a"}})
                )
                while not read.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(read)
                renewed_until = int(read.result()["Item"]["LeaseUntil"]["N"])
    assert cancelled_at.timestamp() * 1e9 < renewed_until, "the work outlived the stored expiry"


async def test_a_dropped_renewal_response_is_not_a_loss(
    faulty: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = faulty
    await store.add_item("a")
    async with Locker(store).lease(request(duration=2), heartbeat_period=0.4):
        proxy.inject("update_item", faults.drop_response, faults.drop_response)
        await asyncio.sleep(2.5)
        assert not proxy.faults["update_item"]


async def test_a_blocked_event_loop_loses_the_lease_at_the_next_await(store: LockStore) -> None:
    await store.add_item("a")
    reached = False
    with pytest.raises(LeaseLostError):  # noqa: PT012
        async with Locker(store).lease(request(duration=1)):
            time.sleep(1.3)  # noqa: ASYNC251 - the loop stalls past the lease's deadline
            await asyncio.sleep(0.01)
            reached = True
    assert not reached, "work resumed after a stall longer than the lease"


async def test_a_renewal_in_flight_at_release_cannot_resurrect_the_lease(
    faulty: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = faulty
    await store.add_item("a")
    late: list[asyncio.Task[Any]] = []

    def arrive_late(call: Any) -> Any:
        # The request is on the wire and reaches DynamoDB after the release, whatever the
        # client does meanwhile.
        async def deliver() -> Any:
            await asyncio.sleep(0.5)
            return await call()

        late.append(asyncio.ensure_future(deliver()))

        async def wait() -> Any:
            return await asyncio.shield(late[-1])

        return wait()

    async with Locker(store).lease(request(duration=3), heartbeat_period=0.3):
        proxy.inject("update_item", arrive_late)
        await asyncio.sleep(0.5)  # a renewal is now in flight
    await asyncio.gather(*late, return_exceptions=True)
    response = await store.client.get_item(TableName=store.table_name, Key={"LeaseID": {"S": "a"}})
    assert "ProcessID" not in response["Item"], "a late renewal resurrected a released lease"


# -- many leases, logs, exclusion ---------------------------------------------------------------


async def test_one_locker_holds_many_leases_at_once(store: LockStore) -> None:
    n = 30
    for i in range(n):
        await store.add_item(f"item-{i:02d}")
    locker = Locker(store)
    lost: list[str] = []

    async def hold(i: int) -> None:
        # 6 s leases renewed every 2 s, held for 7 s: every lease needs several renewals.
        try:
            async with locker.lease(request(f"w{i}", 6), f"item-{i:02d}"):
                await asyncio.sleep(7)
        except LeaseLostError as exc:
            lost.append(exc.reason)

    await asyncio.gather(*(hold(i) for i in range(n)))
    assert lost == []


async def test_logs_name_the_lease_lessee_and_token(
    client: Any, faulty: tuple[LockStore, FaultyClient], caplog: pytest.LogCaptureFixture
) -> None:
    store, proxy = faulty
    await store.add_item("a")
    caplog.set_level(logging.INFO, logger="aiolease")
    with pytest.raises(LeaseLostError):  # noqa: PT012
        async with Locker(store).lease(request(), heartbeat_period=0.3):
            proxy.inject("update_item", faults.throttle, faults.throttle, faults.throttle)
            await asyncio.sleep(1.0)
            await steal(client, store, "a")
            await asyncio.sleep(30)
    by_level = {(r.levelname, r.getMessage().split()[0]) for r in caplog.records}
    assert {("INFO", "acquired"), ("INFO", "lost"), ("WARNING", "renewal")} <= by_level
    for record in caplog.records:
        if record.levelno >= logging.INFO:
            assert record.lease_id == "a"  # type: ignore[attr-defined]
            assert record.lessee_id == "worker-a"  # type: ignore[attr-defined]
            assert record.fencing_token == 1  # type: ignore[attr-defined]


async def test_workers_never_hold_one_item_at_once(store: LockStore) -> None:
    items = ["x", "y"]
    for item in items:
        await store.add_item(item)
    holds: list[Hold] = []
    stop_at = time.monotonic() + 8

    async def worker(name: str) -> None:
        locker = Locker(store, max_clock_skew=0.1)
        while time.monotonic() < stop_at:
            try:
                async with locker.lease(request(name, 1.0), wait_period=0.1, timeout=2) as lease:
                    start = time.monotonic()
                    try:
                        await asyncio.sleep(random.uniform(0.05, 1.5))  # sometimes > the lease
                    finally:
                        holds.append(
                            Hold(lease.lease_id, name, lease.fencing_token, start, time.monotonic())
                        )
            except (LeaseNotObtainedError, LeaseLostError):
                pass
            await asyncio.sleep(random.uniform(0, 0.2))

    await asyncio.gather(*(worker(f"w{i}") for i in range(5)))
    report = check_history(holds)
    assert report.holds > 10, report
    assert report.items == len(items)
