"""Session defects found in review (branch review-a), each with the behaviour the protocol
(docs/protocol.md "Sessions", CONTRACT.md "Session leases") asks for.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aiolease import LeaseLostError, LeaseNotObtainedError, LeaseRequest, Locker, LockStore
from aiolease._takeover import ClockTakeover

from .faults import FaultyClient

A = LeaseRequest("worker-a", 2)
B = LeaseRequest("worker-b", 2)
MAX = str(2**63 - 1)
SKEW = 1.0


async def raw(client: Any, store: LockStore, key: str) -> dict[str, Any]:
    response = await client.get_item(
        TableName=store.table_name, Key={store.hash_key: {"S": key}}, ConsistentRead=True
    )
    item: dict[str, Any] = response.get("Item", {})
    return item


@pytest.mark.parametrize("mode", ["clock", "observe"])
async def test_a_free_item_is_found_past_64_live_session_items(store: LockStore, mode: str) -> None:
    # 64 items held under one live session fill the candidate limit (ENOUGH_CANDIDATES)
    # of the scan layout's find_available / the observe scan before a free item is reached:
    # obtain_lease finds nothing although an item is free.
    if store.indexed:
        pytest.skip("the indexed layout queries free rows first")
    long = LeaseRequest("worker-a", 60)  # never expires during the test, however slow
    session = await store.start_session(long)
    for i in range(64):
        await store.add_item(f"held-{i:02}")
        await store.acquire(f"held-{i:02}", long, session=session)
    await store.add_item("zz-free")
    lease = await Locker(store, takeover=mode).obtain_lease(B)
    assert lease.lease_id == "zz-free"


async def test_a_sessions_holder_takes_back_a_late_duplicate_of_its_cancelled_acquire(
    faulty: tuple[LockStore, FaultyClient],
) -> None:
    # A cancelled acquisition under a session whose write lands after its undo: the row is
    # held (LeaseUntil MAX, the session's key) by nobody. Without a session it would expire
    # after one duration; here it lives as long as the session is renewed, and not even the
    # session's own holder can take it back (its session is LIVE to the takeover rule).
    store, proxy = faulty
    await store.add_item("a")
    session = await store.start_session(A)
    sent, go, landed = asyncio.Event(), asyncio.Event(), asyncio.Event()
    background: list[asyncio.Task[Any]] = []

    def late(call: Any) -> Any:
        async def apply_later() -> None:
            await go.wait()
            await call()
            landed.set()

        async def run() -> Any:
            background.append(asyncio.create_task(apply_later()))
            sent.set()
            await asyncio.Event().wait()

        return run()

    proxy.inject("update_item", late)
    first = asyncio.create_task(store.acquire("a", A, session=session))
    await sent.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first  # its undo was refused: the row was still free
    go.set()
    await landed.wait()  # the late duplicate lands
    session = await store.renew_session(session)  # the holder lives on
    try:
        lease = await ClockTakeover(SKEW).obtain_named(store, A, "a", session=session)
    except LeaseNotObtainedError as refused:
        why = str(refused)
        item = await store.get_item("a")
        assert item is not None and item.lessee_id is None, (
            f"the orphaned item is stuck for the session's life: {why}"
        )
    else:
        assert lease.fencing_token == 2


@pytest.mark.parametrize("call", ["renew", "lease"])
async def test_item_calls_on_a_session_lease_are_refused_and_leave_its_row(
    client: Any, store: LockStore, call: str
) -> None:
    # store.renew(session) (or locker.heartbeat(session, ...)) and the Go-style
    # store.lease(session_key, same lessee) treat the session row as an item: refused by
    # "#u < :u" against MAX, then re-stamped to stored + 1 = 2**63 (past Go's int64), with an
    # item-style LeaseDuration. They should be refused (ValueError / not obtained).
    session = await store.start_session(A)
    try:
        if call == "renew":
            await store.renew(session)
        else:
            await store.lease(session.lease_id, A)
    except (ValueError, Exception):
        pass
    row = await raw(client, store, session.lease_id)
    assert row["LeaseUntil"] == {"N": MAX}, row["LeaseUntil"]


@pytest.mark.parametrize("call", ["release", "force_release"])
async def test_releasing_a_session_row_as_an_item_is_refused_and_leaves_it_held(
    client: Any, store: LockStore, call: str
) -> None:
    # store.release(session) or store.force_release(session_key) (CLI release --force) frees
    # the session row like an item: ProcessID removed, LeaseUntil 0. Go workers then lease
    # the session row as a work item, and aiolease takers judge the session DEAD at once
    # (no lessee) and take its items while the holder still works until its next renewal.
    await store.add_item("a")
    session = await store.start_session(A)
    await store.acquire("a", A, session=session)
    try:
        if call == "release":
            await store.release(session)
        else:
            await store.force_release(session.lease_id)
    except (ValueError, Exception):
        pass
    row = await raw(client, store, session.lease_id)
    assert row.get("ProcessID") == {"S": "worker-a"} and row["LeaseUntil"] == {"N": MAX}, row


async def test_a_late_undo_of_a_cancelled_session_acquire_leaves_the_next_holder(
    faulty: tuple[LockStore, FaultyClient], monkeypatch: pytest.MonkeyPatch, client: Any
) -> None:
    # Under a session every acquisition writes LeaseUntil MAX, and without expect the undo
    # is pinned to (lessee, MAX, session key) only: nothing unique to this acquisition. The
    # claim that should keep a second acquisition out is dropped when the cancelled call
    # returns, while its undo may still land (it reached DynamoDB, its answer timed out, or
    # it went on in the background). It then frees the NEXT acquisition's item under its
    # holder's feet: a third worker takes it while the holder works (no item writes).
    import aiolease._acquire

    monkeypatch.setattr(aiolease._acquire, "CLEANUP_TIMEOUT", 0.3)
    store, proxy = faulty
    await store.add_item("a")
    session = await store.start_session(A)
    sent, go, undone = asyncio.Event(), asyncio.Event(), asyncio.Event()
    background: list[asyncio.Task[Any]] = []

    def lost(call: Any) -> Any:  # the acquisition: sent, never applied, never answered
        async def run() -> Any:
            sent.set()
            await asyncio.Event().wait()

        return run()

    def late_undo(call: Any) -> Any:  # the undo: applied by DynamoDB later, unanswered
        async def apply_later() -> None:
            await go.wait()
            try:
                await call()  # refused once the undo is pinned to its own acquisition
            except Exception:
                pass
            finally:
                undone.set()

        async def run() -> Any:
            background.append(asyncio.create_task(apply_later()))
            await asyncio.Event().wait()

        return run()

    proxy.inject("update_item", lost, late_undo)
    first = asyncio.create_task(store.acquire("a", A, session=session))
    await sent.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    second = await store.acquire("a", A, session=session)  # the claim is gone: allowed
    go.set()
    await undone.wait()
    row = await raw(client, store, "a")
    assert row.get("ProcessID") == {"S": "worker-a"}, (
        f"the first acquisition's undo freed the second one's item: {row}"
    )
    assert await store.release(second)


async def test_acquiring_under_a_session_its_holder_ended_is_refused(
    store: LockStore,
) -> None:
    # The store knows it ended the session (end_session returned True), yet acquire(...,
    # session=ended) still writes the item under it and returns a Lease whose until is in
    # the future; the session is DEAD to every taker, so another worker takes the item at
    # once while this Lease still looks valid (no write of the holder would notice).
    await store.add_item("a")
    session = await store.start_session(A)
    assert await store.end_session(session) is True
    try:
        held = await store.acquire("a", A, session=session)
    except (ValueError, LeaseNotObtainedError, LeaseLostError):
        return  # refused: what the protocol needs
    other = await Locker(store).obtain_lease(B)
    assert other.lease_id != held.lease_id, (  # held.until is still ~2 s ahead
        f"two holders of {held.lease_id!r}: tokens {held.fencing_token} and {other.fencing_token}"
    )
