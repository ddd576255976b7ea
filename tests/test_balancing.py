"""Fair-share serving on sessions: ``session.serve(work)`` (docs/balancing.md).

Several workers as tasks, each with its own store and locker on one moto table; short
sessions and wait periods so that joins, leaves and drains happen within a test. Every
run's holds go through the history checker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import aiolease
from aiolease import Lease, LeaseRequest, Locker, LockStore
from aiolease._balance import fair_share, plan

from .history import Hold, check_history

ROOT = str(Path(__file__).resolve().parent.parent)  # for the subprocess's imports
WAIT = 0.2  # the wait period of every worker here (seconds)
DURATION = 2.0  # session duration


# -- the rules, pure ---------------------------------------------------------------------------


@pytest.mark.parametrize(("items", "members"), [(12, 5), (200, 8), (3, 7), (200, 20), (0, 3)])
def test_shares_differ_by_at_most_one_and_add_up_to_the_pool(items: int, members: int) -> None:
    ids = [f"s{n}" for n in range(members)]
    shares = [fair_share(items, ids, m) for m in ids]
    assert sum(shares) == items, shares
    assert max(shares) - min(shares) <= 1, shares


def test_the_plan_gives_each_member_its_share_and_every_item_once() -> None:
    members = [f"aiolease-session:w{n}:x" for n in range(20)]
    items = [f"item-{n:03}" for n in range(200)]
    assigned = plan(items, members)
    assert sorted(assigned) == items
    counts = Counter(assigned.values())
    assert set(counts.values()) == {10}, counts
    # The same inputs in another order: the same plan (each worker computes it alone).
    assert plan(reversed(items), list(reversed(members))) == assigned


# -- workers -----------------------------------------------------------------------------------


class Pool:
    """Workers serving one table; what each holds now, and every hold for the checker."""

    def __init__(self, client: Any, table_name: str) -> None:
        self.client = client
        self.table_name = table_name
        self.holding: dict[str, set[str]] = {}
        self.holds: list[Hold] = []
        self.drained: Counter[str] = Counter()  # items whose work saw draining() set
        self.taken_at: dict[str, int] = {}  # item -> wall-clock ns its latest work started
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.stores: list[LockStore] = []

    def start(
        self, name: str, *, obey_drain: bool = True, client: Any = None, **serve: Any
    ) -> None:
        self.holding[name] = set()
        worker = self._worker(name, obey_drain, client or self.client, serve)
        self.tasks[name] = asyncio.create_task(worker)

    async def stop(self, name: str) -> None:
        task = self.tasks.pop(name)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _worker(
        self, name: str, obey_drain: bool, client: Any, serve: dict[str, Any]
    ) -> None:
        store = LockStore(client, self.table_name)
        self.stores.append(store)
        locker = Locker(store, max_clock_skew=0.2)

        async def work(lease: Lease) -> None:
            start = time.monotonic()
            self.taken_at[lease.lease_id] = time.time_ns()
            self.holding[name].add(lease.lease_id)
            try:
                if obey_drain:
                    await aiolease.draining().wait()
                    self.drained[lease.lease_id] += 1
                else:
                    await asyncio.Event().wait()
            finally:
                self.holding[name].discard(lease.lease_id)
                end = time.monotonic()
                self.holds.append(Hold(lease.lease_id, name, lease.fencing_token, start, end))

        async with locker.session(LeaseRequest(name, DURATION)) as session:
            await session.serve(work, wait_period=serve.pop("wait_period", WAIT), **serve)

    def counts(self) -> list[int]:
        return [len(held) for name, held in self.holding.items() if name in self.tasks]

    def balanced(self, items: int) -> bool:
        counts = self.counts()
        return sum(counts) == items and max(counts) - min(counts) <= 1

    async def until(self, condition: Callable[[], bool], within: float, what: str) -> float:
        """Seconds until ``condition`` holds (checked every 20 ms); fails after ``within``."""
        began = time.monotonic()
        while not condition():
            assert time.monotonic() - began < within, (
                f"{what}: not within {within} s: {self.counts()}"
            )
            await asyncio.sleep(0.02)
        return time.monotonic() - began

    async def aclose(self) -> None:
        for name in list(self.tasks):
            await self.stop(name)
        for store in self.stores:
            await store.aclose()
        report = check_history(self.holds)
        assert report.holds == len(self.holds), report


@pytest.fixture
async def pool(client: Any, table_name: str) -> AsyncIterator[tuple[Pool, list[str]]]:
    setup = LockStore(client, table_name)
    await setup.create_table()
    ids = [f"shard-{n:02}" for n in range(12)]
    for lease_id in ids:
        await setup.add_item(lease_id)
    p = Pool(client, table_name)
    yield p, ids
    await p.aclose()
    await setup.aclose()


async def test_workers_hold_every_item_and_their_counts_differ_by_at_most_one(
    pool: tuple[Pool, list[str]],
) -> None:
    p, ids = pool
    for n in range(5):
        p.start(f"w{n}")
    await p.until(lambda: p.balanced(len(ids)), 3 * WAIT + 1.0, "5 workers on 12 items")
    assert sorted(p.counts()) == [2, 2, 2, 3, 3]


async def test_a_joining_worker_gets_its_share_within_three_wait_periods(
    pool: tuple[Pool, list[str]],
) -> None:
    p, ids = pool
    for n in range(3):
        p.start(f"w{n}")
    await p.until(lambda: p.balanced(len(ids)), 2.0, "3 workers")
    p.start("w3")
    took = await p.until(lambda: p.balanced(len(ids)), 3 * WAIT + 0.5, "after a join")
    assert sorted(p.counts()) == [3, 3, 3, 3], took
    assert sum(p.drained.values()) >= 3, "the extra items were released without a drain"


async def test_a_graceful_stop_drains_and_the_others_take_over_within_a_wait_period(
    pool: tuple[Pool, list[str]],
) -> None:
    p, ids = pool
    for n in range(4):
        p.start(f"w{n}")
    await p.until(lambda: p.balanced(len(ids)), 2.0, "4 workers")
    leaving = set(p.holding["w0"])
    began = time.monotonic()
    await p.stop("w0")
    stopped = time.monotonic() - began
    assert stopped < 0.5, f"the drain took {stopped:.2f} s though every work obeyed it"
    assert all(p.drained[item] >= 1 for item in leaving), p.drained
    # One wait period, plus room for a loaded server's round trips; still well below what an
    # ungraceful stop costs: no taker before the session expires, at least DURATION minus a
    # heartbeat (a third of DURATION) after the stop began.
    took = await p.until(lambda: p.balanced(len(ids)), WAIT + 0.6, "after a graceful stop")
    assert sorted(p.counts()) == [4, 4, 4], took


async def test_work_that_ignores_the_drain_is_cancelled_after_the_grace(
    pool: tuple[Pool, list[str]],
) -> None:
    p, ids = pool
    p.start("stubborn", obey_drain=False, drain_grace=0.3)
    await p.until(lambda: p.balanced(len(ids)), 2.0, "one worker")
    began = time.monotonic()
    await p.stop("stubborn")
    stopped = time.monotonic() - began
    assert 0.3 <= stopped < 1.0, f"stopped after {stopped:.2f} s, grace 0.3 s"
    assert len(p.holds) == len(ids)


async def test_max_leases_caps_a_worker(pool: tuple[Pool, list[str]]) -> None:
    p, _ = pool
    p.start("capped", max_leases=2)
    await p.until(lambda: p.counts() == [2], 2.0, "a capped worker")
    await asyncio.sleep(3 * WAIT)  # it must not creep above its cap
    assert p.counts() == [2]


class Frozen:
    """A client whose calls hang once ``frozen`` is set: a SIGSTOPped or killed process, as far
    as the table knows (its session stops renewing and its releases never land)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.frozen = False

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.client, name)
        if name not in {"update_item", "scan", "get_item", "query"}:
            return call

        async def maybe_hang(**kwargs: Any) -> Any:
            if self.frozen:
                await asyncio.Event().wait()
            return await call(**kwargs)

        return maybe_hang


async def test_a_dead_workers_items_are_taken_once_its_session_expires(
    pool: tuple[Pool, list[str]],
) -> None:
    p, ids = pool
    frozen = Frozen(p.client)
    p.start("w0")
    p.start("w1", client=frozen)
    await p.until(lambda: p.balanced(len(ids)), 2.0, "2 workers")
    frozen.frozen = True
    # Nobody races its live items: they are taken once its session expires (plus the skew).
    took = await p.until(
        lambda: len(p.holding["w0"]) == len(ids), DURATION + 0.2 + 3 * WAIT, "after a death"
    )
    assert took >= DURATION - 0.5, f"taken {took:.2f} s after the death: a live lease raced"
    assert not p.holding["w1"], "the frozen worker still runs work past its session"
    task = p.tasks.pop("w1")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, aiolease.LeaseLostError, BaseExceptionGroup):
        await task


async def test_with_fewer_items_than_workers_each_item_has_one_worker(
    client: Any, table_name: str
) -> None:
    setup = LockStore(client, table_name)
    await setup.create_table()
    for n in range(3):
        await setup.add_item(f"few-{n}")
    p = Pool(client, table_name)
    try:
        for n in range(7):
            p.start(f"w{n}")
        await p.until(lambda: sorted(p.counts()) == [0, 0, 0, 0, 1, 1, 1], 2.0, "7 on 3")
        await asyncio.sleep(3 * WAIT)  # and it stays so: nobody above its share of 1
        assert sorted(p.counts()) == [0, 0, 0, 0, 1, 1, 1]
    finally:
        await p.aclose()
        await setup.aclose()


async def test_losing_the_session_ends_serve_with_lease_lost(
    pool: tuple[Pool, list[str]],
) -> None:
    p, ids = pool
    frozen = Frozen(p.client)
    p.start("w0", client=frozen)
    await p.until(lambda: p.balanced(len(ids)), 2.0, "one worker")
    frozen.frozen = True  # renewals hang: the session's local deadline passes
    await p.until(lambda: not p.holding["w0"], DURATION + 0.5, "work stopped by the loss")
    task = p.tasks.pop("w0")
    # Then serve() ends with the session's loss, once the (hanging) releases and the end
    # write have given up (each bounded by the session's duration).
    with pytest.raises(aiolease.LeaseLostError):
        await asyncio.wait_for(task, 3 * DURATION)


KILLED_WORKER = """
import asyncio, sys
from aiolease import LeaseRequest, Locker, LockStore
from aiolease.testing import fake_session

async def main(endpoint, table):
    async with fake_session().client("dynamodb", endpoint_url=endpoint) as client:
        locker = Locker(LockStore(client, table), max_clock_skew=0.2)
        async with locker.session(LeaseRequest("killed", 2.0)) as session:
            async def work(lease):
                print(lease.lease_id, flush=True)
                await asyncio.Event().wait()
            await session.serve(work, wait_period=0.2)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_a_sigkilled_process_items_are_taken_only_after_its_session_expired(
    dynamodb_endpoint: str, pool: tuple[Pool, list[str]]
) -> None:
    p, ids = pool
    p.start("w0")
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        KILLED_WORKER,
        dynamodb_endpoint,
        p.table_name,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    try:
        assert proc.stdout is not None
        held_there: set[str] = set()
        async with asyncio.timeout(20):
            while len(held_there) < len(ids) // 2 or p.counts() != [len(ids) // 2]:
                line = await asyncio.wait_for(proc.stdout.readline(), 10)
                held_there.add(line.decode().strip())
    finally:
        proc.kill()  # SIGKILL: no release, no end of its session
        await proc.wait()
    store = LockStore(p.client, p.table_name)
    [killed] = [row for row in await store.list_sessions() if row.lessee_id == "killed"]
    await store.aclose()
    await p.until(lambda: p.counts() == [len(ids)], 2.0 + 0.2 + 5 * WAIT + 1.0, "after SIGKILL")
    for item in held_there:
        # Never before the killed session's last stored expiry (plus the skew) had passed.
        assert p.taken_at[item] > killed.until_ns + 200_000_000, item


async def test_bad_arguments_are_refused_before_anything_is_taken(
    client: Any, table_name: str
) -> None:
    store = LockStore(client, table_name)
    await store.create_table()
    locker = Locker(store)
    async with locker.session(LeaseRequest("w", DURATION)) as session:
        with pytest.raises(ValueError, match="max_leases"):
            await session.serve(forever, max_leases=-1)
        with pytest.raises(ValueError, match="wait_period"):
            await session.serve(forever, wait_period=0)
        with pytest.raises(TypeError, match="work"):
            await session.serve(None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="serve"):
        aiolease.draining()
    await store.aclose()


async def forever(lease: Lease) -> None:
    await asyncio.Event().wait()
