"""Section 2b: the server's saturated write rate, and renewals while holding N leases."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiolease import LeaseLostError, LeaseRequest, Locker, LockStore

from ._common import (
    CountingClient,
    bare_update,
    open_client,
    percentile,
    ratio,
    renewals_in_window,
    summary,
    table_name,
)


async def saturated_write_rate(
    endpoint_url: str, seconds: float, levels: tuple[int, ...] = (8, 32, 64)
) -> dict[str, Any]:
    """Bare UpdateItems from ``level`` concurrent tasks for ``seconds``; the best rate wins."""
    async with open_client(endpoint_url) as client:
        store = LockStore(client, table_name("saturate"))
        await store.create_table()
        await asyncio.gather(*(store.add_item(f"item-{i:05d}") for i in range(max(levels))))
        rates: dict[str, float] = {}
        for level in levels:
            done = 0

            async def worker(i: int, stop: float) -> None:
                nonlocal done
                while time.monotonic() < stop:
                    await bare_update(client, store.table_name, f"item-{i:05d}")
                    done += 1

            t0 = time.monotonic()
            c0 = time.process_time()
            stop = time.monotonic() + seconds
            await asyncio.gather(*(worker(i, stop) for i in range(level)))
            elapsed = time.monotonic() - t0
            rates[str(level)] = done / elapsed
            rates[f"{level}_cpu_per_call_s"] = (time.process_time() - c0) / max(done, 1)
    best = max(v for k, v in rates.items() if k.isdigit())
    return {"writes_per_s": best, "by_concurrency": rates}


# Acquisitions in flight at once while a process takes its N leases.
_ACQUIRING = 8


async def _bare_rate(client: Any, table: str, items: int, seconds: float, level: int = 32) -> float:
    """Bare UpdateItems per second from ``level`` concurrent tasks."""
    done = 0

    async def worker(i: int, stop: float) -> None:
        nonlocal done
        while time.monotonic() < stop:
            await bare_update(client, table, f"item-{i % items:05d}")
            done += 1

    t0 = time.monotonic()
    await asyncio.gather(*(worker(i, t0 + seconds) for i in range(level)))
    return done / (time.monotonic() - t0)


class _Renewals:
    """Timestamps every successful renewal per item, seen through the counting client."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}

    def __call__(self, kwargs: dict[str, Any], ok: bool) -> None:
        if ok and kwargs.get("ConditionExpression", "").startswith("#l = :l AND #t"):
            key = kwargs["Key"]["LeaseID"]["S"]
            self.times.setdefault(key, []).append(time.monotonic())


async def hold_many(
    endpoint_url: str,
    table: str,
    n: int,
    *,
    period: float,
    duration: float,
    window: float,
) -> dict[str, Any]:
    """One process holds ``n`` leases, each renewed by ``locker.heartbeat(lease, period)``."""
    renewals = _Renewals()
    async with open_client(endpoint_url) as raw:
        client = CountingClient(raw, on_update=renewals)
        store = LockStore(client, table)
        locker = Locker(store, max_clock_skew=0.5)
        request = LeaseRequest("bench-holder", duration)
        # A ramp-up: at most _ACQUIRING acquisitions in flight. Each lease's clock starts when
        # its write is sent, so the heartbeats stay spread as the acquisitions were. (One
        # gather of all N pins every clock to the start of the burst: see docs/performance.md.)
        ramp = asyncio.Semaphore(_ACQUIRING)

        async def acquire(i: int) -> Any:
            async with ramp:
                return await store.acquire(f"item-{i:05d}", request)

        leases = await asyncio.gather(*(acquire(i) for i in range(n)))
        lost: list[str] = []

        async def keep(lease: Any) -> None:
            try:
                await locker.heartbeat(lease, period)
            except LeaseLostError as exc:
                lost.append(exc.reason or str(exc))

        tasks = [asyncio.create_task(keep(lease)) for lease in leases]
        await asyncio.sleep(period)  # the first renewals of the acquisition burst
        start = time.monotonic()
        c0 = time.process_time()
        await asyncio.sleep(window)
        end = time.monotonic()
        cpu = time.process_time() - c0
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # The machine is shared: measure the server's capacity again, right after the window.
        capacity = await _bare_rate(raw, table, n, min(window, 3.0))
        await asyncio.gather(*(store.release(lease) for lease in leases), return_exceptions=True)
    count = 0
    intervals: list[float] = []
    for lease in leases:
        renewed, gaps = renewals_in_window(renewals.times.get(lease.lease_id, []), start, end)
        count += renewed
        intervals.extend(gaps)
    intervals.sort()
    needed = n / period
    achieved = count / (end - start)
    return {
        "n": n,
        "window_s": window,
        "needed_per_s": needed,
        "achieved_per_s": achieved,
        "achieved_over_needed": ratio(achieved, needed),
        "lost": len(lost),
        "lost_reasons": sorted(set(lost)),
        "saturated_after_per_s": capacity,
        "achieved_over_saturated_after": ratio(achieved, capacity),
        "interval_s": summary(intervals),
        "interval_p99_over_period": ratio(percentile(intervals, 99), period),
        "cpu_per_renewal_s": ratio(cpu, count),
    }


async def renewal_throughput(
    endpoint_url: str,
    saturated: float,
    *,
    fractions: list[float],
    long_fraction: float,
    window: float,
    long_window: float,
    period: float,
    duration: float,
    peer_fractions: list[float],
    peer_window: float,
    log: Any,
) -> dict[str, Any]:
    """Step N up (as fractions of the saturated rate) until saturation or a lost lease."""
    from . import peer

    steps: list[dict[str, Any]] = []
    most = max(round(f * saturated * period) for f in fractions)
    async with open_client(endpoint_url) as client:
        store = LockStore(client, table_name("hold"))
        await store.create_table()
        await asyncio.gather(*(store.add_item(f"item-{i:05d}") for i in range(most)))
    table = store.table_name
    for fraction in fractions:
        n = round(fraction * saturated * period)
        step_window = long_window if fraction == long_fraction else window
        result = await hold_many(
            endpoint_url, table, n, period=period, duration=duration, window=step_window
        )
        result["fraction_of_capacity"] = fraction
        result["achieved_over_saturated"] = ratio(result["achieved_per_s"], saturated)
        steps.append(result)
        log(
            f"  aiolease N={n:4d} ({fraction:.1f}x capacity): "
            f"{result['achieved_per_s']:6.1f}/{result['needed_per_s']:6.1f} renewals/s, "
            f"lost {result['lost']}, interval p99 {result['interval_s'].get('p99', 0):.2f} s"
        )
        if result["lost"]:
            break
    peer_steps: list[dict[str, Any]] = []
    if peer.available():
        for fraction in peer_fractions:
            n = round(fraction * saturated * period)
            result = await asyncio.to_thread(
                peer.peer_throughput,
                endpoint_url,
                n,
                period=period,
                duration=duration,
                window=peer_window,
            )
            result["fraction_of_capacity"] = fraction
            result["achieved_over_saturated"] = ratio(result["achieved_per_s"], saturated)
            peer_steps.append(result)
            log(
                f"  {peer.PEER} N={n:4d} ({fraction:.1f}x capacity): "
                f"{result['achieved_per_s']:6.1f}/{result['needed_per_s']:6.1f} renewals/s, "
                f"lost {result['lost']}, interval p99 {result['interval_s'].get('p99', 0):.2f} s"
            )
    return {
        "period_s": period,
        "duration_s": duration,
        "saturated_writes_per_s": saturated,
        "aiolease": steps,
        "peer": peer_steps,
    }
