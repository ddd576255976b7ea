"""Session rows and items held under sessions, against the moto server (docs/protocol.md).

Takers that must see a session expired run on a store whose wall clock is ahead (clock
rule) or whose monotonic clock is moved forward (observe rule): no test sleeps a session
out.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from aiolease import (
    LeaseLostError,
    LeaseNotObtainedError,
    LeaseRequest,
    LeaseStoreError,
    Locker,
    LockStore,
)
from aiolease._takeover import ClockTakeover, ObserveTakeover
from aiolease._types import SessionRow
from aiolease.cli import EXIT_OK, main

from . import faults
from .faults import FaultyClient

A = LeaseRequest("worker-a", 2)
B = LeaseRequest("worker-b", 2)
MAX = str(2**63 - 1)  # what Go workers read as LeaseUntil: held, whatever their clock
FLOOR = 2**62  # items held under a session store this + their acquisition's own stamp
SKEW = 1.0


class ShiftedClock:
    """The system clocks, moved: the wall clock by ``wall`` seconds, monotonic by ``ahead``."""

    def __init__(self, wall: float = 0.0) -> None:
        self.wall = wall
        self.ahead = 0.0

    def wall_ns(self) -> int:
        return time.time_ns() + int(self.wall * 1e9)

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time() + self.ahead


async def raw(client: Any, store: LockStore, key: str) -> dict[str, Any]:
    response = await client.get_item(
        TableName=store.table_name, Key={store.hash_key: {"S": key}}, ConsistentRead=True
    )
    item: dict[str, Any] = response.get("Item", {})
    return item


def taker(store: LockStore, layout: dict[str, Any], clock: ShiftedClock) -> LockStore:
    return LockStore(store.client, store.table_name, **layout, clock=clock)


# -- the session row ----------------------------------------------------------------------


async def test_a_session_starts_renews_and_ends_with_a_tombstone(
    client: Any, store: LockStore
) -> None:
    session = await store.start_session(A)
    assert session.lease_id.startswith("aiolease-session:worker-a:")
    assert session.fencing_token == 1 and session.until_ns > time.time_ns()
    row = await raw(client, store, session.lease_id)
    assert row["ProcessID"] == {"S": "worker-a"}
    assert row["LeaseUntil"] == {"N": MAX}, "Go must see a session row held"
    assert row["LeaseToken"] == {"N": "1"}
    assert row["LeaseSessionUntil"] == {"N": str(session.until_ns)}
    assert row["LeaseDuration"]["M"]["until"] == {"N": str(session.until_ns)}
    assert "LeaseBucket" not in row, "a session row must stay out of the index"

    renewed = await store.renew_session(session)
    assert renewed.until_ns > session.until_ns and renewed._sent_at >= session._sent_at
    assert (await raw(client, store, session.lease_id))["LeaseSessionUntil"] == {
        "N": str(renewed.until_ns)
    }
    read = await store.get_session(session.lease_id)
    assert read == SessionRow(
        session.lease_id, "worker-a", renewed.until_ns, 1, duration=2.0, ended=False
    )

    assert await store.end_session(renewed) is True
    row = await raw(client, store, session.lease_id)
    assert row["LeaseToken"] == {"N": "2"} and row["LeaseSessionUntil"] == {"N": "0"}
    assert "LeaseDuration" not in row
    assert row["LeaseUntil"] == {"N": MAX} and row["ProcessID"] == {"S": "worker-a"}
    ended = await store.get_session(session.lease_id)
    assert ended is not None and ended.ended and ended.until is None
    with pytest.raises(LeaseLostError) as lost:
        await store.renew_session(renewed)
    assert lost.value.reason == "session ended"
    assert await store.end_session(renewed) is False, "ended already: not by this call"


async def test_sessions_are_listed_apart_from_items(store: LockStore) -> None:
    await store.add_item("a")
    live = await store.start_session(A)
    ended = await store.start_session(B)
    await store.end_session(ended)
    listed = {row.session_id: row for row in await store.list_sessions()}
    assert set(listed) == {live.lease_id, ended.lease_id}
    assert not listed[live.lease_id].ended and listed[ended.lease_id].ended
    assert await store.get_session("a") is None, "an item is no session"
    assert await store.get_session("aiolease-session:nobody:0") is None


async def test_a_lost_start_answer_is_recognised_as_ours(
    faulty: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = faulty
    proxy.inject("update_item", faults.drop_response)
    session = await store.start_session(A)
    row = await store.get_session(session.lease_id)
    assert row is not None and row.until_ns == session.until_ns and not row.ended


async def test_a_lost_renewal_answer_is_still_a_renewal(
    faulty: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = faulty
    session = await store.start_session(A)
    proxy.inject("update_item", faults.drop_response)
    renewed = await store.renew_session(session)
    row = await store.get_session(session.lease_id)
    assert row is not None and row.until_ns == renewed.until_ns


# -- a taker's end ------------------------------------------------------------------------


async def test_a_takers_pinned_end_fails_after_a_renewal_and_ends_the_state_read(
    store: LockStore,
) -> None:
    session = await store.start_session(A)
    seen = await store.get_session(session.lease_id)
    assert seen is not None
    session = await store.renew_session(session)
    assert await store.end_expired_session(seen) is False, "a renewal landed since the read"
    session = await store.renew_session(session)  # the holder is unharmed
    seen = await store.get_session(session.lease_id)
    assert seen is not None
    assert await store.end_expired_session(seen) is True
    with pytest.raises(LeaseLostError, match="session ended"):
        await store.renew_session(session)
    assert await store.end_session(session) is False


# -- items under a session ----------------------------------------------------------------


async def test_an_item_under_a_session_goes_held_forever_and_is_released_as_before(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a")
    session = await store.start_session(A)
    lease = await store.acquire("a", A, session=session)
    assert lease.fencing_token == 1 and lease._session == session.lease_id
    assert lease.until == session.until and lease.until_ns == session.until_ns
    row = await raw(client, store, "a")
    until = int(row["LeaseUntil"]["N"])
    assert FLOOR < until < 2**63 - 1, "Go must see an item of a session held (within int64)"
    assert row["LeaseSession"] == {"S": session.lease_id} and "LeaseDuration" not in row
    with pytest.raises(ValueError, match="renew the session"):
        await store.renew(lease)
    assert await store.release(lease) is True
    row = await raw(client, store, "a")
    assert "LeaseSession" not in row and "ProcessID" not in row
    assert row["LeaseUntil"] == {"N": "0"} and row["LeaseToken"] == {"N": "1"}
    again = await store.acquire("a", A, session=session)
    row = await raw(client, store, "a")
    assert FLOOR < int(row["LeaseUntil"]["N"]) != until, "not unique to its acquisition"
    assert await store.release(again)


async def test_acquiring_under_another_lessees_session_is_refused(store: LockStore) -> None:
    await store.add_item("a")
    session = await store.start_session(A)
    with pytest.raises(ValueError, match="belongs to 'worker-a'"):
        await store.acquire("a", B, session=session)
    await store.add_item("b")
    plain = await store.acquire("b", A)
    with pytest.raises(ValueError, match="not a session"):
        await store.acquire("a", A, session=plain)


async def test_a_table_without_sessions_has_rows_exactly_as_before(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a", {"colour": "red"})
    bucket = {"LeaseBucket"} if store.indexed else set()
    lease = await store.acquire("a", A)
    after_acquire = set(await raw(client, store, "a"))
    assert (
        after_acquire
        == {
            "LeaseID",
            "ProcessID",
            "LeaseUntil",
            "LeaseToken",
            "LeaseDuration",
            "colour",
        }
        | bucket
    )
    await store.release(lease)
    assert (
        set(await raw(client, store, "a"))
        == {
            "LeaseID",
            "LeaseUntil",
            "LeaseToken",
            "colour",
        }
        | bucket
    )


async def test_session_rows_are_never_offered_as_items(store: LockStore) -> None:
    await store.add_item("a")
    session = await store.start_session(A)
    await store.end_session(await store.start_session(A))  # a tombstone too
    assert await store.list_lease_ids() == ["a"]
    assert [i.lease_id for i in await store.find_available()] == ["a"]
    held = await store.acquire("a", B)
    assert await store.find_available(max_clock_skew=0.0) == []
    assert [i.lease_id async for i in store.scan()] == ["a"]
    for mode in ("clock", "observe"):
        with pytest.raises(LeaseNotObtainedError):
            await Locker(store, takeover=mode).obtain_lease(B)
    if store.indexed:
        assert await store.backfill_buckets() == 0, "a session row got a bucket"
    await store.release(held)
    await store.end_session(session)


# -- takers -------------------------------------------------------------------------------


@pytest.mark.parametrize("named", [False, True])
async def test_a_live_sessions_item_is_not_taken(
    store: LockStore, layout: dict[str, Any], named: bool
) -> None:
    await store.add_item("a")
    session = await store.start_session(A)
    await store.acquire("a", A, session=session)
    rule = ClockTakeover(SKEW)
    obtain = rule.obtain_named(store, B, "a") if named else rule.obtain_any(store, B)
    with pytest.raises(LeaseNotObtainedError) as info:
        await obtain
    if named:
        assert info.value.holder == "worker-a", info.value
        assert "under session" in str(info.value), info.value
    # The observer waits past the session's duration (its clock), twice, while the holder
    # keeps renewing: each renewal changes the row, so it is never seen ripe.
    clock = ShiftedClock()
    observer, watch = taker(store, layout, clock), ObserveTakeover(SKEW)
    for _ in range(3):
        obtain = watch.obtain_named(observer, B, "a") if named else watch.obtain_any(observer, B)
        with pytest.raises(LeaseNotObtainedError):
            await obtain
        assert watch.ripens_in(clock.monotonic()) is not None, "the session row is not watched"
        session = await store.renew_session(session)
        clock.ahead += A.duration + 0.1
    row = await store.get_session(session.lease_id)
    assert row is not None and not row.ended, "a taker ended a live session"


@pytest.mark.parametrize("named", [False, True])
async def test_a_dead_sessions_item_is_taken_by_the_clock_rule(
    client: Any, store: LockStore, layout: dict[str, Any], named: bool
) -> None:
    await store.add_item("a")
    session = await store.start_session(A)
    held = await store.acquire("a", A, session=session)
    # Past the session's expiry plus the skew, on the taker's clock.
    other = taker(store, layout, ShiftedClock(wall=A.duration + SKEW + 1))
    locker = Locker(other, max_clock_skew=SKEW)
    async with locker.lease(B, "a" if named else None, timeout=5) as lease:
        assert lease.lease_id == "a" and lease.fencing_token == held.fencing_token + 1
        row = await raw(client, store, "a")
        assert row["ProcessID"] == {"S": "worker-b"} and "LeaseSession" not in row
    ended = await store.get_session(session.lease_id)
    assert ended is not None and ended.ended, "the taker did not end the session first"
    with pytest.raises(LeaseLostError, match="session ended"):
        await store.renew_session(session)


@pytest.mark.parametrize("named", [False, True])
async def test_a_dead_sessions_item_is_taken_by_the_observe_rule(
    store: LockStore, layout: dict[str, Any], named: bool
) -> None:
    await store.add_item("a")
    session = await store.start_session(A)
    held = await store.acquire("a", A, session=session)
    clock = ShiftedClock()
    other = taker(store, layout, clock)
    rule = ObserveTakeover(SKEW)
    locker = Locker(other, takeover=rule)
    first = rule.obtain_named(other, B, "a") if named else rule.obtain_any(other, B)
    with pytest.raises(LeaseNotObtainedError):
        await first  # the first sighting of the session row: watch it
    assert rule.ripens_in(clock.monotonic()) is not None, "the session row is not watched"
    clock.ahead = A.duration + 0.1  # seen unchanged for the session's duration
    async with locker.lease(B, "a" if named else None, timeout=5) as lease:
        assert lease.lease_id == "a" and lease.fencing_token == held.fencing_token + 1
    ended = await store.get_session(session.lease_id)
    assert ended is not None and ended.ended


async def test_session_held_items_are_candidates_in_both_layouts(
    faulty: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = faulty
    await store.add_item("a")
    session = await store.start_session(A)
    await store.acquire("a", A, session=session)
    proxy.calls.clear()
    [item] = await store.find_available(max_clock_skew=SKEW)
    assert (item.lease_id, item.lessee_id) == ("a", "worker-a") and item.until_ns > FLOOR
    if store.indexed:
        assert proxy.calls["scan"] == 0, "the indexed layout scanned for session-held items"
        assert proxy.calls["query"] == 2 * store.buckets, proxy.calls
    await store.add_item("b")
    found = [i.lease_id for i in await store.find_available(max_clock_skew=SKEW)]
    assert found == ["b"], f"session-held items come only when none is free: {found}"
    held = await store.find_available(max_clock_skew=SKEW, session_held=True)
    assert [i.lease_id for i in held] == ["a"], held


async def test_an_ended_sessions_item_is_taken_at_once(store: LockStore) -> None:
    await store.add_item("a")
    token = 0
    for mode in ("clock", "observe"):
        session = await store.start_session(A)
        held = await store.acquire("a", A, session=session)
        assert held.fencing_token > token
        await store.end_session(session)  # a holder that ended without releasing the item
        lease = await Locker(store, takeover=mode).obtain_lease(B)
        assert lease.fencing_token == held.fencing_token + 1, mode
        await store.release(lease)
        token = lease.fencing_token


async def test_an_item_can_be_taken_into_a_session_from_a_dead_one(store: LockStore) -> None:
    await store.add_item("a")
    old = await store.start_session(A)
    await store.acquire("a", A, session=old)
    await store.end_session(old)
    mine = await store.start_session(B)
    lease = await ClockTakeover(SKEW).obtain_named(store, B, "a", session=mine)
    assert lease._session == mine.lease_id and lease.fencing_token == 2
    assert lease.until == mine.until


# -- the CLI ------------------------------------------------------------------------------


async def ls(
    store: LockStore, endpoint: str, capsys: pytest.CaptureFixture[str], *argv: str
) -> str:
    capsys.readouterr()
    argv = ("ls", *argv, "--table", store.table_name, "--endpoint-url", endpoint)
    assert await asyncio.to_thread(main, list(argv)) == EXIT_OK
    return capsys.readouterr().out


async def test_ls_shows_items_and_ls_sessions_shows_the_sessions(
    dynamodb_endpoint: str, store: LockStore, capsys: pytest.CaptureFixture[str]
) -> None:
    # No heartbeat renews this session: it must outlive four CLI runs on a loaded machine.
    long = LeaseRequest(A.lessee_id, 30)
    await store.add_item("a")
    session = await store.start_session(long)
    await store.acquire("a", long, session=session)
    await store.end_session(await store.start_session(B))

    lines = (await ls(store, dynamodb_endpoint, capsys)).splitlines()
    assert len(lines) == 2, f"ls shows a session row: {lines}"
    assert lines[1].split()[:4] == ["a", "worker-a", "session", session.lease_id], lines
    [item] = json.loads(await ls(store, dynamodb_endpoint, capsys, "--json"))
    assert item["session"] == session.lease_id and item["expires_in"] is None, item

    lines = (await ls(store, dynamodb_endpoint, capsys, "--sessions")).splitlines()
    assert lines[0].split() == ["SESSION", "HOLDER", "EXPIRES", "IN", "STATE"], lines
    states = {line.split()[1]: line.split()[-1] for line in lines[1:]}
    assert states == {"worker-a": "live", "worker-b": "ended"}, lines
    rows = json.loads(await ls(store, dynamodb_endpoint, capsys, "--sessions", "--json"))
    live = next(r for r in rows if r["holder"] == "worker-a")
    assert live["session"] == session.lease_id and 0 < live["expires_in"] <= long.duration


async def test_the_go_style_lease_never_renews_an_item_held_under_a_session(
    store: LockStore,
) -> None:
    await store.add_item("a")
    session = await store.start_session(A)
    await store.acquire("a", A, session=session)
    with pytest.raises(LeaseNotObtainedError, match="under session"):
        await store.lease("a", A)


async def test_a_start_cancelled_after_it_landed_is_ended(
    faulty: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = faulty
    landed = asyncio.Event()
    proxy.inject("update_item", faults.land_then_hang(landed))
    start = asyncio.create_task(store.start_session(A))
    await landed.wait()
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    [row] = await store.list_sessions()
    assert row.ended, "a start nobody will renew or end was left looking live"


async def test_a_start_ending_in_a_store_error_after_it_may_have_landed_is_ended(
    faulty: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = faulty

    def denied(call: Any) -> Any:  # the retry of the lost answer: refused by the store
        async def run() -> Any:
            raise faults.client_error("AccessDeniedException")

        return run()

    proxy.inject("update_item", faults.drop_response, denied)
    with pytest.raises(LeaseStoreError):
        await store.start_session(A)
    [row] = await store.list_sessions()
    assert row.ended, "a start that landed unanswered was left looking live"


async def test_a_lost_end_answer_is_still_an_end(faulty: tuple[LockStore, FaultyClient]) -> None:
    store, proxy = faulty
    session = await store.start_session(A)
    proxy.inject("update_item", faults.drop_response)
    assert await store.end_session(session) is True
    row = await store.get_session(session.lease_id)
    assert row is not None and row.ended


async def test_one_item_is_acquired_once_at_a_time_under_one_session(
    faulty: tuple[LockStore, FaultyClient],
) -> None:
    # One acquisition of an item at a time under one session: the claim is also what tells
    # the session's holder that a row showing its session is held by none of its scopes.
    store, proxy = faulty
    await store.add_item("a")
    session = await store.start_session(A)
    sent = asyncio.Event()

    def lost(call: Any) -> Any:  # sent, never applied, never answered
        sent.set()
        return faults.hang(call)

    proxy.inject("update_item", lost)
    first = asyncio.create_task(store.acquire("a", A, session=session))
    await sent.wait()
    with pytest.raises(LeaseNotObtainedError, match="already"):
        # Refused by the claim before anything is sent.
        await store.acquire("a", A, session=session)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    item = await store.get_item("a")
    assert item is not None and item.lessee_id is None, "the cancelled acquisition stayed"
    lease = await store.acquire("a", A, session=session)
    with pytest.raises(LeaseNotObtainedError, match="already"):
        await store.acquire("a", A, session=session)
    assert await store.release(lease)
    assert await store.release(await store.acquire("a", A, session=session))


async def test_a_refused_undo_under_a_session_is_sent_again_and_frees_a_late_duplicate(
    faulty: tuple[LockStore, FaultyClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    import aiolease._acquire

    monkeypatch.setattr(aiolease._acquire, "LATE_UNDO_DELAYS", (0.5, 0.5))
    store, proxy = faulty
    await store.add_item("a")
    session = await store.start_session(LeaseRequest("worker-a", 30))
    sent, go, landed = asyncio.Event(), asyncio.Event(), asyncio.Event()
    background: list[asyncio.Task[Any]] = []

    def late(call: Any) -> Any:  # the acquisition: applied only after its undo was refused
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
        await first
    retries = set(store._table.late_undos)
    assert retries, "no undo was scheduled again"
    go.set()
    await landed.wait()
    item = await store.get_item("a")
    assert item is not None and item.lessee_id == "worker-a", "the late duplicate did not land"
    await asyncio.wait(retries, timeout=10)
    item = await store.get_item("a")
    assert item is not None and item.lessee_id is None, "the late duplicate was left held"


async def test_heartbeat_refuses_a_sessions_lease(store: LockStore) -> None:
    session = await store.start_session(A)
    with pytest.raises(ValueError, match="session"):
        await Locker(store).heartbeat(session)
    row = await store.get_session(session.lease_id)
    assert row is not None and not row.ended and row.until_ns == session.until_ns
