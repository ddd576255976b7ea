"""Found by the review of session.serve(): one item's failing work must not stop the others,
and a lease error raised by work itself must not vanish. Both failed before the fix."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

import aiolease
from aiolease import Lease, LeaseRequest, Locker, LockStore

WAIT = 0.2
DURATION = 2.0


async def _setup(client: Any, table_name: str, n: int) -> LockStore:
    store = LockStore(client, table_name)
    await store.create_table()
    for i in range(n):
        await store.add_item(f"item-{i}")
    return store


async def test_one_works_exception_does_not_cancel_the_other_items_work(
    client: Any, table_name: str
) -> None:
    """A bug in one item's work must not abort every other item's work (no drain) and
    end serve() for the whole worker."""
    store = await _setup(client, table_name, 3)
    locker = Locker(store, max_clock_skew=0.2)
    started: set[str] = set()
    cancelled_without_drain: list[str] = []
    all_started = asyncio.Event()

    async def work(lease: Lease) -> None:
        started.add(lease.lease_id)
        if len(started) == 3:
            all_started.set()
        await all_started.wait()
        if lease.lease_id == "item-0":
            raise ValueError("bug in one item's work")
        try:
            await aiolease.draining().wait()
        except asyncio.CancelledError:
            if not aiolease.draining().is_set():
                cancelled_without_drain.append(lease.lease_id)
            raise

    async with locker.session(LeaseRequest("w", DURATION)) as session:
        task = asyncio.create_task(session.serve(work, wait_period=WAIT))
        await asyncio.wait_for(all_started.wait(), 3.0)
        await asyncio.sleep(3 * WAIT)
        alive = not task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, BaseExceptionGroup):
            await task
    await store.aclose()
    assert cancelled_without_drain == [], (
        f"{cancelled_without_drain} cancelled abruptly because item-0's work raised"
    )
    assert alive, "serve() ended because one item's work raised"


async def test_lease_errors_raised_by_work_itself_are_not_swallowed_silently(
    client: Any, table_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """_hold's except LeaseNotObtainedError wraps work too: a LeaseNotObtainedError that work
    raises (its own lock attempt timing out) is dropped with no log at all."""
    store = await _setup(client, table_name, 1)
    locker = Locker(store, max_clock_skew=0.2)
    calls = 0
    raised = asyncio.Event()

    async def work(lease: Lease) -> None:
        nonlocal calls
        calls += 1
        raised.set()
        raise aiolease.LeaseNotObtainedError("work's own lock attempt timed out")

    caplog.set_level(logging.DEBUG, logger="aiolease")
    async with locker.session(LeaseRequest("w", DURATION)) as session:
        task = asyncio.create_task(session.serve(work, wait_period=WAIT))
        await asyncio.wait_for(raised.wait(), 3.0)
        await asyncio.sleep(2 * WAIT)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, BaseExceptionGroup, Exception):
            await task
    await store.aclose()
    logged = [r for r in caplog.records if "timed out" in r.getMessage() or r.exc_info]
    surfaced = not task.cancelled() and task.exception() is not None
    assert logged or surfaced, (
        f"work raised {calls} times; every exception was swallowed without a trace"
    )
