"""Found by the review of the session holder side: an item scope sees a session loss that
happened in the same loop iteration, and a session exit that aclose() gave up on stops the
heartbeat. Both failed before the fix."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

import aiolease._locker
from aiolease import Lease, LeaseLostError, LeaseRequest, Locker, LockStore


class Store(LockStore):
    """The plain layout, with hooks on the session writes."""

    refuse_next_renewal: asyncio.Event | None = None  # set, then refuse the renewal
    start_hangs_after_landing = False
    start_landed: asyncio.Event

    async def renew_session(self, session: Lease) -> Lease:
        if self.refuse_next_renewal is not None:
            signal, self.refuse_next_renewal = self.refuse_next_renewal, None
            signal.set()
            raise LeaseLostError(
                "session ended by a taker",
                lease_id=session.lease_id,
                reason="session ended",
                detail="no longer renewable (session ended)",
            )
        return await super().renew_session(session)

    async def start_session(self, request: LeaseRequest) -> Lease:
        lease = await super().start_session(request)
        if self.start_hangs_after_landing:
            self.start_landed.set()
            await asyncio.Event().wait()  # the answer is on its way back when cancelled
        return lease


@pytest.fixture
async def store(client: Any, table_name: str) -> AsyncIterator[Store]:
    s = Store(client, table_name)
    await s.create_table()
    yield s
    await s.aclose()


async def test_an_item_body_ending_as_the_session_renewal_is_refused_is_a_loss(
    store: Store,
) -> None:
    # The session's renewal is refused (the session was ended by a taker) in the same loop
    # iteration in which an item body returns. Kept.loss() promises "the loss that ended the
    # keeping, even if its callback has not run yet" and locker.lease()'s Heartbeat.loss()
    # reads the finished heartbeat task for that; _Item.loss() (_session.py:459) only
    # returns what _on_lost recorded, so the item scope exits as a success although its
    # session was already lost: session.run() returns the result of a body that outlived it.
    await store.add_item("a")
    locker = Locker(store)
    refused = asyncio.Event()
    outcome: list[str] = []

    async def work(lease: Lease) -> str:
        store.refuse_next_renewal = refused
        await refused.wait()  # woken in the iteration the heartbeat fails in, before its callback
        return "result"

    async def item(session: Any) -> None:
        try:
            outcome.append(await session.run(work, "a"))
        except LeaseLostError:
            outcome.append("lost")

    others: list[asyncio.Task[None]] = []

    async def hold() -> None:
        async with locker.session(LeaseRequest("worker-a", 1.5), heartbeat_period=0.2) as session:
            others.append(asyncio.create_task(item(session)))  # its own task: no outer cancel
            await asyncio.sleep(10)  # cancelled by the session's loss

    with pytest.raises(LeaseLostError):
        await hold()
    await others[0]
    assert outcome == ["lost"], outcome


async def test_aclose_that_cancels_a_session_drain_stops_the_sessions_heartbeat(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Leaving a session whose item scope (in another task) will not unwind: _drain waits
    # DRAIN_TIME for it. If that wait outlives the exit (a second cancellation detached it)
    # and locker.aclose() then gives up on it and cancels it, _RowKept.finish
    # (_session.py:433-436) never reaches heartbeat.finish(): the session's heartbeat goes
    # on renewing the session after aclose() returned, forever, and the stuck item (never
    # released) stays held under a live session that nobody will end.
    monkeypatch.setattr(aiolease._locker, "_CLOSE_TIMEOUT", 0.2)
    monkeypatch.setattr(aiolease._locker, "_UNWIND_TIME", 0.2)
    await store.add_item("a")
    locker = Locker(store)
    stop = asyncio.Event()
    entered = asyncio.Event()
    others: list[asyncio.Task[None]] = []

    async def stubborn(session: Any) -> None:
        try:
            async with session.lease("a"):
                entered.set()
                while not stop.is_set():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.sleep(10)
        except LeaseLostError:
            pass

    async def hold() -> None:
        async with locker.session(LeaseRequest("worker-a", 3), heartbeat_period=0.3) as session:
            others.append(asyncio.create_task(stubborn(session)))
            await entered.wait()

    holder = asyncio.create_task(hold())
    await entered.wait()
    await asyncio.sleep(0.05)  # the body has left; its exit waits for the drain
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder  # an outer cancellation: the drain goes on, owned by the locker
    await locker.aclose()  # gives up on it after 0.2 s and cancels it
    try:
        heartbeats = [
            t
            for t in asyncio.all_tasks()
            if t.get_name().startswith("aiolease heartbeat") and not t.done()
        ]
        assert heartbeats == [], "the session's heartbeat outlived locker.aclose()"
    finally:
        stop.set()
        await asyncio.wait(others, timeout=2)
        for t in asyncio.all_tasks():
            if t.get_name().startswith("aiolease heartbeat"):
                t.cancel()
        await asyncio.sleep(0.1)
