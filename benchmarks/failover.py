"""Section 4: failover. A holder process is SIGKILLed, or releases: how soon does a waiter hold?

``python -m benchmarks.failover ENDPOINT TABLE ITEM DURATION`` is the holder process: it
holds ITEM under ``locker.lease`` and prints ``held``/``renewed`` lines with its
``time.monotonic()`` (one clock for all processes on Linux), until it is killed.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from typing import Any

from aiolease import LeaseRequest, Locker, LockStore

from ._common import CountingClient, open_client, ratio, summary, table_name


async def _holder(endpoint_url: str, table: str, item: str, duration: float) -> None:
    def on_update(kwargs: dict[str, Any], ok: bool) -> None:
        if ok and kwargs.get("ConditionExpression", "").startswith("#l = :l AND #t"):
            print(f"renewed {time.monotonic()}", flush=True)

    async with open_client(endpoint_url) as raw:
        store = LockStore(CountingClient(raw, on_update=on_update), table)
        locker = Locker(store, max_clock_skew=0.5)
        async with locker.lease(LeaseRequest(f"holder-{os.getpid()}", duration), item):
            print(f"held {time.monotonic()}", flush=True)
            await asyncio.Event().wait()  # until SIGKILL


async def _wait_for(
    store: LockStore, item: str, lessee: str, duration: float, wait: float
) -> float:
    """Enter a lease scope on ``item`` (polling every ``wait`` s); the monotonic time it held."""
    locker = Locker(store, max_clock_skew=0.5)
    async with locker.lease(LeaseRequest(lessee, duration), item, wait_period=wait):
        held = time.monotonic()
    return held


async def crash(
    endpoint_url: str, repeats: int, *, duration: float, skew: float, wait: float
) -> dict[str, Any]:
    """SIGKILL a holder process at a random point of its heartbeat cycle; time to takeover."""
    async with open_client(endpoint_url) as client:
        store = LockStore(client, table_name("crash"))
        await store.create_table()
        items = [f"item-{i}" for i in range(repeats)]
        await asyncio.gather(*(store.add_item(i) for i in items))

        async def one(item: str) -> dict[str, float]:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "benchmarks.failover",
                endpoint_url,
                store.table_name,
                item,
                str(duration),
                stdout=asyncio.subprocess.PIPE,
            )
            assert process.stdout is not None
            last_write = 0.0
            held = asyncio.Event()

            async def read() -> None:
                nonlocal last_write
                assert process.stdout is not None
                async for line in process.stdout:
                    word, _, stamp = line.decode().partition(" ")
                    last_write = float(stamp)
                    if word == "held":
                        held.set()

            reader = asyncio.create_task(read())
            await asyncio.wait_for(held.wait(), 60)
            # Kill at a random phase of the heartbeat, after at least one renewal.
            await asyncio.sleep(duration / 3 * (1 + random.random()))
            process.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await process.wait()
            await reader
            taken = await _wait_for(store, item, f"waiter-{item}", duration, wait)
            return {
                "takeover_s": taken - killed,
                "since_last_write_s": taken - last_write,
                "killed_after_write_s": killed - last_write,
            }

        runs = await asyncio.gather(*(one(item) for item in items))
    takeover = [r["takeover_s"] for r in runs]
    bound = duration + skew
    stats = summary(takeover)
    return {
        "duration_s": duration,
        "max_clock_skew_s": skew,
        "wait_period_s": wait,
        "takeover_s": stats,
        "ratio_median": ratio(stats["median"], bound),
        "ratio_max": ratio(stats["max"], bound),
        "target": 1.1,
        "runs": runs,
    }


async def release(
    endpoint_url: str, repeats: int, *, duration: float, wait: float
) -> dict[str, Any]:
    """A holder leaves its ``async with`` (releasing); a waiter already polling takes over."""
    async with (
        open_client(endpoint_url) as holder_client,
        open_client(endpoint_url) as waiter_client,
    ):
        holder_store = LockStore(holder_client, table_name("release"))
        await holder_store.create_table()
        waiter_store = LockStore(waiter_client, holder_store.table_name)
        items = [f"item-{i}" for i in range(repeats)]
        await asyncio.gather(*(holder_store.add_item(i) for i in items))

        async def one(item: str) -> float:
            locker = Locker(holder_store, max_clock_skew=0.5)
            async with locker.lease(LeaseRequest(f"holder-{item}", duration), item):
                waiter = asyncio.create_task(
                    _wait_for(waiter_store, item, f"waiter-{item}", duration, wait)
                )
                await asyncio.sleep(wait * (1 + random.random()))  # a random polling phase
            released = time.monotonic()
            return await waiter - released

        takeover = await asyncio.gather(*(one(item) for item in items))
    stats = summary(takeover)
    return {
        "wait_period_s": wait,
        "takeover_s": stats,
        "ratio_median": ratio(stats["median"], wait),
        "ratio_max": ratio(stats["max"], wait),
        "target": 1.0,
        "runs": list(takeover),
    }


if __name__ == "__main__":
    url, table, item, seconds = sys.argv[1:5]
    asyncio.run(_holder(url, table, item, float(seconds)))
