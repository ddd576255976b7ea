"""Regression tests for the store findings of the independent review (issue 12)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from aiolease import (
    LeaseError,
    LeaseItem,
    LeaseNotObtainedError,
    LeaseRequest,
    LeaseStoreError,
    LeaseUnavailableError,
    Locker,
    LockStore,
)

from . import faults
from .faults import FaultyClient

A = LeaseRequest("worker-a", 2)
B = LeaseRequest("worker-b", 2)


async def raw_item(client: Any, store: LockStore, lease_id: str) -> dict[str, Any] | None:
    response = await client.get_item(
        TableName=store.table_name, Key={store.hash_key: {"S": lease_id}}, ConsistentRead=True
    )
    return response.get("Item")


async def stored_until(client: Any, store: LockStore, lease_id: str) -> int:
    row = await raw_item(client, store, lease_id)
    assert row is not None
    return int(row["LeaseUntil"]["N"])


@pytest.fixture
async def plain(client: Any, table_name: str) -> AsyncIterator[tuple[LockStore, FaultyClient]]:
    """A store of the plain layout on a fault-injecting client."""
    proxy = FaultyClient(client)
    store = LockStore(proxy, table_name)
    await store.create_table()
    yield store, proxy
    await store.aclose()


class Detached:
    """A fault: the caller sees a read timeout at once, the request lands when let go."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.task: asyncio.Task[Any] | None = None

    def __call__(self, call: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        async def late() -> Any:
            await self.go.wait()
            return await call()

        self.task = asyncio.ensure_future(late())

        async def run() -> Any:
            raise ReadTimeoutError(endpoint_url="injected")

        return run()

    async def land(self) -> BaseException | None:
        """Let the request land; what DynamoDB answered it (None, or its error)."""
        assert self.task is not None
        self.go.set()
        try:
            await self.task
        except Exception as exc:
            return exc
        return None


strip_item = faults.without_old_item


def drop_and_strip(call: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
    async def run() -> Any:
        await strip_item(call)
        raise ReadTimeoutError(endpoint_url="injected")

    return run()


# -- 1: a late renewal never moves the expiry backwards -------------------------------------


async def test_a_late_renewal_request_never_moves_the_stored_expiry_backwards(
    client: Any, table_name: str
) -> None:
    proxy = FaultyClient(client)
    store = LockStore(proxy, table_name, max_attempts=1)
    await store.create_table()
    await store.add_item("a")
    lease = await store.acquire("a", A)
    late = Detached()
    proxy.inject("update_item", late)
    with pytest.raises(LeaseUnavailableError):
        await store.renew(lease)  # call 1 timed out at the client, still in flight
    renewed = await store.renew(lease)  # call 2, freshly stamped, lands
    u2 = await stored_until(client, store, "a")
    assert u2 == renewed.until_ns
    answer = await late.land()  # call 1 reaches the table after call 2
    assert await stored_until(client, store, "a") == u2, "the late renewal moved LeaseUntil back"
    assert answer is not None, "the late request must have been refused"


async def test_a_holder_whose_clock_stepped_back_still_renews_forward(
    client: Any, table_name: str
) -> None:
    store = LockStore(client, table_name)
    await store.create_table()
    await store.add_item("a")
    lease = await store.acquire("a", LeaseRequest("worker-a", 5))
    # The same holder after its wall clock stepped back 10 s (a new store: no local floor).
    stepped = LockStore(client, table_name, clock=lambda: time.time_ns() - 10 * 10**9)
    loop = asyncio.get_running_loop()
    before = loop.time()
    renewed = await stepped.renew(lease)
    after = await stored_until(client, store, "a")
    assert after >= lease.until_ns, "a renewal moved LeaseUntil backwards"
    assert renewed.until_ns == after and renewed.fencing_token == lease.fencing_token
    # The local deadline still counts from the send, never from the stored expiry.
    assert before <= renewed._sent_at <= loop.time()


async def test_a_reentrant_lease_never_moves_the_expiry_backwards(
    client: Any, table_name: str
) -> None:
    store = LockStore(client, table_name)
    await store.create_table()
    await store.add_item("a")
    far = datetime.now(UTC) + timedelta(seconds=30)
    first = await store.lease("a", A, far)
    again = await store.lease("a", A)  # now + 2 s is sooner than the stored expiry
    assert again.fencing_token == first.fencing_token
    assert await stored_until(client, store, "a") >= first.until_ns


# -- 7: expiries are never stretched by other rows --------------------------------------------


async def test_a_long_lease_on_one_row_does_not_stretch_a_short_lease_on_another(
    client: Any, table_name: str
) -> None:
    store = LockStore(client, table_name)
    await store.create_table()
    for lease_id in "abc":
        await store.add_item(lease_id)
    await store.acquire("a", LeaseRequest("w", 60))
    start = time.time_ns()
    short = await store.acquire("b", LeaseRequest("w", 2))
    assert short.until_ns - start < 3 * 10**9, "B's expiry was stretched to A's 60 s lease"
    item = await store.get_item("b")
    assert item is not None and item.duration == pytest.approx(2, abs=0.01)
    soon = datetime.now(UTC) + timedelta(seconds=1)
    explicit = await store.acquire("c", LeaseRequest("w", 2), soon)
    assert abs(explicit.until_ns - int(soon.timestamp() * 1e9)) < 10**6, "explicit until ignored"


# -- 8: malformed rows never stop obtaining ----------------------------------------------------


MALFORMED = {
    "bad-string": {"LeaseUntil": {"N": "0"}, "LeaseToken": {"S": "seven"}},
    "bad-fraction": {"LeaseUntil": {"N": "0"}, "LeaseToken": {"N": "1.5"}},
}


async def _put_malformed(client: Any, store: LockStore) -> None:
    for lease_id, row in MALFORMED.items():
        bucket = {store.bucket_attribute: {"N": str(store.bucket_of(lease_id))}}
        await client.put_item(
            TableName=store.table_name,
            Item={store.hash_key: {"S": lease_id}, **row, **(bucket if store.indexed else {})},
        )


async def test_malformed_rows_are_skipped_when_obtaining_from_the_pool(
    client: Any, store: LockStore, caplog: pytest.LogCaptureFixture
) -> None:
    await _put_malformed(client, store)
    await store.add_item("good")
    locker = Locker(store)
    caplog.set_level(logging.WARNING, logger="aiolease")
    for _ in range(6):  # candidates come in random order
        lease = await locker.obtain_lease(A)
        assert lease.lease_id == "good"
        assert await store.release(lease)
    for lease_id, row in MALFORMED.items():
        after = await raw_item(client, store, lease_id)
        assert after is not None and after["LeaseToken"] == row["LeaseToken"], lease_id
        assert "ProcessID" not in after
        named = [r for r in caplog.records if lease_id in r.getMessage()]
        assert len(named) == 1, f"{lease_id} logged {len(named)} times, not once"


async def test_wait_until_lease_obtained_and_the_scope_skip_malformed_rows(
    client: Any, store: LockStore
) -> None:
    await _put_malformed(client, store)
    await store.add_item("good")
    locker = Locker(store)
    lease = await asyncio.wait_for(locker.wait_until_lease_obtained(A, 0.1), 5)
    assert lease.lease_id == "good"
    await store.release(lease)
    async with locker.lease(A, timeout=5) as held:
        assert held.lease_id == "good"


@pytest.mark.parametrize("lease_id", sorted(MALFORMED))
async def test_a_named_acquisition_of_a_malformed_row_names_the_item(
    client: Any, table_name: str, lease_id: str
) -> None:
    store = LockStore(client, table_name)
    await store.create_table()
    await _put_malformed(client, store)
    for _ in range(3):
        with pytest.raises(LeaseStoreError) as info:
            await store.acquire(lease_id, A)
        assert repr(lease_id) in str(info.value) and info.value.lease_id == lease_id
    with pytest.raises(LeaseStoreError, match=repr(lease_id)):
        await store.lease(lease_id, A)
    row = await raw_item(client, store, lease_id)
    assert row is not None and "ProcessID" not in row
    if lease_id == "bad-fraction":
        # Detected only once a write landed: undone, and never bumped again.
        assert float(row["LeaseToken"]["N"]) <= 2.5, "the token is bumped on every attempt"
    else:
        assert row["LeaseToken"] == {"S": "seven"}


async def test_the_pool_acquisition_pins_the_token_so_fractions_are_never_written(
    client: Any, table_name: str
) -> None:
    store = LockStore(client, table_name)
    await store.create_table()
    await _put_malformed(client, store)
    read = LeaseItem("bad-fraction", None, 0, 1)  # as read by an older scan: token 1
    with pytest.raises(LeaseNotObtainedError):
        await store.acquire("bad-fraction", A, expect=read)
    row = await raw_item(client, store, "bad-fraction")
    assert row is not None and row["LeaseToken"] == {"N": "1.5"}


# -- 9: a wrong hash_key is an error, never an empty table -----------------------------------


async def test_a_wrong_hash_key_names_the_configured_and_the_real_key(
    client: Any, table_name: str
) -> None:
    await LockStore(client, table_name, "OtherKey").create_table()
    for i in range(3):
        await client.put_item(
            TableName=table_name, Item={"OtherKey": {"S": f"x{i}"}, "LeaseUntil": {"N": "0"}}
        )
    wrong = LockStore(client, table_name, "LeaseID")
    for call in (wrong.list_lease_ids, lambda: Locker(wrong).obtain_lease(A)):
        with pytest.raises(LeaseStoreError) as info:
            await call()
        message = str(info.value)
        assert table_name in message and "LeaseID" in message and "OtherKey" in message


# -- 10: servers that return no item on a refused write -------------------------------------


async def test_same_lessee_lease_works_when_refusals_carry_no_item(
    plain: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = plain
    await store.add_item("a")
    first = await store.lease("a", A)
    proxy.always("update_item", strip_item)
    again = await store.lease("a", A)
    assert again.fencing_token == first.fencing_token


async def test_a_named_wait_on_a_held_row_keeps_waiting_when_refusals_carry_no_item(
    plain: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = plain
    await store.add_item("a")
    await store.acquire("a", LeaseRequest("holder", 30))
    proxy.always("update_item", strip_item)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(LeaseNotObtainedError, match="within") as info:
        async with Locker(store).lease(A, "a", wait_period=0.1, timeout=1.0):
            pass
    assert info.value.item_exists and loop.time() - started >= 0.9, "gave up at once"


async def test_a_lost_renewal_answer_is_reconciled_when_refusals_carry_no_item(
    plain: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = plain
    await store.add_item("a")
    lease = await store.acquire("a", A)
    proxy.inject("update_item", drop_and_strip, strip_item)
    renewed = await store.renew(lease)
    assert renewed.fencing_token == lease.fencing_token
    proxy.inject("update_item", drop_and_strip, strip_item)
    assert await store.release(renewed) is True


async def test_a_lost_acquisition_answer_is_ours_when_refusals_carry_no_item(
    plain: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = plain
    await store.add_item("a", {"v": 1})
    proxy.inject("update_item", drop_and_strip, strip_item)
    lease = await store.acquire("a", A)
    assert lease.fencing_token == 1 and lease.attributes == {"v": 1}


# -- 11: lost answers are reported as what happened -------------------------------------------


async def test_add_item_whose_answer_was_lost_reports_true(
    plain: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = plain
    proxy.inject("update_item", faults.drop_response)
    assert await store.add_item("a", {"v": 1}) is True
    assert await store.add_item("a", {"v": 1}) is False


async def test_force_release_whose_answer_was_lost_returns_the_state_before(
    plain: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = plain
    await store.add_item("a")
    lease = await store.acquire("a", A)
    proxy.inject("update_item", faults.drop_response)
    before = await store.force_release("a")
    assert before is not None and before.lessee_id == "worker-a"
    assert before.fencing_token == lease.fencing_token


def _retrying_client(client: Any, total: int) -> Any:
    class Config:
        def __init__(self) -> None:
            self.retries = {"total_max_attempts": total, "mode": "standard"}
            self.max_pool_connections = 10

    class Meta:
        config = Config()

    proxy = FaultyClient(client)
    proxy.__dict__["meta"] = Meta()
    return proxy


async def test_a_client_that_retries_by_itself_is_warned_about(
    client: Any, table_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiolease")
    LockStore(_retrying_client(client, 1), table_name)
    assert not [r for r in caplog.records if "retries" in r.getMessage()]
    LockStore(_retrying_client(client, 3), table_name)
    assert [r for r in caplog.records if "retries" in r.getMessage()]


async def test_a_release_retried_inside_the_client_is_still_true(
    client: Any, table_name: str
) -> None:
    proxy = _retrying_client(client, 3)
    store = LockStore(proxy, table_name)
    await store.create_table()
    await store.add_item("a")
    lease = await store.acquire("a", A)

    def botocore_retry(call: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        async def run() -> Any:
            await call()  # lands, its answer lost; botocore retries by itself
            try:
                return await call()
            except ClientError as exc:
                exc.response["ResponseMetadata"]["RetryAttempts"] = 1  # as botocore says
                raise

        return run()

    proxy.inject("update_item", botocore_retry)
    assert await store.release(lease) is True


# -- 12: a token-0 lease can be released ------------------------------------------------------


async def test_a_go_written_row_reentered_through_lease_can_be_released(
    client: Any, table_name: str
) -> None:
    store = LockStore(client, table_name)
    await store.create_table()
    until = time.time_ns() + 30 * 10**9
    await client.put_item(
        TableName=table_name,
        Item={
            "LeaseID": {"S": "g"},
            "ProcessID": {"S": "worker-a"},
            "LeaseUntil": {"N": str(until)},
        },
    )
    lease = await store.lease("g", A)
    assert lease.fencing_token == 0
    renewed = await store.renew(lease)
    assert await store.release(renewed) is True
    row = await raw_item(client, store, "g")
    assert row is not None and "ProcessID" not in row


# -- 13: no raw exception escapes -----------------------------------------------------------------


async def test_a_missing_profile_is_a_store_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "aiolease-no-such-profile")
    with pytest.raises(LeaseStoreError, match="aiolease-no-such-profile"):
        async with LockStore.connect("leases", endpoint_url="http://127.0.0.1:9"):
            pass


def _never_active(call: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
    async def run() -> Any:
        response = await call()
        response["Table"]["TableStatus"] = "CREATING"
        return response

    return run()


async def test_a_table_that_never_becomes_active_is_unavailable_not_a_timeout(
    plain: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = plain
    proxy.always("describe_table", _never_active)
    with pytest.raises(LeaseUnavailableError, match=r"not active within 0\.3"):
        await store.create_table(timeout=0.3)


async def test_an_index_that_never_becomes_active_is_unavailable_not_a_timeout(
    client: Any, table_name: str
) -> None:
    proxy = FaultyClient(client)
    store = LockStore(proxy, table_name, index_name="LeaseBuckets", buckets=2)
    await store.create_table()
    proxy.always("describe_table", _never_active)
    with pytest.raises(LeaseUnavailableError, match="LeaseBuckets"):
        await store.add_index(timeout=0.3)


async def test_backfill_buckets_raises_a_lease_error_not_an_exception_group(
    client: Any, table_name: str
) -> None:
    proxy = FaultyClient(client)
    plain_store = LockStore(client, table_name)
    await plain_store.create_table()
    for i in range(3):
        await plain_store.add_item(f"x{i}")
    store = LockStore(proxy, table_name, index_name="LeaseBuckets", buckets=2)
    proxy.always("update_item", lambda call: _raise(faults.client_error("AccessDeniedException")))
    with pytest.raises(LeaseStoreError, match="denied"):
        await store.backfill_buckets()


def _raise(exc: BaseException) -> Any:
    async def run() -> Any:
        raise exc

    return run()


def _empty_answer(call: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
    async def run() -> Any:
        await call()
        return {"ResponseMetadata": {"HTTPStatusCode": 200}}

    return run()


@pytest.mark.parametrize("operation", ["acquire", "lease", "renew"])
async def test_an_answer_without_attributes_is_a_lease_error_not_a_key_error(
    plain: tuple[LockStore, FaultyClient], operation: str
) -> None:
    store, proxy = plain
    await store.add_item("a")
    lease = await store.acquire("a", A) if operation == "renew" else None
    proxy.always("update_item", _empty_answer)
    try:
        if operation == "renew":
            assert lease is not None
            result = await store._renew(lease, None, return_attributes=True)
        else:
            result = await getattr(store, operation)("a", A)
    except LeaseError:
        return
    except KeyError as exc:  # pragma: no cover - the bug
        pytest.fail(f"raw KeyError {exc!r}")
    assert result.lessee_id == "worker-a"  # reconciled from the row


async def test_describe_table_without_a_table_is_a_store_error(
    plain: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = plain
    proxy.always("describe_table", _empty_answer)
    with pytest.raises(LeaseStoreError, match=store.table_name):
        await store.describe_table()


# -- 14: smaller holes --------------------------------------------------------------------------


async def test_a_late_duplicate_of_a_timed_out_acquisition_cannot_retake_the_row(
    client: Any, table_name: str
) -> None:
    proxy = FaultyClient(client)
    store = LockStore(proxy, table_name, max_attempts=1)
    await store.create_table()
    await store.add_item("a")
    free = await store.get_item("a")
    assert free is not None
    late = Detached()
    proxy.inject("update_item", late)
    with pytest.raises(LeaseUnavailableError):
        await store.acquire("a", A, expect=free)
    # Another worker takes and releases the row meanwhile.
    other = LockStore(client, table_name)
    await other.release(await other.acquire("a", B))
    await late.land()
    row = await raw_item(client, store, "a")
    assert row is not None and "ProcessID" not in row, "a late duplicate re-took the row"


@pytest.mark.parametrize("duration", [0.0001, timedelta(microseconds=10)])
def test_a_lease_shorter_than_the_minimum_is_refused(duration: Any) -> None:
    with pytest.raises(ValueError, match="duration"):
        LeaseRequest("w", duration)


async def test_force_release_with_expect_refuses_a_row_that_changed(
    client: Any, table_name: str
) -> None:
    store = LockStore(client, table_name)
    await store.create_table()
    await store.add_item("a")
    first = await store.acquire("a", LeaseRequest("old", 1))
    shown = await store.get_item("a")
    assert shown is not None
    await store.release(first)
    second = await store.acquire("a", LeaseRequest("new", 30))
    with pytest.raises(LeaseNotObtainedError, match="changed"):
        await store.force_release("a", expect=shown)
    item = await store.get_item("a")
    assert item is not None and item.lessee_id == "new"
    assert item.fencing_token == second.fencing_token
    before = await store.force_release("a", expect=item)
    assert before is not None and before.lessee_id == "new"
    assert (await store.get_item("a")).lessee_id is None  # type: ignore[union-attr]


# -- 6: a cancelled acquisition is undone before the call returns ------------------------------


async def test_a_cancelled_acquisition_is_undone_by_the_time_the_call_returns(
    client: Any, plain: tuple[LockStore, FaultyClient]
) -> None:
    store, proxy = plain
    await store.add_item("a")
    landed = asyncio.Event()
    # The undo takes 0.3 s: a background undo would still be under way when the call returns.
    proxy.inject("update_item", faults.land_then_hang(landed), faults.delay(0.3))
    task = asyncio.create_task(store.acquire("a", A))
    await landed.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    row = await raw_item(client, store, "a")
    assert row is not None and "ProcessID" not in row, "the undo was left to the background"


async def test_a_second_cancellation_does_not_abandon_the_undo(
    client: Any, plain: tuple[LockStore, FaultyClient]
) -> None:
    store, proxy = plain
    await store.add_item("a")
    landed = asyncio.Event()
    proxy.inject("update_item", faults.land_then_hang(landed), faults.delay(0.3))
    task = asyncio.create_task(store.acquire("a", A))
    await landed.wait()
    task.cancel()
    await asyncio.sleep(0.05)  # the undo (delayed 0.3 s) is under way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    row = await raw_item(client, store, "a")
    assert row is not None and "ProcessID" not in row


async def test_an_acquisition_timed_out_by_the_store_is_undone_before_it_raises(
    client: Any, table_name: str
) -> None:
    proxy = FaultyClient(client)
    store = LockStore(proxy, table_name, max_attempts=1)
    await store.create_table()
    await store.add_item("a")
    proxy.inject("update_item", faults.drop_response)
    with pytest.raises(LeaseUnavailableError):
        await store.acquire("a", A)
    row = await raw_item(client, store, "a")
    assert row is not None and "ProcessID" not in row


async def test_a_refused_long_acquisition_does_not_stretch_a_later_short_one(
    client: Any, table_name: str
) -> None:
    store = LockStore(client, table_name)
    await store.create_table()
    await store.add_item("a")
    held = await LockStore(client, table_name).acquire("a", B)
    with pytest.raises(LeaseNotObtainedError):
        await store.acquire("a", LeaseRequest("w", 60))
    await LockStore(client, table_name).release(held)
    start = time.time_ns()
    short = await store.acquire("a", LeaseRequest("w", 2))
    assert short.until_ns - start < 3 * 10**9, "a refused 60 s request stretched a 2 s lease"


async def test_an_acquisition_cancelled_while_its_refusal_is_read_back_is_undone(
    client: Any, plain: tuple[LockStore, FaultyClient]
) -> None:
    store, proxy = plain
    await store.add_item("a")
    # The first attempt lands, its answer is lost; the retry is refused without an item, so
    # the store reads the row; the caller is cancelled during that read.
    proxy.inject("update_item", drop_and_strip, strip_item)
    reading = asyncio.Event()
    proxy.inject("get_item", faults.land_then_hang(reading))
    task = asyncio.create_task(store.acquire("a", A))
    await reading.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    row = await raw_item(client, store, "a")
    assert row is not None and "ProcessID" not in row, "a landed acquisition was left held"


# -- second review: refusals, floors and undos ---------------------------------------------------


async def test_a_refused_acquire_of_a_row_held_by_the_same_lessee_is_not_ours(
    client: Any, table_name: str
) -> None:
    # Two tasks sharing a lessee, one store, the same explicit until: only the first holds.
    store = LockStore(client, table_name)
    await store.create_table()
    await store.add_item("r")
    request = LeaseRequest("w", 30)
    until = datetime.now(UTC) + timedelta(seconds=20)
    first = await store.acquire("r", request, until)
    for _ in range(2):
        with pytest.raises(LeaseNotObtainedError):
            await store.acquire("r", request, until)
    # Another store of the same lessee (a second locker): its unambiguous refusal either.
    with pytest.raises(LeaseNotObtainedError):
        await LockStore(client, table_name).acquire("r", request, until)
    item = await store.get_item("r")
    assert item is not None and item.fencing_token == first.fencing_token


async def test_a_pool_acquisition_on_a_coarse_clock_has_one_holder(
    client: Any, table_name: str
) -> None:
    # A clock that does not move between the attempts (Windows' 15.6 ms ticks, at worst).
    frozen = time.time_ns()
    store = LockStore(client, table_name, clock=lambda: frozen)
    await store.create_table()
    await store.add_item("r")
    free = await store.get_item("r")
    assert free is not None
    request = LeaseRequest("w", 30)
    await store.acquire("r", request, expect=free)
    for _ in range(2):
        with pytest.raises(LeaseNotObtainedError):
            await store.acquire("r", request, expect=free)


async def test_an_undo_never_frees_a_live_lease_of_the_same_lessee(
    client: Any, plain: tuple[LockStore, FaultyClient]
) -> None:
    store, proxy = plain
    await store.add_item("r")
    request = LeaseRequest("w", 30)
    until = datetime.now(UTC) + timedelta(seconds=20)
    held = await store.acquire("r", request, until)
    with pytest.raises(LeaseNotObtainedError):
        await store.acquire("r", LeaseRequest("other", 30))  # any refusal of the row
    sent = asyncio.Event()

    def hang_sent(call: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        sent.set()
        return faults.hang(call)

    proxy.inject("update_item", hang_sent)  # a second acquisition, never answered
    task = asyncio.create_task(store.acquire("r", request, until))
    await sent.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    row = await raw_item(client, store, "r")
    assert row is not None and row.get("ProcessID") == {"S": "w"}, "the undo freed a live lease"
    assert int(row["LeaseToken"]["N"]) == held.fencing_token
    with pytest.raises(LeaseNotObtainedError):
        await store.acquire("r", LeaseRequest("other", 30))


# -- second review: token 0 (and malformed tokens) on held and free rows -------------------------


async def _set_row(client: Any, store: LockStore, lease_id: str, **values: dict[str, str]) -> None:
    await client.update_item(
        TableName=store.table_name,
        Key={store.hash_key: {"S": lease_id}},
        UpdateExpression="SET " + ", ".join(f"#{n} = :{n}" for n in values),
        ExpressionAttributeNames={f"#{n}": n for n in values},
        ExpressionAttributeValues={f":{n}": v for n, v in values.items()},
    )


@pytest.mark.parametrize("held", [False, True], ids=["free", "expired"])
async def test_a_row_with_token_zero_is_obtained_from_the_pool(
    client: Any, store: LockStore, held: bool
) -> None:
    await store.add_item("z")
    await _set_row(client, store, "z", LeaseToken={"N": "0"})
    if held:
        past = str(time.time_ns() - 10 * 10**9)
        await _set_row(client, store, "z", ProcessID={"S": "go"}, LeaseUntil={"N": past})
    lease = await Locker(store).obtain_lease(A)
    assert lease.lease_id == "z" and lease.fencing_token == 1


@pytest.mark.parametrize("token", ["0", "-1"])
async def test_force_release_frees_a_held_row_with_token_zero_or_negative(
    client: Any, table_name: str, token: str
) -> None:
    store = LockStore(client, table_name)
    await store.create_table()
    future = {"N": str(time.time_ns() + 30 * 10**9)}
    for lease_id in ("read", "shown"):
        await store.add_item(lease_id)
        await _set_row(
            client,
            store,
            lease_id,
            ProcessID={"S": "go"},
            LeaseUntil=future,
            LeaseToken={"N": token},
        )
    before = await store.force_release("read")
    assert before is not None and before.lessee_id == "go"
    shown = await store.get_item("shown")
    assert shown is not None
    assert await store.force_release("shown", expect=shown) == shown
    for lease_id in ("read", "shown"):
        row = await raw_item(client, store, lease_id)
        assert row is not None and "ProcessID" not in row
        assert row["LeaseToken"] == {"N": token}


async def test_a_token_zero_lease_reentered_through_lease_is_renewed_and_released(
    client: Any, table_name: str
) -> None:
    store = LockStore(client, table_name)
    await store.create_table()
    await store.add_item("z")
    future = {"N": str(time.time_ns() + 30 * 10**9)}
    await _set_row(
        client, store, "z", ProcessID={"S": "worker-a"}, LeaseUntil=future, LeaseToken={"N": "0"}
    )
    lease = await store.lease("z", A)
    assert lease.fencing_token == 0
    renewed = await store.renew(lease)
    assert await store.release(renewed) is True


@pytest.mark.parametrize("token", [{"S": "seven"}, {"N": "1.5"}])
async def test_force_release_of_a_held_malformed_row_names_the_malformed_token(
    client: Any, table_name: str, token: dict[str, str]
) -> None:
    store = LockStore(client, table_name)
    await store.create_table()
    await store.add_item("m")
    future = {"N": str(time.time_ns() + 30 * 10**9)}
    await _set_row(client, store, "m", ProcessID={"S": "go"}, LeaseUntil=future, LeaseToken=token)
    with pytest.raises(LeaseStoreError, match="malformed"):
        await store.force_release("m")
    shown = await store.get_item("m")
    with pytest.raises(LeaseStoreError, match="malformed"):
        await store.force_release("m", expect=shown)


# -- second review: a possibly-landed acquisition ending in a store error is undone --------------


def _denied(operation: str) -> faults.Fault:
    return lambda call: _raise(faults.client_error("AccessDeniedException", 400, operation))


@pytest.mark.parametrize("where", ["retry", "read-back"])
async def test_a_landed_acquisition_ending_in_a_store_error_is_undone(
    client: Any, plain: tuple[LockStore, FaultyClient], where: str
) -> None:
    store, proxy = plain
    await store.add_item("a")
    if where == "retry":
        # The first attempt lands, its answer is lost; the retry is denied.
        proxy.inject("update_item", faults.drop_response, _denied("UpdateItem"))
    else:
        # The retry is refused without the row; reading it back is denied.
        proxy.inject("update_item", drop_and_strip, strip_item)
        proxy.inject("get_item", _denied("GetItem"))
    with pytest.raises(LeaseStoreError):
        await store.acquire("a", A)
    row = await raw_item(client, store, "a")
    assert row is not None and "ProcessID" not in row, "a landed acquisition was left held"


# -- second review: nits -------------------------------------------------------------------------


async def test_an_undo_that_times_out_says_so(
    client: Any,
    plain: tuple[LockStore, FaultyClient],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aiolease._acquire as store_module

    monkeypatch.setattr(store_module, "CLEANUP_TIMEOUT", 0.2)
    caplog.set_level(logging.WARNING, logger="aiolease")
    store, proxy = plain
    await store.add_item("a")
    landed = asyncio.Event()
    proxy.inject("update_item", faults.land_then_hang(landed), faults.hang)  # the undo hangs
    task = asyncio.create_task(store.acquire("a", A))
    await landed.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.aclose()  # waits for the undo, if it outlived the call
    warnings = [r.getMessage() for r in caplog.records if "could not undo" in r.getMessage()]
    assert warnings and "timed out after 0.2 s" in warnings[0], warnings


async def test_add_item_whose_row_was_leased_before_the_read_back_reports_true(
    client: Any, faulty: tuple[LockStore, FaultyClient]
) -> None:
    store, proxy = faulty
    other = LockStore(client, store.table_name)  # acquiring needs no layout options

    def land_then_leased(call: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        async def run() -> Any:
            await call()
            await other.acquire("a", B)  # a pool worker takes the new row at once
            raise ReadTimeoutError(endpoint_url="injected")

        return run()

    proxy.inject("update_item", land_then_leased)
    assert await store.add_item("a", {"v": 1}) is True
