"""The observed-expiry takeover mode (``Locker(store, takeover="observe")``) against moto.

The stars are the skewed-clock tests: with wall clocks minutes apart, far beyond
``max_clock_skew``, observe mode keeps holds apart while clock mode does not.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aiolease import (
    Lease,
    LeaseItem,
    LeaseLostError,
    LeaseNotObtainedError,
    LeaseRequest,
    Locker,
    LockStore,
)
from aiolease._observe import Observations, Verdict
from aiolease._types import MAX_DURATION

from .history import Hold, check_history

SHORT = 1.5  # seconds
FIVE_MINUTES = 300.0
OFFSETS = (-FIVE_MINUTES, -120.0, 0.0, 120.0, FIVE_MINUTES)  # seconds, per worker


def request(name: str = "worker-a", duration: float = SHORT) -> LeaseRequest:
    return LeaseRequest(name, duration)


def offset_clock(seconds: float) -> Callable[[], int]:
    """A wall clock (epoch ns) running ``seconds`` ahead of this host's."""
    shift = int(seconds * 1e9)
    return lambda: time.time_ns() + shift


async def raw_row(client: Any, store: LockStore, lease_id: str) -> dict[str, Any]:
    response = await client.get_item(
        TableName=store.table_name, Key={"LeaseID": {"S": lease_id}}, ConsistentRead=True
    )
    return dict(response["Item"])


async def holder_of(client: Any, store: LockStore, lease_id: str) -> str | None:
    return (await raw_row(client, store, lease_id)).get("ProcessID", {}).get("S")


@pytest.fixture
def layout() -> dict[str, Any]:
    """Observe mode reads rows with consistent scans and never the index: one layout will do."""
    return {}


@pytest.fixture
async def skewed(client: Any, store: LockStore) -> AsyncIterator[Callable[[float], LockStore]]:
    """Stores on the shared client and table, each with its own wall-clock offset."""
    made: list[LockStore] = []

    def make(offset: float) -> LockStore:
        s = LockStore(client, store.table_name, clock=offset_clock(offset))
        made.append(s)
        return s

    yield make
    for s in made:
        await s.aclose()


@pytest.fixture(params=["clock", "observe"])
def mode(request: pytest.FixtureRequest) -> Any:
    """Both takeover modes, for the behaviour the contract asks of each."""
    return request.param


# -- the store: the stored duration and the conditioned acquisition -------------------------


async def test_acquire_and_renew_store_the_duration_with_their_until(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a")
    lease = await store.acquire("a", request(duration=2.5))
    row = await raw_row(client, store, "a")
    assert row["LeaseDuration"] == {"M": {"ms": {"N": "2500"}, "until": {"N": str(lease.until_ns)}}}
    renewed = await store.renew(lease)
    row = await raw_row(client, store, "a")
    assert row["LeaseDuration"]["M"]["until"] == {"N": str(renewed.until_ns)}
    item = await store.get_item("a")
    assert item is not None and item.duration == 2.5 and item.until_ns == renewed.until_ns
    assert "LeaseDuration" not in lease.attributes, "the duration is bookkeeping"


async def test_an_explicit_until_beyond_the_duration_stretches_the_stored_duration(
    store: LockStore,
) -> None:
    await store.add_item("a")
    await store.lease("a", request(duration=2), datetime.now(UTC) + timedelta(minutes=10))
    item = await store.get_item("a")
    assert item is not None and item.duration is not None
    assert 599 < item.duration <= 600, "observers must wait as long as the holder expects"


async def test_release_removes_the_duration(client: Any, store: LockStore) -> None:
    await store.add_item("a")
    lease = await store.acquire("a", request())
    assert await store.release(lease)
    assert "LeaseDuration" not in await raw_row(client, store, "a")


@pytest.mark.parametrize(
    ("ms", "until"),
    [
        ({"N": "0"}, None),
        ({"N": "-5"}, None),
        ({"N": str(int(MAX_DURATION * 1000) + 1)}, None),
        ({"S": "1500"}, None),
        ({"N": "1500"}, {"N": "12345"}),  # written with another LeaseUntil: a Go takeover
    ],
    ids=["zero", "negative", "beyond-max", "not-a-number", "stale"],
)
async def test_absurd_or_stale_durations_read_as_missing(
    client: Any, store: LockStore, ms: dict[str, str], until: dict[str, str] | None
) -> None:
    await store.add_item("a")
    lease = await store.acquire("a", request())
    await client.update_item(
        TableName=store.table_name,
        Key={"LeaseID": {"S": "a"}},
        UpdateExpression="SET #d = :d",
        ExpressionAttributeNames={"#d": "LeaseDuration"},
        ExpressionAttributeValues={
            ":d": {"M": {"ms": ms, "until": until or {"N": str(lease.until_ns)}}}
        },
    )
    item = await store.get_item("a")
    assert item is not None and item.lessee_id == "worker-a"
    assert item.duration is None, "an unusable duration must send waiters to the clock rule"


async def test_get_item_of_a_missing_row_is_none(store: LockStore) -> None:
    assert await store.get_item("ghost") is None


async def test_an_acquisition_conditioned_on_a_state_loses_to_a_renewal_in_between(
    store: LockStore,
) -> None:
    await store.add_item("a")
    held = await store.acquire("a", request("holder"))
    seen = await store.get_item("a")
    assert seen is not None
    await store.renew(held)  # lands between the waiter's read and its write
    with pytest.raises(LeaseNotObtainedError, match="holder"):
        await store.acquire("a", request(), expect=seen, max_clock_skew=None)
    now = await store.get_item("a")
    taken = await store.acquire("a", request(), expect=now, max_clock_skew=None)
    assert taken.fencing_token == held.fencing_token + 1


async def test_without_a_clock_rule_a_held_row_is_never_taken_as_expired(
    store: LockStore,
) -> None:
    await store.add_item("a")
    await store.acquire("a", request("holder"), datetime.now(UTC) - timedelta(minutes=1))
    with pytest.raises(LeaseNotObtainedError):
        await store.acquire("a", request(), max_clock_skew=None)
    assert (await store.acquire("a", request(), max_clock_skew=0)).lessee_id == "worker-a"


async def test_an_expectation_of_a_free_row_only_takes_it_free(store: LockStore) -> None:
    await store.add_item("a")
    free = await store.get_item("a")
    assert free is not None and free.lessee_id is None
    await store.acquire("a", request("holder"), datetime.now(UTC) - timedelta(minutes=1))
    with pytest.raises(LeaseNotObtainedError):  # taken meanwhile, even if "expired"
        await store.acquire("a", request(), expect=free, max_clock_skew=0)


# -- Observations, on their own -----------------------------------------------------------------


def item(
    lessee: str | None = "holder", until_ns: int = 10, duration: float | None = 2.0
) -> LeaseItem:
    return LeaseItem("a", lessee, until_ns, 1, duration=duration)


def test_a_state_is_ripe_only_once_seen_unchanged_for_its_duration() -> None:
    seen = Observations()
    assert seen.judge(item(), 100.0) is Verdict.WAIT
    assert seen.judge(item(), 101.9) is Verdict.WAIT
    assert seen.judge(item(), 102.0) is Verdict.RIPE
    assert seen.judge(item(until_ns=11), 102.1) is Verdict.WAIT, "a renewal restarts the watch"
    assert seen.judge(item(until_ns=11), 104.0) is Verdict.WAIT
    assert seen.judge(item(until_ns=11), 104.2) is Verdict.RIPE


def test_free_rows_and_rows_without_a_duration_are_not_watched() -> None:
    seen = Observations()
    seen.judge(item(), 0.0)
    assert seen.judge(item(lessee=None), 1.0) is Verdict.FREE
    assert len(seen) == 0
    assert seen.judge(item(duration=None), 2.0) is Verdict.CLOCK
    assert len(seen) == 0


def test_observations_are_bounded_and_pruned() -> None:
    seen = Observations(max_entries=3)
    for i in range(5):
        seen.judge(LeaseItem(f"r{i}", "h", 1, 1, duration=1.0), float(i))
    assert len(seen) == 3, "the least recently seen rows are dropped"
    assert seen.prune(seen_before=4.0) == 2
    assert len(seen) == 1


# -- the contract's behaviour, in both modes -----------------------------------------------------


async def test_obtain_lease_takes_a_free_item_at_once(store: LockStore, mode: str) -> None:
    await store.add_item("only")
    lease = await Locker(store, takeover=mode).obtain_lease(request())
    assert (lease.lease_id, lease.fencing_token) == ("only", 1)


async def test_obtain_lease_skips_held_items(store: LockStore, mode: str) -> None:
    for i in range(5):
        await store.add_item(f"item-{i}")
    for i in range(4):
        await store.acquire(f"item-{i}", request("other", 30))
    lease = await Locker(store, takeover=mode).obtain_lease(request())
    assert lease.lease_id == "item-4"


async def test_obtain_lease_raises_not_obtained_when_nothing_is_free(
    store: LockStore, mode: str
) -> None:
    await store.add_item("a")
    await store.acquire("a", request("other", 30))
    with pytest.raises(LeaseNotObtainedError, match=store.table_name):
        await Locker(store, takeover=mode).obtain_lease(request())


async def test_wait_until_lease_obtained_returns_once_released(store: LockStore, mode: str) -> None:
    await store.add_item("a")
    held = await store.acquire("a", request("other", 30))
    locker = Locker(store, takeover=mode)
    waiter = asyncio.create_task(locker.wait_until_lease_obtained(request(), 0.2))
    await asyncio.sleep(0.5)
    assert not waiter.done(), "nothing was free yet"
    assert await store.release(held)
    lease = await asyncio.wait_for(waiter, 5)
    assert (lease.lease_id, lease.lessee_id) == ("a", "worker-a")


async def test_heartbeat_keeps_a_lease_from_a_waiting_competitor(
    store: LockStore, mode: str
) -> None:
    await store.add_item("a")
    holder = Locker(store, takeover=mode)
    lease = await holder.obtain_lease(request())
    beat = asyncio.create_task(holder.heartbeat(lease, SHORT / 3))
    competitor = Locker(store, takeover=mode)
    try:
        with pytest.raises(TimeoutError):  # three lease durations of trying
            await asyncio.wait_for(
                competitor.wait_until_lease_obtained(request("competitor"), 0.2), 3 * SHORT
            )
        assert not beat.done()
    finally:
        beat.cancel()
        with pytest.raises(asyncio.CancelledError):
            await beat


async def test_lease_scope_obtains_heartbeats_and_releases(
    client: Any, store: LockStore, mode: str
) -> None:
    await store.add_item("a")
    async with Locker(store, takeover=mode).lease(request()) as lease:
        assert await holder_of(client, store, "a") == "worker-a"
        await asyncio.sleep(2 * SHORT)  # outlives the lease duration: the heartbeat renews
        assert await holder_of(client, store, "a") == "worker-a"
    assert lease.lease_id == "a"
    assert await holder_of(client, store, "a") is None, "released on exit"


async def test_lease_scope_on_a_named_item(store: LockStore, mode: str) -> None:
    for name in ("a", "b", "c"):
        await store.add_item(name)
    async with Locker(store, takeover=mode).lease(request(), "b") as lease:
        assert lease.lease_id == "b"


async def test_lease_scope_on_a_missing_named_item_fails_at_once(
    store: LockStore, mode: str
) -> None:
    with pytest.raises(LeaseNotObtainedError, match="ghost"):
        async with Locker(store, takeover=mode).lease(request(), "ghost", timeout=30):
            pytest.fail("entered a scope for an item that does not exist")


async def test_lost_lease_cancels_the_body_and_raises_lease_lost(
    client: Any, store: LockStore, mode: str
) -> None:
    await store.add_item("a")
    reached = False
    with pytest.raises(LeaseLostError, match="thief"):  # noqa: PT012
        async with Locker(store, takeover=mode).lease(request(), heartbeat_period=0.3):
            await store.force_release("a")
            await store.acquire("a", request("thief"))
            await asyncio.sleep(30)
            reached = True
    assert not reached, "the body went on after the lease was lost"
    assert await holder_of(client, store, "a") == "thief"


async def test_run_returns_the_work_result(store: LockStore, mode: str) -> None:
    await store.add_item("a")

    async def work(lease: Lease) -> str:
        return f"did {lease.lease_id}"

    assert await Locker(store, takeover=mode).run(request(), work) == "did a"


# -- observe mode: taking dead leases ---------------------------------------------------------


async def test_observations_persist_across_calls(store: LockStore) -> None:
    await store.add_item("a")
    duration = 1.0
    await store.acquire("a", request("dead", duration))  # never renewed, never released
    locker = Locker(store, takeover="observe")
    first_try = time.monotonic()
    with pytest.raises(LeaseNotObtainedError):
        await locker.obtain_lease(request())
    await asyncio.sleep(duration)
    with pytest.raises(LeaseNotObtainedError):  # a fresh locker starts watching only now
        await Locker(store, takeover="observe").obtain_lease(request("newcomer"))
    lease = await locker.obtain_lease(request())
    assert lease.lease_id == "a" and lease.fencing_token == 2
    assert time.monotonic() - first_try >= duration


async def test_a_named_dead_lease_is_taken_after_its_duration(store: LockStore) -> None:
    await store.add_item("a")
    duration = 1.0
    dead = await store.acquire("a", request("dead", duration))
    locker = Locker(store, takeover="observe")
    with pytest.raises(LeaseNotObtainedError):
        async with locker.lease(request(), "a", wait_period=0.1, timeout=0.1):
            pytest.fail("entered too early")
    async with locker.lease(request(), "a", wait_period=0.1, timeout=5) as lease:
        waited = asyncio.get_running_loop().time() - dead._sent_at
        assert lease.fencing_token == dead.fencing_token + 1
    assert waited >= duration


async def test_rows_without_a_duration_fall_back_to_the_clock_rule(
    client: Any, store: LockStore
) -> None:
    for name, until in (("expired", -60), ("live", 600)):  # seconds from now
        await client.put_item(  # as the Go package writes a held row: no duration, no token
            TableName=store.table_name,
            Item={
                "LeaseID": {"S": name},
                "ProcessID": {"S": "go-worker"},
                "LeaseUntil": {"N": str(time.time_ns() + int(until * 1e9))},
            },
        )
    locker = Locker(store, takeover="observe", max_clock_skew=1)
    lease = await locker.obtain_lease(request())
    assert lease.lease_id == "expired", "an expired Go row is taken at once"
    with pytest.raises(LeaseNotObtainedError):
        await locker.obtain_lease(request("other"))


# -- skewed clocks: why observe mode exists ------------------------------------------------------


async def test_a_fast_clock_takes_a_live_lease_in_clock_mode_but_not_in_observe_mode(
    skewed: Callable[[float], LockStore],
) -> None:
    holder_store, fast_store = skewed(0), skewed(FIVE_MINUTES)
    await holder_store.add_item("a")
    entered = asyncio.Event()
    done = asyncio.Event()

    async def hold() -> None:
        async with Locker(holder_store).lease(request("holder")):
            entered.set()
            await done.wait()

    holder = asyncio.create_task(hold())
    await entered.wait()
    try:
        observer = Locker(fast_store, takeover="observe")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                observer.wait_until_lease_obtained(request("fast"), 0.2), 2 * SHORT
            )
        # The same clock in clock mode sees the holder's LeaseUntil five minutes in the past.
        taken = await Locker(fast_store).obtain_lease(request("fast"))
        assert taken.lease_id == "a" and not holder.done(), "two holders at once"
    finally:
        done.set()
        await asyncio.gather(holder, return_exceptions=True)


async def exclusion_run(
    skewed: Callable[[float], LockStore], takeover: Any, seconds: float
) -> list[Hold]:
    """Five workers whose clocks are minutes apart share two items; some crash while holding."""
    setup = skewed(0)
    for name in ("x", "y"):
        await setup.add_item(name)
    holds: list[Hold] = []
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + seconds

    async def worker(name: str, offset: float) -> None:
        locker = Locker(skewed(offset), takeover=takeover, max_clock_skew=0.1)
        while loop.time() < stop_at:
            try:
                if random.random() < 0.3:  # crash: stop using the lease, never release it
                    lease = await asyncio.wait_for(
                        locker.wait_until_lease_obtained(request(name, 1.0), 0.1), 2
                    )
                    start = loop.time()
                    await asyncio.sleep(random.uniform(0.05, 0.5))  # within its local deadline
                    holds.append(
                        Hold(lease.lease_id, name, lease.fencing_token, start, loop.time())
                    )
                else:
                    async with locker.lease(
                        request(name, 1.0), wait_period=0.1, timeout=2
                    ) as lease:
                        start = loop.time()
                        try:
                            await asyncio.sleep(random.uniform(0.05, 1.5))
                        finally:
                            holds.append(
                                Hold(lease.lease_id, name, lease.fencing_token, start, loop.time())
                            )
            except (LeaseNotObtainedError, LeaseLostError, TimeoutError):
                pass
            await asyncio.sleep(random.uniform(0, 0.2))

    await asyncio.gather(*(worker(f"w{i}", off) for i, off in enumerate(OFFSETS)))
    return holds


async def test_observe_mode_keeps_holds_apart_with_clocks_minutes_apart(
    skewed: Callable[[float], LockStore],
) -> None:
    holds = await exclusion_run(skewed, "observe", 8)
    report = check_history(holds)
    print(f"observe mode, clock offsets {OFFSETS} s: {report}")
    assert report.holds > 8 and report.handovers > 2, report


async def test_clock_mode_overlaps_with_clocks_minutes_apart(
    skewed: Callable[[float], LockStore],
) -> None:
    holds = await exclusion_run(skewed, "clock", 6)
    with pytest.raises(AssertionError, match="while"):
        check_history(holds)


# -- takeover time after a crash -----------------------------------------------------------------


@pytest.mark.parametrize(("duration", "wait_period"), [(2.0, 0.25), (1.0, 1.0)])
async def test_takeover_after_a_crash_waits_one_duration_and_not_much_more(
    skewed: Callable[[float], LockStore], duration: float, wait_period: float
) -> None:
    rounds = 3
    holder_store, waiter_store = skewed(0), skewed(-FIVE_MINUTES)
    loop = asyncio.get_running_loop()
    figures = []
    for n in range(rounds):
        lease_id = f"item-{n}"
        await holder_store.add_item(lease_id)
        lease = await holder_store.acquire(lease_id, request("holder", duration))
        waiter = asyncio.create_task(
            Locker(waiter_store, takeover="observe").wait_until_lease_obtained(
                request("waiter", duration), wait_period
            )
        )
        for _ in range(3):  # heartbeats, then the holder dies without releasing
            await asyncio.sleep(duration / 3)
            lease = await holder_store.renew(lease)
        crashed_at = loop.time()
        taken = await asyncio.wait_for(waiter, 4 * duration)
        assert taken.lease_id == lease_id and taken.fencing_token == lease.fencing_token + 1
        since_write = taken._sent_at - lease._sent_at
        figures.append((since_write, taken._sent_at - crashed_at))
        # Out of the pool, so that the next round's waiter can only take the next crash.
        await holder_store.client.delete_item(
            TableName=holder_store.table_name, Key={"LeaseID": {"S": lease_id}}
        )
        assert since_write >= duration, f"taken {since_write:.3f} s after the last renewal"
        assert since_write <= 2 * duration + wait_period + 1, f"took {since_write:.3f} s"
    print(
        f"\ntakeover after a crash (duration {duration} s, wait_period {wait_period} s, "
        f"waiter clock {-FIVE_MINUTES:+.0f} s): "
        + "; ".join(f"{w:.3f} s after last renewal sent, {c:.3f} s after crash" for w, c in figures)
        + f"; target <= {1.2 * duration + wait_period:.2f} s"
    )
