"""Section "balancing": ``session.serve()`` workers sharing a pool (docs/balancing.md).

- race: 20 workers start serving a fresh pool of 200 items at once; acquisition writes per
  obtained lease until every item is held and the counts differ by at most one (endgame
  included: the last items are taken while fewer are left than workers race).
- convergence: 8 workers on 200 items; a 9th joins, then one leaves gracefully, then one is
  frozen (its calls hang: a SIGKILL as far as the table knows); the time until max-min <= 1,
  in wait periods, items per worker sampled every 50 ms (the chart), the handoff latency
  (an item released by one worker to its next holder), the overlaps found by the history
  checker, and first the wall time of one pool read (a consistent scan) on the idle server.
- on_request: handoff on request (docs/balancing.md). "join": 8 workers balanced on 200
  items, a 9th joins and finds nothing free, so it asks; "pinned": 40 items of which 16
  are held by single leases (no session, so no share: never free to a worker), 3 workers
  share the other 24 below their share of 40, and a 4th joins: it can get items only by
  asking. Each phase is 4 rounds of a newcomer joining (counted) and leaving again (not
  counted). Per phase: request to new holder latency (``HandoffCompleted.waited``), the
  requests and answers, acquisition writes (and handoff writes) per obtained lease, and
  the overlaps found by the history checker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

from aiolease import (
    HandoffCompleted,
    HandoffEvent,
    HandoffRequested,
    Lease,
    LeaseEvent,
    LeaseRequest,
    Locker,
    LockStore,
    SessionLost,
    draining,
)
from aiolease.testing.history import Hold, check_exclusion

from ._common import CountingClient, open_client, ratio, summary, table_name

_FREE = "REMOVE #l"  # the start of a release's UpdateExpression
_HANDOFF = ("SET #h = :r", "REMOVE #h, #hu")  # a handoff request, its withdrawal
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
        self.events: list[tuple[str, float, HandoffEvent]] = []  # (worker, monotonic, event)
        self.sessions_lost = 0

    def start(self, name: str) -> None:
        self.holding[name] = set()
        self.frozen[name] = _Frozen(self.client)
        self.tasks[name] = asyncio.create_task(self._worker(name))

    async def _worker(self, name: str) -> None:
        store = LockStore(self.frozen[name], self.table)  # type: ignore[arg-type]
        locker = Locker(store, max_clock_skew=0.2)

        def heard(event: LeaseEvent) -> None:
            if isinstance(event, HandoffEvent):
                self.events.append((name, time.monotonic(), event))
            elif isinstance(event, SessionLost) and not self.frozen[name].frozen:
                self.sessions_lost += 1

        locker.add_listener(heard)

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
        # Sessions lost during the race or the stops (one by one, each worker's items taken
        # by the others); on moto most runs lose some, cause open (docs/performance.md).
        "sessions_lost": pool.sessions_lost,
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


async def _read_cost(raw: Any, table: str, reads: int = 20) -> dict[str, float]:
    """Wall time of one balancer's pool read (one consistent scan) on the idle server: what
    every worker pays each wait period, and what saturates a slow server first."""
    store = LockStore(raw, table)
    await store.read_pool()  # (connection set up, not counted)
    took = []
    for _ in range(reads):
        start = time.perf_counter()
        await store.read_pool()
        took.append(time.perf_counter() - start)
    return summary(took)


async def convergence(
    endpoint_url: str, workers: int = 8, items: int = 200, wait: float = 1.0
) -> dict[str, Any]:
    """Join, graceful leave and a frozen worker: time to max-min <= 1, in wait periods."""
    duration = 6 * wait
    async with open_client(endpoint_url) as raw:
        table = await _fresh(raw, "balance-conv", items)
        reads = await _read_cost(raw, table)
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
        "pool_read_s": reads,
        "overlaps": len(check_exclusion(pool.holds)),
        "samples": pool.samples,
    }


class _Writes:
    """Item-row writes by kind (acquisitions, handoff requests and withdrawals), from a
    counting client; releases and session-row writes are left out."""

    def __init__(self) -> None:
        self.counts = Counter[str]()

    def __call__(self, kwargs: dict[str, Any], ok: bool) -> None:
        key = next(iter(kwargs["Key"].values()))["S"]
        expression = kwargs["UpdateExpression"]
        if key.startswith(_SESSION) or expression.startswith(_FREE):
            return
        kind = "handoff" if expression.startswith(_HANDOFF) else "acquire"
        self.counts[f"{kind}_{'ok' if ok else 'failed'}"] += 1


async def _handoff_phase(
    pool: _Pool, writes: _Writes, free: int, limit: float, rounds: int
) -> dict[str, Any]:
    """``rounds`` times: a newcomer starts on the balanced pool (figures counted until
    balanced again, then 3 quiet wait periods: answers and withdrawals land late), and is
    stopped again (not counted) until the pool is balanced without it."""
    counts, got, took, events = Counter[str](), 0, [], []
    for n in range(rounds):
        before, obtained, seen = Counter(writes.counts), pool.obtained, len(pool.events)
        pool.start(f"joiner{n}")
        took.append(await pool.until_balanced(free, limit))
        await asyncio.sleep(3 * pool.wait)
        counts += writes.counts - before
        got += pool.obtained - obtained
        events += pool.events[seen:]
        await pool.stop(f"joiner{n}")
        await pool.until_balanced(free, limit)
        await asyncio.sleep(2 * pool.wait)
    acquire = counts["acquire_ok"] + counts["acquire_failed"]
    handoff = counts["handoff_ok"] + counts["handoff_failed"]
    completed = [e for _, _, e in events if isinstance(e, HandoffCompleted)]
    asked = {(e.lease_id, e.requester): t for _, t, e in events if isinstance(e, HandoffRequested)}
    kinds = Counter(type(e).__name__ for _, _, e in events)
    reasons = Counter(getattr(e, "reason", None) for _, _, e in events)
    reasons.pop(None, None)
    return {
        "rounds": rounds,
        "seconds_to_balanced": summary(took),
        "wait_periods_to_balanced": max(took) / pool.wait,  # the slowest round
        "obtained": got,
        "obtained_by_request": len(completed),
        "requests": kinds["HandoffRequested"],
        "events": dict(kinds),
        "withdrawn": dict(reasons),
        "latency_s": summary(e.waited for e in completed),
        # The same from the events' own times (the requester's emit to its take's emit).
        "latency_events_s": summary(
            t - asked[(e.lease_id, e.requester)]
            for _, t, e in events
            if isinstance(e, HandoffCompleted) and (e.lease_id, e.requester) in asked
        ),
        "acquire_writes": acquire,
        "acquire_refused": counts["acquire_failed"],
        "handoff_writes": handoff,
        "handoff_refused": counts["handoff_failed"],
        "writes_per_lease": ratio(acquire, got),
        "all_writes_per_lease": ratio(acquire + handoff, got),
    }


async def on_request(endpoint_url: str, wait: float = 2.0, rounds: int = 4) -> dict[str, Any]:
    """Handoff on request: a 9th worker joining 8 x 200, and a 4th joining 3 workers that
    share 24 items (16 of the 40 pinned by single leases): request to new holder."""
    duration = 6 * wait
    result: dict[str, Any] = {"wait_period_s": wait, "session_duration_s": duration}
    async with open_client(endpoint_url) as raw:
        writes = _Writes()
        client = CountingClient(raw, on_update=writes)
        table = await _fresh(raw, "balance-ask", 200)
        pool = _Pool(client, table, wait=wait, duration=duration)
        for w in range(8):
            pool.start(f"w{w}")
        await pool.until_balanced(200, 30.0)
        await asyncio.sleep(2 * wait)  # settled: no request standing from the start
        result["join"] = {"workers": 8, "items": 200}
        result["join"].update(await _handoff_phase(pool, writes, 200, 30.0, rounds))
        for name in list(pool.tasks):
            await pool.stop(name)
        result["join"]["overlaps"] = len(check_exclusion(pool.holds))

        table = await _fresh(raw, "balance-pinned", 40)
        pinned = [f"item-{i:04d}" for i in range(16)]
        outside = LockStore(raw, table)  # not counted: its renewals are no worker's
        locker = Locker(outside, max_clock_skew=0.2)
        async with contextlib.AsyncExitStack() as stack:
            for item in pinned:
                await stack.enter_async_context(
                    locker.lease(LeaseRequest("outsider", duration), item)
                )
            pool = _Pool(client, table, wait=wait, duration=duration)
            for w in range(3):
                pool.start(f"p{w}")
            await pool.until_balanced(24, 60.0)
            await asyncio.sleep(2 * wait)
            result["pinned"] = {"workers": 3, "items": 40, "pinned": len(pinned)}
            result["pinned"].update(await _handoff_phase(pool, writes, 24, 60.0, rounds))
            for name in list(pool.tasks):
                await pool.stop(name)
        result["pinned"]["overlaps"] = len(check_exclusion(pool.holds))
    return result


async def balancing(endpoint_url: str) -> dict[str, Any]:
    # A 2 s wait period: at 1 s, 9 workers scanning 200 rows saturate the moto server here
    # (one Python process on 2 shared cores), and the periods stretch.
    race_figures = await race(endpoint_url)
    return {
        "race": race_figures,
        "convergence": await convergence(endpoint_url, wait=2.0),
        "on_request": await on_request(endpoint_url, wait=2.0),
    }


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(figure, aiolease, reference, ratio, target, met) rows of the balancing section."""
    found = results.get("balancing")
    if not found:
        return []
    r, c = found["race"], found["convergence"]
    periods = c["wait_periods"]
    asks = found.get("on_request", {})
    heartbeat = c["session_duration_s"] / 3
    overlaps = (
        r["overlaps"]
        + c["overlaps"]
        + sum(p["overlaps"] for p in asks.values() if isinstance(p, dict))
    )
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
        *_read_rows(c),
        (
            "serve(): handoff latency, release to the next holder, median (p99)",
            f"{c['handoff_latency_s']['median'] * 1000:.0f} ms "
            f"({c['handoff_latency_s']['p99'] * 1000:.0f} ms)",
            "-",
            "-",
            "-",
            "-",
        ),
        *(
            row
            for phase in ("join", "pinned")
            if phase in asks
            for row in _ask_rows(phase, asks[phase], heartbeat)
        ),
        (
            f"serve(): sessions lost in the race of {r['workers']} workers and their stops",
            str(r.get("sessions_lost", "-")),
            "-",
            "-",
            "0",
            "yes" if r.get("sessions_lost", 0) == 0 else "NO",
        ),
        (
            "serve(): overlaps found by the history checker",
            str(overlaps),
            "0",
            "-",
            "0",
            "yes" if overlaps == 0 else "NO",
        ),
    ]


def _read_rows(c: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """The pool read's cost, when measured (results of older runs lack it)."""
    if "pool_read_s" not in c:
        return []
    read = c["pool_read_s"]
    return [
        (
            f"serve(): one pool read ({c['items']} items, idle server), median (p99)",
            f"{read['median'] * 1000:.0f} ms ({read['p99'] * 1000:.0f} ms)",
            "-",
            "-",
            "-",
            "-",
        )
    ]


def _ask_rows(
    phase: str, p: dict[str, Any], heartbeat: float
) -> list[tuple[str, str, str, str, str, str]]:
    """The rows of one handoff-on-request phase."""
    what = (
        f"a 9th worker joins {p['workers']} x {p['items']}"
        if phase == "join"
        else f"a 4th worker joins {p['workers']} sharing {p['items'] - p['pinned']} of "
        f"{p['items']} ({p['pinned']} pinned)"
    )
    lat = p["latency_s"]
    if lat["count"]:
        latency = (
            f"{lat['median']:.2f} s ({lat['p99']:.2f} s), "
            f"{lat['count']} of {p['requests']} requests"
        )
        met = "yes" if lat["median"] < heartbeat else "NO"
    else:
        latency, met = f"none completed, {p['requests']} requests", "-"
    return [
        (
            f"serve(): handoff on request, {what}: request to new holder, median (p99)",
            latency,
            "-",
            "-",
            f"median < {heartbeat:g} s",
            met,
        ),
        (
            f"serve(): {what}: acquisition writes per obtained lease (with handoff writes)",
            f"{p['writes_per_lease']:.3f} ({p['all_writes_per_lease']:.3f}), "
            f"{p['obtained']} obtained, {p['obtained_by_request']} by request",
            "-",
            "-",
            "<= 1.2",
            "yes" if p["writes_per_lease"] <= 1.2 else "NO",
        ),
        (
            f"serve(): {what}: max-min <= 1",
            f"{p['wait_periods_to_balanced']:.1f} wait periods (slowest of {p['rounds']})",
            "-",
            "-",
            "<= 3",
            "yes" if p["wait_periods_to_balanced"] <= 3 else "NO",
        ),
    ]
