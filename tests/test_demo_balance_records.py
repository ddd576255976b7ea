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
from aiolease.testing.history import History, RecordWriter


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
