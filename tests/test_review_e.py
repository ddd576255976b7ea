"""Review of the events branch: failing tests for the findings (no fixes here)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from aiolease import Lease, LeaseEvent, LeaseLostError, LeaseRequest, Locker, LockStore
from aiolease._events import Events

from .faults import FaultyClient

WAIT = 10.0


class _Clock:
    def wall_ns(self) -> int:
        return 1_700_000_000_000_000_000

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()


def _lease() -> Lease:
    return Lease("x", LeaseRequest("w", 3), datetime.now(UTC), 7)


async def test_a_stream_left_by_break_is_unsubscribed_once_unreferenced() -> None:
    # `async for e in locker.events(): ... break` never calls close(): the hub keeps the
    # stream (and up to max_buffer events) forever, and every later event is built for it.
    hub = Events("t", _Clock())
    hub.renewed(_lease(), 0.01)

    async def first() -> LeaseEvent:
        async for event in hub.stream(1000):
            return event
        raise AssertionError

    hub.renewed(_lease(), 0.01)
    task = asyncio.ensure_future(first())
    await asyncio.sleep(0)
    hub.renewed(_lease(), 0.01)
    await task
    del task
    gc.collect()
    assert not hub.listened, f"abandoned stream still subscribed: {hub._streams}"


async def test_a_listener_removed_gets_no_event_after_its_removal() -> None:
    hub = Events("t", _Clock())
    got: list[LeaseEvent] = []
    remove = hub.add_listener(got.append)
    hub.renewed(_lease(), 0.01)
    remove()
    await asyncio.sleep(0)
    assert got == [], "called after remove() returned"


async def test_a_listener_raising_a_base_exception_does_not_starve_the_others() -> None:
    # e.g. a listener calling .result() on a cancelled future raises CancelledError.
    hub = Events("t", _Clock())
    got: list[LeaseEvent] = []

    def cancelled(event: LeaseEvent) -> None:
        raise asyncio.CancelledError

    hub.add_listener(cancelled)
    hub.add_listener(got.append)
    hub.renewed(_lease(), 0.01)
    await asyncio.sleep(0)
    assert len(got) == 1, "the second listener never got the event"


async def test_two_consumers_of_one_stream_both_get_events() -> None:
    hub = Events("t", _Clock())
    stream = hub.stream(10)
    a = asyncio.ensure_future(anext(stream))
    b = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    hub.renewed(_lease(), 0.01)
    hub.renewed(_lease(), 0.01)
    done, pending = await asyncio.wait({a, b}, timeout=1)
    for t in pending:
        t.cancel()
    assert not pending, "one consumer waits forever on a waiter nobody wakes"


@pytest.fixture
async def faulty_store(
    client: Any, table_name: str
) -> AsyncIterator[tuple[LockStore, FaultyClient]]:
    proxy = FaultyClient(client)
    store = LockStore(proxy, table_name)
    await store.create_table()
    await store.add_item("a")
    yield store, proxy
    await store.aclose()








async def test_a_slow_listener_does_not_cost_the_lease(
    faulty_store: tuple[LockStore, FaultyClient],
) -> None:
    # CONTRACT: "A slow or failing subscriber never delays a renewal." A sync listener runs
    # on the loop (call_soon): one that blocks 1.9 s stalls the heartbeat of a 2 s lease.
    import time

    from aiolease import LeaseRenewed

    store, _ = faulty_store
    locker = Locker(store)
    renewals = 0
    enough = asyncio.Event()

    def slow(event: LeaseEvent) -> None:
        nonlocal renewals
        if isinstance(event, LeaseRenewed):
            renewals += 1
            if renewals == 1:
                time.sleep(1.9)
            if renewals == 3:
                enough.set()

    locker.add_listener(slow)
    async with locker.lease(LeaseRequest("w1", 2), heartbeat_period=0.2):
        await asyncio.wait_for(enough.wait(), WAIT)
