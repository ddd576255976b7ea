"""Section "balancing": ``session.serve()`` workers sharing a pool (docs/balancing.md).

- race: 20 workers start serving a fresh pool of 200 items at once; acquisition writes per
  obtained lease until every item is held and the counts differ by at most one (endgame
  included: the last items are taken while fewer are left than workers race).
- convergence: 8 workers on 200 items; a 9th joins, then one leaves gracefully, then one is
  frozen (its calls hang: a SIGKILL as far as the table knows); the time until max-min <= 1,
  in wait periods, items per worker sampled every 50 ms (the chart), the handoff latency
  (an item released by one worker to its next holder) and the overlaps found by the
  history checker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

from aiolease import Lease, LeaseRequest, Locker, LockStore, draining
from aiolease.testing.history import Hold, check_exclusion

from ._common import CountingClient, open_client, ratio, summary, table_name

_FREE = "REMOVE #l"  # the start of a release's UpdateExpression
_SESSION = "aiolease-session:"


class _Frozen:
    """Delegates to a client; every call hangs once ``frozen`` is set."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.frozen = False

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.client, name)
        if name.startswith("_") or name == "meta" or not callable(target):
            return target

        async def call(**kwargs: Any) -> Any:
            if self.frozen:
                await asyncio.Event().wait()
            return await target(**kwargs)

        return call


class _Pool:
    def __init__(self, client: Any, table: str, wait: float, duration: float) -> None:
        self.client, self.table, self.wait, self.duration = client, table, wait, duration
        self.holding: dict[str, set[str]] = {}
        self.holds: list[Hold] = []
        self.released_at: dict[str, float] = {}
        self.handoffs: list[float] = []
        self.obtained = 0
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.frozen: dict[str, _Frozen] = {}
        self.samples: list[tuple[float, dict[str, int]]] = []

    def start(self, name: str) -> None:
        self.holding[name] = set()
        self.frozen[name] = _Frozen(self.client)
        self.tasks[name] = asyncio.create_task(self._worker(name))

    async def _worker(self, name: str) -> None:
        store = LockStore(self.frozen[name], self.table)  # type: ignore[arg-type]
        locker = Locker(store, max_clock_skew=0.2)

        async def work(lease: Lease) -> None:
            start = time.monotonic()
            self.obtained += 1
            if (released := self.released_at.pop(lease.lease_id, None)) is not None:
                self.handoffs.append(start - released)
            self.holding[name].add(lease.lease_id)
            try:
                await draining().wait()
            finally:
                self.holding[name].discard(lease.lease_id)
                end = time.monotonic()
                if not self.frozen[name].frozen:
                    self.released_at[lease.lease_id] = end
                self.holds.append(Hold(lease.lease_id, name, lease.fencing_token, start, end))

        try:
            async with locker.session(LeaseRequest(name, self.duration)) as session:
                await session.serve(work, wait_period=self.wait)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(store.aclose(), 1.0)

    async def stop(self, name: str) -> None:
        task = self.tasks.pop(name)
        task.cancel()
        with contextlib.suppress(BaseException):
            await task

    def counts(self) -> list[int]:
        return [len(self.holding[n]) for n in self.tasks]

    def balanced(self, items: int) -> bool:
        counts = self.counts()
        return sum(counts) == items and max(counts) - min(counts) <= 1

    async def until_balanced(self, items: int, limit: float) -> float:
        began = time.monotonic()
        while not self.balanced(items):  # checked every 10 ms: a sample, not a sync
            if time.monotonic() - began > limit:
                raise AssertionError(f"not balanced within {limit} s: {self.counts()}")
            await asyncio.sleep(0.01)
        if not self.balanced(items):
            raise AssertionError(f"not balanced within {limit} s: {self.counts()}")
        return time.monotonic() - began

    async def sample(self, began: float) -> None:
        while True:
            self.samples.append(
                (time.monotonic() - began, {n: len(self.holding[n]) for n in self.tasks})
            )
            await asyncio.sleep(0.05)


async def _fresh(raw: Any, prefix: str, items: int) -> str:
    setup = LockStore(raw, table_name(prefix))
    await setup.create_table()
    await asyncio.gather(*(setup.add_item(f"item-{i:04d}") for i in range(items)))
    return setup.table_name


async def race(endpoint_url: str, workers: int = 20, items: int = 200) -> dict[str, Any]:
    """Acquisition writes per obtained lease while ``workers`` fill a fresh pool."""
    async with open_client(endpoint_url) as raw:
        table = await _fresh(raw, "balance-race", items)
        attempts = Counter[str]()

        def on_update(kwargs: dict[str, Any], ok: bool) -> None:
            key = next(iter(kwargs["Key"].values()))["S"]
            if key.startswith(_SESSION) or kwargs["UpdateExpression"].startswith(_FREE):
                return
            attempts["ok" if ok else "failed"] += 1

        client = CountingClient(raw, on_update=on_update)
        pool = _Pool(client, table, wait=1.0, duration=10.0)
        for w in range(workers):
            pool.start(f"w{w:02d}")
        took = await pool.until_balanced(items, 30.0)
        scans, obtained = client.calls["scan"], pool.obtained
        writes = attempts["ok"] + attempts["failed"]
        failed = attempts["failed"]
        for name in list(pool.tasks):  # (the stops' drains and takeovers are not counted)
            await pool.stop(name)
    return {
        "workers": workers,
        "items": items,
        "obtained": obtained,
        "acquire_writes": writes,
        "failed_writes": failed,
        "writes_per_lease": ratio(writes, obtained),
        "scans": scans,
        "seconds_to_balanced": took,
        "overlaps": len(check_exclusion(pool.holds)),
    }


async def convergence(
    endpoint_url: str, workers: int = 8, items: int = 200, wait: float = 1.0
) -> dict[str, Any]:
    """Join, graceful leave and a frozen worker: time to max-min <= 1, in wait periods."""
    duration = 6 * wait
    async with open_client(endpoint_url) as raw:
        table = await _fresh(raw, "balance-conv", items)
        pool = _Pool(raw, table, wait=wait, duration=duration)
        began = time.monotonic()
        sampler = asyncio.create_task(pool.sample(began))
        for w in range(workers):
            pool.start(f"w{w}")
        phases: dict[str, float] = {"start": await pool.until_balanced(items, 30.0)}
        pool.handoffs.clear()
        pool.start("joiner")
        phases["join"] = await pool.until_balanced(items, 30.0)
        await asyncio.sleep(2 * wait)
        await pool.stop("w0")
        phases["graceful_leave"] = await pool.until_balanced(items, 30.0)
        await asyncio.sleep(2 * wait)
        pool.frozen["w1"].frozen = True
        pool.tasks["w1"].cancel()  # its calls hang; the table sees it die
        del pool.tasks["w1"]
        phases["frozen_worker"] = await pool.until_balanced(items, 30.0)
        await asyncio.sleep(2 * wait)
        sampler.cancel()
        for name in list(pool.tasks):
            await pool.stop(name)
    return {
        "workers": workers,
        "items": items,
        "wait_period_s": wait,
        "session_duration_s": duration,
        "seconds": phases,
        "wait_periods": {k: v / wait for k, v in phases.items()},
        "handoff_latency_s": summary(pool.handoffs),
        "overlaps": len(check_exclusion(pool.holds)),
        "samples": pool.samples,
    }


async def balancing(endpoint_url: str) -> dict[str, Any]:
    # A 2 s wait period: at 1 s, 9 workers scanning 200 rows saturate the moto server here
    # (one Python process on 2 shared cores), and the periods stretch.
    race_figures = await race(endpoint_url)
    return {"race": race_figures, "convergence": await convergence(endpoint_url, wait=2.0)}


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(figure, aiolease, reference, ratio, target, met) rows of the balancing section."""
    found = results.get("balancing")
    if not found:
        return []
    r, c = found["race"], found["convergence"]
    periods = c["wait_periods"]
    return [
        (
            f"serve(): acquisition writes per obtained lease, {r['workers']} workers x "
            f"{r['items']} items (endgame included)",
            f"{r['writes_per_lease']:.3f}",
            "1.49",
            f"{ratio(r['writes_per_lease'], 1.49):.2f}",
            "<= 1.2",
            "yes" if r["writes_per_lease"] <= 1.2 else "NO",
        ),
        *(
            (
                f"serve(): {c['workers']} workers x {c['items']} items, max-min <= 1 after {k}",
                f"{periods[k]:.1f} wait periods",
                "-",
                "-",
                "<= 3",
                "yes" if periods[k] <= 3 else "NO",
            )
            for k in ("join", "graceful_leave")
        ),
        (
            f"serve(): a frozen worker's items re-balanced (session {c['session_duration_s']:g} s, "
            f"wait {c['wait_period_s']:g} s)",
            f"{c['seconds']['frozen_worker']:.2f} s",
            "-",
            "-",
            "-",
            "-",
        ),
        (
            "serve(): handoff latency, release to the next holder, median (p99)",
            f"{c['handoff_latency_s']['median'] * 1000:.0f} ms "
            f"({c['handoff_latency_s']['p99'] * 1000:.0f} ms)",
            "-",
            "-",
            "-",
            "-",
        ),
        (
            "serve(): overlaps found by the history checker",
            str(r["overlaps"] + c["overlaps"]),
            "0",
            "-",
            "0",
            "yes" if r["overlaps"] + c["overlaps"] == 0 else "NO",
        ),
    ]
