"""Review: the --balance worker's records must bound every held item's lease expiry.

The exclusion check of ``aiolease demo --balance`` ends a killed worker's holds at the last
expiry its records show. An item taken while a session renewal is in flight gets the
session's old expiry in its ``start`` record (serve() stamps it from the session row as it
is then), and the renewal's ``renew-sent``/``renew-ok`` lines only name the items held
before it was sent. The renewal moves that item's expiry too (an item lives as long as its
session), so if the worker is killed before the next renewal, its hold "ends" earlier than
its lease can: a taker that came in between would not be reported as an overlap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest

from aiolease import Lease, LeaseRequest, LockStore
from aiolease.demo._worker import _RecordingStore
from aiolease.testing.history import History, Hold, RecordWriter, check_exclusion


async def test_an_item_taken_during_a_session_renewal_is_bounded_by_that_renewal(
    client: Any, table_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _RecordingStore(client, table_name)
    await store.create_table()
    path = tmp_path / "w.jsonl"
    recorder = RecordWriter(path, "w")
    store.recorder, store.held = recorder, {"a": 1}
    session = await store.start_session(LeaseRequest("w", 3))
    recorder.write("start", until=session.until_ns / 1e9, item="a", token=1)

    in_flight, go_on = asyncio.Event(), asyncio.Event()
    original = LockStore.renew_session

    async def slow_renewal(self: LockStore, lease: Lease) -> Lease:
        in_flight.set()
        await go_on.wait()
        return await original(self, lease)

    monkeypatch.setattr(LockStore, "renew_session", slow_renewal)
    renewal = asyncio.create_task(store.renew_session(session))
    await in_flight.wait()
    # What _process records for an item serve() takes now: the session's expiry as it is.
    store.held["c"] = 7
    recorder.write("start", until=session.until_ns / 1e9, item="c", token=7)
    go_on.set()
    renewed = await renewal
    recorder.close()

    history = History()
    history.poll([path])
    history.died("w", time.time())  # SIGKILL before the next renewal
    ends = {hold.item: hold.end for hold in history.holds.values()}
    assert ends["a"] is not None and ends["a"] >= renewed.until_ns / 1e9
    assert ends["c"] is not None and ends["c"] >= renewed.until_ns / 1e9, (
        f"item c's lease lives until {renewed.until_ns / 1e9:.3f} (its session's expiry), "
        f"but the history ends its hold at {ends['c']:.3f}"
    )


async def test_a_renewal_in_flight_at_a_kill_bounds_every_item_even_when_stamped_late(
    client: Any, table_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker dies with a session renewal sent but unanswered; the renewal landed.

    The library stamps the expiry once the call holds a request slot (later than the
    worker's record on a loaded machine: here half a second), and an item was taken while
    the call was in flight. Both items' holds must end no earlier than the stored expiry.
    """
    store = _RecordingStore(client, table_name)
    await store.create_table()
    path = tmp_path / "w.jsonl"
    recorder = RecordWriter(path, "w")
    store.recorder, store.held = recorder, {}
    session = await store.start_session(LeaseRequest("w", 3))
    store.hold_started(dataclasses.replace(session, lease_id="a", fencing_token=1))

    in_flight, landed = asyncio.Event(), asyncio.Event()
    stored: list[Lease] = []
    original = LockStore.renew_session

    async def slow_renewal(self: LockStore, lease: Lease) -> Lease:
        in_flight.set()
        await asyncio.sleep(0.5)  # queued behind other requests: stamped only now
        stored.append(await original(self, lease))
        landed.set()
        await asyncio.Event().wait()  # the answer never reaches the worker: it is killed
        raise AssertionError("unreachable")

    monkeypatch.setattr(LockStore, "renew_session", slow_renewal)
    renewal = asyncio.create_task(store.renew_session(session))
    await in_flight.wait()
    store.hold_started(dataclasses.replace(session, lease_id="c", fencing_token=7))
    await landed.wait()
    renewal.cancel()
    with pytest.raises(asyncio.CancelledError):
        await renewal
    recorder.close()

    history = History()
    history.poll([path])
    history.died("w", time.time())
    ends = {hold.item: hold.end for hold in history.holds.values()}
    expiry = stored[0].until_ns / 1e9
    for item in ("a", "c"):
        end = ends[item]
        assert end is not None and end >= expiry, (
            f"item {item}'s lease may live until {expiry:.3f}, but its hold ends at {end}"
        )


def _killed_with_a_renewal_in_flight(path: Path, until: float, bound: float) -> None:
    """Worker w holds item a under its session (expiry ``until``) and is killed while a
    renewal is in flight: the record before sending carries only an upper ``bound``."""
    recorder = RecordWriter(path, "w")
    recorder.write("start", until=until, item="a", token=1, session="s-w")
    recorder.write("renew-sent", until=bound, item="a", token=1)
    recorder.close()


def test_a_killed_workers_holds_end_where_the_taker_found_its_session_expiring(
    tmp_path: Path,
) -> None:
    """The bound of an unanswered renewal is loose (the stamp is taken later, if ever); the
    taker's end of the session is pinned to the expiry stored then, which is exact."""
    now = time.time()
    until, bound = now + 1.0, now + 3.0
    _killed_with_a_renewal_in_flight(tmp_path / "w.jsonl", until, bound)
    taker = RecordWriter(tmp_path / "t.jsonl", "t")
    taker.write("session-ended", lessee="w", session="s-w", until=until)
    taker.close()
    history = History()
    history.poll([tmp_path / "w.jsonl"])
    history.died("w", now)
    history.poll([tmp_path / "t.jsonl"])
    history.holds[("a", 2)] = Hold("a", "t", 2, until + 0.6, until + 5.0)  # the takeover
    hold = history.holds[("a", 1)]
    assert hold.end == until, f"the session expired at {until:.3f} on the table: {hold}"
    assert check_exclusion(history.holds.values()) == []


def test_a_takeover_before_the_expiry_the_taker_ended_is_still_an_overlap(
    tmp_path: Path,
) -> None:
    now = time.time()
    until = now + 1.0
    _killed_with_a_renewal_in_flight(tmp_path / "w.jsonl", until, now + 3.0)
    taker = RecordWriter(tmp_path / "t.jsonl", "t")
    taker.write("session-ended", lessee="w", session="s-w", until=until)
    taker.close()
    history = History()
    # The taker's record read first this time: the worker is found dead only afterwards.
    history.poll([tmp_path / "w.jsonl", tmp_path / "t.jsonl"])
    history.died("w", now)
    history.holds[("a", 2)] = Hold("a", "t", 2, until - 0.2, until + 5.0)
    assert history.holds[("a", 1)].end == until
    problems = check_exclusion(history.holds.values())
    assert len(problems) == 1 and "started 0.200s before w" in problems[0], problems


def test_a_session_ended_under_a_live_worker_leaves_its_holds_to_their_own_end(
    tmp_path: Path,
) -> None:
    """A taker may end the session of a stalled worker that lives on: that worker's holds
    end when its work stopped, which the check compares with the takeover as it is."""
    now = time.time()
    path = tmp_path / "w.jsonl"
    recorder = RecordWriter(path, "w")
    recorder.write("start", until=now + 1.0, item="a", token=1, session="s-w")
    recorder.write("session-ended", lessee="x", session="s-x", until=now)  # someone else's
    recorder.close()
    taker = RecordWriter(tmp_path / "t.jsonl", "t")
    taker.write("session-ended", lessee="w", session="s-w", until=now + 1.0)
    taker.close()
    history = History()
    history.poll([path, tmp_path / "t.jsonl"])
    assert history.holds[("a", 1)].end is None, "w is alive: its hold has not ended"


def test_the_end_of_an_earlier_session_of_the_same_name_leaves_a_later_one_alone(
    tmp_path: Path,
) -> None:
    """A name can come back under a new session: a taker's end of the old one says nothing
    of the new one's leases, which keep the bound of their unanswered renewal."""
    now = time.time()
    until, bound = now + 1.0, now + 3.0
    path = tmp_path / "w.jsonl"
    taker = RecordWriter(tmp_path / "t.jsonl", "t")
    taker.write("session-ended", lessee="w", session="s-w-old", until=now - 5.0)
    taker.close()
    recorder = RecordWriter(path, "w")
    recorder.write("start", until=until, item="a", token=5, session="s-w-new")
    recorder.write("renew-sent", until=bound, item="a", token=5)
    recorder.close()
    history = History()
    history.poll([tmp_path / "t.jsonl", path])
    history.died("w", now)
    assert history.holds[("a", 5)].end == bound
    # A takeover before that bound may have overlapped a renewal that landed: flagged.
    history.holds[("a", 6)] = Hold("a", "x", 6, until + 0.5, until + 5.0)
    assert len(check_exclusion(history.holds.values())) == 1


def test_of_two_records_for_one_session_the_later_expiry_counts_in_any_order(
    tmp_path: Path,
) -> None:
    """Two takers may both report ending one session (a retried write finds the other's
    tombstone), one with an expiry read before a renewal: the later one is the session's."""
    now = time.time()
    until = now + 1.0
    for order in ((0, 1), (1, 0)):
        _killed_with_a_renewal_in_flight(tmp_path / "w.jsonl", until, now + 3.0)
        paths = []
        for n, expiry in enumerate((until, until + 0.5)):
            paths.append(tmp_path / f"t{n}.jsonl")
            taker = RecordWriter(paths[-1], f"t{n}")
            taker.write("session-ended", lessee="w", session="s-w", until=expiry)
            taker.close()
        history = History()
        history.poll([tmp_path / "w.jsonl"])
        history.died("w", now)
        history.poll([paths[i] for i in order])
        assert history.holds[("a", 1)].end == until + 0.5, order
        for path in (tmp_path / "w.jsonl", *paths):
            path.unlink()


async def test_the_taker_records_the_expiry_it_ended_a_session_at(
    client: Any, table_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end on the server: w is killed with a renewal that never landed; the taker
    ends w's session once it expired and takes the item; the check passes, exactly."""
    store = _RecordingStore(client, table_name)
    await store.create_table()
    path = tmp_path / "w.jsonl"
    recorder = RecordWriter(path, "w")
    store.recorder, store.held = recorder, {}
    session = await store.start_session(LeaseRequest("w", 1))
    store.hold_started(dataclasses.replace(session, lease_id="a", fencing_token=1))

    in_flight = asyncio.Event()

    async def never_sent(self: LockStore, lease: Lease) -> Lease:
        in_flight.set()
        await asyncio.Event().wait()  # killed before the request left the process
        raise AssertionError("unreachable")

    monkeypatch.setattr(LockStore, "renew_session", never_sent)
    renewal = asyncio.create_task(store.renew_session(session))
    await in_flight.wait()
    renewal.cancel()
    with pytest.raises(asyncio.CancelledError):
        await renewal
    recorder.close()
    killed_at = time.time()
    monkeypatch.undo()

    taker_path = tmp_path / "t.jsonl"
    taker = _RecordingStore(client, table_name)
    taker.recorder, taker.held = RecordWriter(taker_path, "t"), {}
    await asyncio.sleep(session.until_ns / 1e9 - time.time() + 0.6)  # expired, past a skew
    row = await taker.get_session(session.lease_id)
    assert row is not None and row.until_ns == session.until_ns, row
    assert await taker.end_expired_session(row)
    taken_at = time.time()
    taker.recorder.write("start", until=taken_at + 1, item="a", token=2)
    taker.recorder.write("end", item="a", token=2, why="released")
    taker.recorder.close()

    history = History()
    history.poll([path])
    history.died("w", killed_at)
    history.poll([taker_path])
    expiry = session.until_ns / 1e9
    assert history.holds[("a", 1)].end == pytest.approx(expiry, abs=1e-6)
    assert taken_at - expiry > 0.5
    assert check_exclusion(history.holds.values()) == [], "the takeover came after the expiry"
