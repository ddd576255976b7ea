"""Chaos scenarios: many workers, injected faults, and the history of who held what.

Each scenario runs workers against the moto server for a few seconds (much longer with
``--soak``), records every hold on the shared monotonic clock, and checks that no two
holds of one item overlapped and that fencing tokens grew, then asserts its own
guarantee. The scenarios with many workers run in two modes: ``lease`` (one
``locker.lease()`` per item) and ``session`` (workers hold one to three items at once
under a ``locker.session()``); after either, every item must be free again within the
lease duration plus the clock-skew allowance and one wait period. Figures go to
``chaos-results/chaos.jsonl`` (see docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aiolease import Lease, LeaseLostError, LeaseRequest, Locker, LockStore
from aiolease.testing import fake_session

from .. import faults
from ..history import Hold, check_history
from .harness import (
    ChaosClient,
    Figures,
    LogCounter,
    Recorder,
    check_no_orphans,
    check_nothing_stuck,
    check_stopped_before_expiry,
    dropped,
    session_worker,
    spike,
    worker,
)
from .proxy import ChaosProxy, Mode

ROOT = Path(__file__).resolve().parents[2]
RunTime = Callable[[float], float]
Chaos = tuple[ChaosClient, str]

# Leases of 2-2.4 s with the default heartbeat (a third of the lease): short enough for
# several handovers per scenario, long enough for a loaded 2-core machine.
LEASE = 2.4
SKEW = 0.3  # max_clock_skew of the lockers, except in the clock-skew scenario
# What a check of "free again within duration + skew + one wait period" allows on top
# for the checker's own round trips (read the item, read its session, end it, take the
# item) on a loaded 2-core machine.
ROUND_TRIPS = 1.0


@pytest.fixture(params=["lease", "session"])
def holding(request: pytest.FixtureRequest) -> str:
    """How the workers hold items: one ``locker.lease()`` each, or several per session."""
    return str(request.param)


def in_mode(scenario: str, mode: str) -> str:
    """The scenario's name in the figures: the session-mode runs say so."""
    return scenario if mode == "lease" else f"{scenario} [session mode]"


async def add_items(store: LockStore, count: int) -> list[str]:
    items = [f"item-{i}" for i in range(count)]
    for item in items:
        await store.add_item(item)
    return items


async def raw_row(client: Any, table: str, item: str) -> dict[str, Any]:
    response = await client.get_item(
        TableName=table, Key={"LeaseID": {"S": item}}, ConsistentRead=True
    )
    return dict(response["Item"])


def refused(code: str) -> faults.Fault:
    """Refused before reaching the table with ``code`` (throttling)."""

    def fault(call: Any) -> Any:
        async def run() -> Any:
            raise faults.client_error(code)

        return run()

    return fault


async def run_workers(
    proxy: ChaosClient,
    table: str,
    recorder: Recorder,
    *,
    workers: int,
    seconds: float,
    hold_time: tuple[float, float],
    duration: float = LEASE,
    wait_period: float = 0.25,
    clocks: list[Callable[[], int]] | None = None,
    max_clock_skew: float = SKEW,
    mode: str = "lease",
    clock_offset: float = 0.0,
) -> dict[str, Any]:
    """Run ``workers`` lease loops for ``seconds``, each with its own store and locker.

    In ``session`` mode worker ``i`` holds ``1 + i % 3`` items at once under a session.
    Afterwards every item must be free again within ``duration`` + ``max_clock_skew`` +
    ``clock_offset`` (how far the workers' clocks run ahead) + one wait period; returns
    figures on that and on the sessions.
    """
    stop_at = time.monotonic() + seconds
    tasks = []
    for i in range(workers):
        clock = clocks[i] if clocks else time.time_ns
        locker = Locker(LockStore(proxy, table, clock=clock), max_clock_skew=max_clock_skew)
        if mode == "session":
            tasks.append(
                session_worker(
                    locker,
                    f"w{i}",
                    recorder,
                    stop_at,
                    duration=duration,
                    hold_time=hold_time,
                    items=1 + i % 3,
                    wait_period=wait_period,
                    clock=clock,
                )
            )
            continue
        tasks.append(
            worker(
                locker,
                f"w{i}",
                recorder,
                stop_at,
                duration=duration,
                hold_time=hold_time,
                wait_period=wait_period,
                clock=clock,
            )
        )
    await asyncio.gather(*tasks)
    stopped = time.monotonic()
    # The check goes around the faults, on the raw client.
    items = sorted(await LockStore(proxy.client, table).list_lease_ids())
    again = await check_nothing_stuck(
        proxy.client,
        table,
        items,
        since=stopped,
        bound=duration + max_clock_skew + clock_offset + wait_period + ROUND_TRIPS,
        wait_period=wait_period,
        max_clock_skew=max_clock_skew,
    )
    figures: dict[str, Any] = {"free_again_within_s": round(max(again, default=0.0), 2)}
    if mode == "session":
        figures.update(
            sessions=recorder.sessions,
            sessions_lost=recorder.sessions_lost,
            session_starts_unavailable=recorder.sessions_unavailable,
        )
    return figures


# -- contention -------------------------------------------------------------------------------


async def test_contention_many_workers_over_few_items(
    chaos: Chaos, run_time: RunTime, holding: str
) -> None:
    proxy, table = chaos
    await add_items(LockStore(proxy, table), 2)
    recorder = Recorder()
    seconds = run_time(6)
    started = time.monotonic()
    extra = await run_workers(
        proxy, table, recorder, workers=8, seconds=seconds, hold_time=(0.02, 0.4), mode=holding
    )
    report = recorder.check()
    check_stopped_before_expiry(recorder, proxy)
    assert report.handovers >= 5, f"too little contention to prove anything: {report}"
    assert not recorder.losses, f"leases lost with no fault injected: {recorder.losses}"
    Figures.of(
        in_mode("contention: 8 workers, 2 items", holding),
        time.monotonic() - started,
        report,
        recorder=recorder,
        acquisitions_refused=recorder.not_obtained,
        **extra,
    ).publish()


# -- throttling -------------------------------------------------------------------------------


async def test_twenty_percent_throttling_loses_no_lease(
    chaos: Chaos, run_time: RunTime, holding: str
) -> None:
    proxy, table = chaos
    await add_items(LockStore(proxy, table), 3)
    # The first two renewals are throttled for sure, then
    # 10% + 10% of the remaining 90%: a fifth of every call, of both throttling codes
    proxy.add("renew", 0.0, refused("ThrottlingException"), "ThrottlingException", first=2)
    proxy.add("*", 0.10, refused("ThrottlingException"), "ThrottlingException")
    proxy.add("*", 0.10 / 0.9, refused("ProvisionedThroughputExceededException"), "PTEE")
    recorder = Recorder()
    seconds = run_time(6)
    started = time.monotonic()
    with LogCounter() as logs:
        extra = await run_workers(
            proxy, table, recorder, workers=6, seconds=seconds, hold_time=(0.5, 2.5), mode=holding
        )
    proxy.clear()
    report = recorder.check()
    check_stopped_before_expiry(recorder, proxy)
    injected = sum(proxy.injected.values())
    assert injected >= 20, proxy.injected
    assert any("on renew" in name for name in proxy.injected), "no renewal was throttled"
    assert logs.count("transient error") > 0, "the store never saw a throttled call"
    assert not recorder.losses, f"throttling must be retried, not lose leases: {recorder.losses}"
    Figures.of(
        in_mode(
            "throttling 20% (ThrottlingException, ProvisionedThroughputExceededException)", holding
        ),
        time.monotonic() - started,
        report,
        faults=proxy.injected,
        recorder=recorder,
        calls=sum(proxy.calls.values()),
        **extra,
    ).publish()


# -- latency spikes ---------------------------------------------------------------------------


async def test_latency_spikes_longer_than_the_heartbeat_period(
    chaos: Chaos, run_time: RunTime, holding: str
) -> None:
    proxy, table = chaos
    await add_items(LockStore(proxy, table), 3)
    period = LEASE / 3
    # Spikes of 1 to 2.5 heartbeat periods on a fifth of all calls, before the request
    # or after it landed: some renewals come back late, some after the local deadline.
    proxy.add("*", 0.2, spike(period, 2.5 * period, proxy.random), "latency spike", first=2)
    recorder = Recorder()
    seconds = run_time(8)
    started = time.monotonic()
    extra = await run_workers(
        proxy, table, recorder, workers=5, seconds=seconds, hold_time=(0.2, 2.5), mode=holding
    )
    proxy.clear()
    report = recorder.check()
    checked = check_stopped_before_expiry(recorder, proxy)
    assert sum(proxy.injected.values()) >= 5, proxy.injected
    taken = {why: n for why, n in recorder.losses.items() if "deadline" not in why}
    assert not taken, f"a live lease was taken over (only slowness was injected): {taken}"
    Figures.of(
        in_mode("latency spikes of 1-2.5 heartbeat periods on 20% of calls", holding),
        time.monotonic() - started,
        report,
        faults=proxy.injected,
        recorder=recorder,
        holds_stopped_before_their_expiry=checked,
        **extra,
    ).publish()


def slow_answer(seconds: float) -> faults.Fault:
    """The write lands at once; its answer arrives ``seconds`` later."""

    def fault(call: Any) -> Any:
        async def run() -> Any:
            result = await call()
            await asyncio.sleep(seconds)
            return result

        return run()

    return fault


def stuck(seconds: float) -> faults.Fault:
    """Never answered, and slow to give up when cancelled (as a wedged connection can be)."""

    def fault(call: Any) -> Any:
        async def run() -> Any:
            try:
                await asyncio.Event().wait()
            finally:
                await asyncio.shield(asyncio.sleep(seconds))

        return run()

    return fault


async def test_a_slow_answer_then_stuck_renewals_stop_the_work_before_the_stored_expiry(
    chaos: Chaos, run_time: RunTime
) -> None:
    proxy, table = chaos
    store = LockStore(proxy, table)
    await add_items(store, 1)
    locker = Locker(store, max_clock_skew=SKEW)
    recorder = Recorder()
    started = time.monotonic()
    stop_at = started + run_time(0)
    rounds = 0
    while not rounds or time.monotonic() < stop_at:
        rounds += 1
        # The first renewal lands but is answered a second late (the holder's deadline must
        # count from when it was sent); later renewals hang, and their cancellation takes
        # 2 s (only the scope's own deadline timer can stop the work in time).
        proxy.faults["update_item"].clear()
        proxy.inject("update_item", faults.delay(0), slow_answer(1.0), stuck(2.0))
        await worker(
            locker, "w", recorder, time.monotonic() + 0.1, duration=LEASE, hold_time=(30, 30)
        )
    report = recorder.check()
    checked = check_stopped_before_expiry(recorder, proxy)
    assert len(recorder.lost_holds) == rounds, "every hold should have ended by a loss"
    Figures.of(
        "a slow answer, then renewals stuck (and slow to cancel)",
        time.monotonic() - started,
        report,
        faults={"slow answers": rounds, "stuck renewals": rounds},
        recorder=recorder,
        holds_stopped_before_their_expiry=checked,
    ).publish()


# -- dropped responses --------------------------------------------------------------------------


async def test_dropped_responses_on_acquire_renew_and_release(
    chaos: Chaos, run_time: RunTime, holding: str
) -> None:
    proxy, table = chaos
    await add_items(LockStore(proxy, table), 3)
    for kind in ("acquire", "renew", "release"):
        # The write lands, the answer is lost: the store must recognise its own write.
        proxy.add(kind, 0.25, dropped(0.2, proxy.random), "dropped response", first=2)
    recorder = Recorder()
    seconds = run_time(6)
    started = time.monotonic()
    with LogCounter() as logs:
        extra = await run_workers(
            proxy,
            table,
            recorder,
            workers=5,
            seconds=seconds,
            hold_time=(0.3, 2.0),
            duration=1.5,
            mode=holding,
        )
    proxy.clear()
    report = recorder.check()
    check_stopped_before_expiry(recorder, proxy)
    check_no_orphans(recorder, proxy)
    for kind in ("acquire", "renew", "release"):
        assert proxy.injected[f"dropped response on {kind}"] >= 1, proxy.injected
    assert not recorder.losses, f"a dropped answer is not a lost lease: {recorder.losses}"
    # A release whose answer was lost is recognised on retry (the row is free under our
    # token); it can only misreport when another worker took the item in between.
    misreported = logs.count("no longer held at release")
    assert misreported <= proxy.injected["dropped response on release"] // 2, (
        f"{misreported} releases that landed looked failed"
    )
    Figures.of(
        in_mode("dropped responses on 25% of acquire, renew and release", holding),
        time.monotonic() - started,
        report,
        faults=proxy.injected,
        recorder=recorder,
        **extra,
    ).publish()


# -- the server down and back -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["refuse", "hang", "error"])
async def test_server_down_mid_lease_cancels_work_and_leases_come_back(
    client: Any, dynamodb_endpoint: str, run_time: RunTime, mode: Mode
) -> None:
    from aiobotocore.config import AioConfig

    port = int(dynamodb_endpoint.rsplit(":", 1)[1])
    table = f"chaos-down-{mode}-{random.getrandbits(32):08x}"
    items = await add_items(await _created(LockStore(client, table)), 3)
    duration, outage = 2.0, 4.0
    config = AioConfig(
        connect_timeout=0.5, read_timeout=1.0, retries={"total_max_attempts": 1, "mode": "standard"}
    )
    recorder = Recorder()
    figures: dict[str, int] = {"outages": 0, "cancelled_by_outage": 0, "reobtained": 0}
    started = time.monotonic()
    async with (
        ChaosProxy(port) as proxy,
        fake_session().client("dynamodb", endpoint_url=proxy.endpoint_url, config=config) as raw,
    ):
        chaos = ChaosClient(raw)
        stop = asyncio.Event()
        obtained_at: list[float] = []
        changed = asyncio.Event()

        def on_obtained(lease: Lease) -> None:
            obtained_at.append(time.monotonic())
            changed.set()

        async def obtained_since(moment: float, count: int) -> None:
            while sum(t >= moment for t in obtained_at) < count:
                changed.clear()
                await changed.wait()

        workers = [
            worker(
                Locker(LockStore(chaos, table), max_clock_skew=SKEW),
                f"w{i}",
                recorder,
                float("inf"),
                duration=duration,
                hold_time=(3600, 3600),
                wait_period=0.2,
                stop=stop,
                on_obtained=on_obtained,
            )
            for i in range(3)
        ]
        tasks = [asyncio.create_task(w) for w in workers]
        try:
            stop_at = time.monotonic() + run_time(0)
            since = 0.0
            while True:
                await asyncio.wait_for(obtained_since(since, len(items)), 3 * duration + 10)
                if figures["outages"] and time.monotonic() >= stop_at:
                    break
                # every item is held: take the server away for twice the lease
                went_down = time.monotonic()
                await proxy.set_mode(mode)
                figures["outages"] += 1
                await asyncio.sleep(outage)
                until = {
                    item: int((await raw_row(client, table, item))["LeaseUntil"]["N"])
                    for item in items
                }
                await proxy.set_mode("up")
                came_up = time.monotonic()
                in_outage = [h for h in recorder.holds if h.start < went_down <= h.end]
                assert len(in_outage) == len(items), (
                    f"every holder must have stopped during the outage: {recorder.holds}"
                )
                for hold in in_outage:
                    assert hold in recorder.lost_holds, f"{hold} ended without a loss"
                    assert hold.end < came_up
                    end_wall = recorder.end_walls[recorder.holds.index(hold)]
                    assert end_wall < until[hold.item], (
                        f"{hold.lessee} worked {(end_wall - until[hold.item]) / 1e9:.3f} s "
                        "past the expiry stored in the table"
                    )
                figures["cancelled_by_outage"] += len(in_outage)
                since = came_up
            figures["reobtained"] = sum(t >= went_down for t in obtained_at)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        refused_requests = proxy.refused_requests
    report = check_history(recorder.holds)
    check_stopped_before_expiry(recorder, chaos)
    Figures.of(
        f"server down ({mode}) for {outage:.0f} s with {duration:.0f} s leases",
        time.monotonic() - started,
        report,
        faults={
            "outages": figures["outages"],
            "requests answered 503 or left hanging": refused_requests,
        },
        recorder=recorder,
        **figures,
    ).publish()


async def _created(store: LockStore) -> LockStore:
    await store.create_table()
    return store


# -- a holder process killed ----------------------------------------------------------------


async def test_a_killed_holder_process_is_taken_over_after_its_lease_not_before(
    client: Any, dynamodb_endpoint: str, run_time: RunTime
) -> None:
    table = f"chaos-kill-{random.getrandbits(32):08x}"
    store = await _created(LockStore(client, table))
    await store.add_item("k")
    duration, skew = 2.0, 0.5
    holds: list[Hold] = []
    gaps: list[float] = []
    started = time.monotonic()
    stop_at = started + run_time(0)
    root = ROOT
    while not holds or time.monotonic() < stop_at:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.chaos.holder_process",
            dynamodb_endpoint,
            table,
            "k",
            str(duration),
            cwd=root,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        assert child.stdout is not None
        try:
            line = await asyncio.wait_for(child.stdout.readline(), 60)
            assert line.startswith(b"held"), line
            _, token, start = line.split()
            deadlines: list[float] = []
            while len(deadlines) < 2:  # the first deadline, then one renewal: a live holder
                line = await asyncio.wait_for(child.stdout.readline(), 2 * duration)
                deadlines.append(float(line.split()[1]))
        finally:
            child.send_signal(signal.SIGKILL)
            await child.wait()
        killed_at = time.monotonic()
        row = await raw_row(client, table, "k")
        stored_until = int(row["LeaseUntil"]["N"])
        # The child may have renewed between its last line and the kill: read the rest.
        rest = await child.stdout.read()
        deadlines += [float(x.split()[1]) for x in rest.splitlines() if x.startswith(b"deadline")]
        holds.append(Hold("k", "child", int(token), float(start), max(deadlines)))

        async with Locker(LockStore(client, table), max_clock_skew=skew).lease(
            LeaseRequest("taker", duration), "k", wait_period=0.05, timeout=duration + 15
        ) as lease:
            taken_at, taken_wall = time.monotonic(), time.time_ns()
            await asyncio.sleep(0.1)
        holds.append(Hold("k", "taker", lease.fencing_token, taken_at, time.monotonic()))
        assert taken_wall >= stored_until, (
            f"taken over {(stored_until - taken_wall) / 1e9:.3f} s before the killed "
            "holder's lease ended"
        )
        assert lease.fencing_token > int(token)
        gaps.append((taken_wall - stored_until) / 1e9)
        assert taken_at - killed_at < duration + skew + 10, "nobody took over the dead lease"
    report = check_history(holds)
    Figures.of(
        "holder process SIGKILLed",
        time.monotonic() - started,
        report,
        faults={"SIGKILL": len(gaps)},
        takeover_after_expiry_s=[round(g, 2) for g in gaps][:20],
    ).publish()


async def _take_any(
    session: Any,
    wait: float,
    timeout: float,
    taken: list[tuple[Lease, float, int]],
    holds: list[Hold],
) -> None:
    """Take any item under ``session``; note when (monotonic, wall) and the hold."""
    async with session.lease(wait_period=wait, timeout=timeout) as lease:
        at = time.monotonic()
        taken.append((lease, at, time.time_ns()))
        await asyncio.sleep(0.1)
    holds.append(Hold(lease.lease_id, "taker", lease.fencing_token, at, time.monotonic()))


async def test_a_killed_session_holder_is_taken_over_after_its_session_not_before(
    client: Any, dynamodb_endpoint: str, run_time: RunTime
) -> None:
    table = f"chaos-kill-session-{random.getrandbits(32):08x}"
    store = await _created(LockStore(client, table))
    items = await add_items(store, 3)
    duration, skew, wait = 2.0, 0.5, 0.1
    # Nothing a dead session held may stay stuck longer than this after the kill.
    bound = duration + skew + wait + ROUND_TRIPS
    holds: list[Hold] = []
    stuck: list[float] = []
    gaps: list[float] = []
    started = time.monotonic()
    stop_at = started + run_time(0)
    while not holds or time.monotonic() < stop_at:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.chaos.holder_process",
            dynamodb_endpoint,
            table,
            ",".join(items),
            str(duration),
            "session",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert child.stdout is not None
        held: dict[str, tuple[int, float]] = {}
        deadlines: list[float] = []
        try:
            while len(held) < len(items):
                line = await asyncio.wait_for(child.stdout.readline(), 60)
                assert line.startswith(b"held"), line
                _, item, token, start = line.decode().split()
                held[item] = (int(token), float(start))
            while len(deadlines) < 2:  # the first deadline, then one session renewal
                line = await asyncio.wait_for(child.stdout.readline(), 2 * duration)
                deadlines.append(float(line.split()[1]))
        finally:
            child.send_signal(signal.SIGKILL)
            await child.wait()
        killed_at = time.monotonic()
        session_key = (await raw_row(client, table, items[0]))["LeaseSession"]["S"]
        session_row = await raw_row(client, table, session_key)
        stored_until = int(session_row["LeaseSessionUntil"]["N"])
        rest = await child.stdout.read()
        deadlines += [float(x.split()[1]) for x in rest.splitlines() if x.startswith(b"deadline")]
        for item, (token, start) in held.items():
            holds.append(Hold(item, "child", token, start, max(deadlines)))

        # A session-mode taker asks for any item, three times at once: the pool scan must
        # offer the dead session's items and judge the session before taking them.
        locker = Locker(LockStore(client, table), max_clock_skew=skew)
        taken: list[tuple[Lease, float, int]] = []

        async with (
            locker.session(LeaseRequest("taker", duration)) as session,
            asyncio.TaskGroup() as group,
        ):
            for _ in items:
                group.create_task(_take_any(session, wait, bound + 10, taken, holds))
        await locker.aclose()
        assert sorted(lease.lease_id for lease, _, _ in taken) == items
        for lease, taken_at, taken_wall in taken:
            assert taken_wall >= stored_until, (
                f"{lease.lease_id} taken {(stored_until - taken_wall) / 1e9:.3f} s before "
                "the killed holder's session expired"
            )
            assert lease.fencing_token > held[lease.lease_id][0], "the taker is not fenced"
            stuck.append(taken_at - killed_at)
            gaps.append((taken_wall - stored_until) / 1e9)
        ended = await raw_row(client, table, session_key)
        assert ended["LeaseSessionUntil"] == {"N": "0"}, f"the dead session was not ended: {ended}"
        assert max(stuck) <= bound, (
            f"an item of the killed session stayed stuck {max(stuck):.2f} s "
            f"(> duration {duration} + skew {skew} + wait {wait} + {ROUND_TRIPS} s)"
        )
    report = check_history(holds)
    Figures.of(
        "session holder process (3 items) SIGKILLed [session mode]",
        time.monotonic() - started,
        report,
        faults={"SIGKILL": len(stuck) // len(items)},
        stuck_after_kill_s={"max": round(max(stuck), 2), "bound": bound},
        takeover_after_session_expiry_s=[round(g, 2) for g in gaps][:20],
    ).publish()


# -- skewed clocks ------------------------------------------------------------------------------


async def test_clocks_skewed_by_up_to_max_clock_skew(
    chaos: Chaos, run_time: RunTime, holding: str
) -> None:
    proxy, table = chaos
    await add_items(LockStore(proxy, table), 3)
    skew = 1.0  # more than the holder's safety margin (0.2 s): the skew allowance matters
    # Half the workers' clocks run a whole max_clock_skew ahead of the others'.
    offsets = [0 if i % 2 else int(skew * 1e9) for i in range(6)]
    clocks = [lambda off=off: time.time_ns() + off for off in offsets]
    # Renewals that hang and releases that hang: leases end by expiry, so takers must
    # judge another host's expiry by their own (skewed) clock. Five sure hangs: the loser
    # itself may retake an expired item (same clock), so one or two could go untested.
    proxy.add("renew", 0.3, faults.hang, "renewal hangs", first=5)
    proxy.add("release", 0.5, faults.hang, "release hangs")
    recorder = Recorder()
    seconds = run_time(9)
    started = time.monotonic()
    extra = await run_workers(
        proxy,
        table,
        recorder,
        workers=6,
        seconds=seconds,
        hold_time=(1.0, 4.0),
        duration=2.0,
        clocks=clocks,
        max_clock_skew=skew,
        wait_period=0.1,
        mode=holding,
        clock_offset=max(offsets) / 1e9,
    )
    proxy.clear()
    report = recorder.check()
    check_stopped_before_expiry(recorder, proxy)
    lost = set(recorder.lost_holds)
    after_expiry = 0
    for item in {h.item for h in recorder.holds}:
        ordered = sorted((h for h in recorder.holds if h.item == item), key=lambda h: h.start)
        after_expiry += sum(
            a in lost and b.lessee != a.lessee for a, b in itertools.pairwise(ordered)
        )
    assert after_expiry >= 1, "no lease was taken over after an expiry: the skew went untested"
    Figures.of(
        in_mode(
            f"clocks skewed by {skew:.0f} s = max_clock_skew, renewals and releases hanging",
            holding,
        ),
        time.monotonic() - started,
        report,
        faults=proxy.injected,
        recorder=recorder,
        takeovers_after_expiry=after_expiry,
        **extra,
    ).publish()


# -- a blocked event loop ---------------------------------------------------------------------


async def test_an_event_loop_blocked_longer_than_the_lease(
    client: Any, dynamodb_endpoint: str, run_time: RunTime
) -> None:
    table = f"chaos-stall-{random.getrandbits(32):08x}"
    store = await _created(LockStore(client, table))
    await store.add_item("s")
    duration, stall = 1.5, 2.8
    holds: list[Hold] = []
    stalls = 0
    started = time.monotonic()
    stop_at = started + run_time(0)

    def stalled_holder(holding: threading.Event, result: dict[str, Any]) -> None:
        """In its own thread and event loop: hold the lease, then block the loop."""

        async def main() -> None:
            async with fake_session().client("dynamodb", endpoint_url=dynamodb_endpoint) as c:
                locker = Locker(LockStore(c, table), max_clock_skew=SKEW)
                try:
                    async with locker.lease(LeaseRequest("stalled", duration), "s") as lease:
                        result["lease"] = lease
                        result["start"] = time.monotonic()
                        holding.set()
                        result["stalled_at"] = time.monotonic()
                        time.sleep(stall)  # noqa: ASYNC251 - the stall under test
                        result["woke_at"] = time.monotonic()
                        await asyncio.sleep(0.01)
                        result["worked_after_wake"] = True
                except LeaseLostError as exc:
                    result["lost"] = exc

        asyncio.run(main())

    while not holds or time.monotonic() < stop_at:
        holding = threading.Event()
        result: dict[str, Any] = {}
        thread = threading.Thread(target=stalled_holder, args=(holding, result))
        thread.start()
        try:
            assert await asyncio.to_thread(holding.wait, 30), "the stalled holder never held"
            async with Locker(LockStore(client, table), max_clock_skew=SKEW).lease(
                LeaseRequest("taker", duration), "s", wait_period=0.05, timeout=stall + 10
            ) as lease:
                taken_at = time.monotonic()
                await asyncio.sleep(0.2)
            holds.append(Hold("s", "taker", lease.fencing_token, taken_at, time.monotonic()))
        finally:
            await asyncio.to_thread(thread.join, 30)
        stalls += 1
        mine: Lease = result["lease"]
        assert taken_at < result["woke_at"], "the lease was not taken over during the stall"
        assert "worked_after_wake" not in result, "the work went on after the loop woke"
        assert isinstance(result.get("lost"), LeaseLostError), result
        assert lease.fencing_token > mine.fencing_token, "the taker's writes are not fenced"
        # The stalled work's last action was before the stall.
        holds.append(
            Hold("s", "stalled", mine.fencing_token, result["start"], result["stalled_at"])
        )
    report = check_history(holds)
    Figures.of(
        f"event loop blocked {stall} s with {duration} s leases",
        time.monotonic() - started,
        report,
        faults={"loop stalls": stalls},
        losses={"stalled loop (lost at wake-up)": stalls},
    ).publish()


def stall_with_the_answer(seconds: float, stalled: list[float]) -> faults.Fault:
    """The write lands, then the event loop blocks before the answer is read."""

    def fault(call: Any) -> Any:
        async def run() -> Any:
            result = await call()
            time.sleep(seconds)  # noqa: ASYNC251 - the stall under test
            stalled.append(time.monotonic())
            return result

        return run()

    return fault


async def test_a_renewal_answered_after_a_stall_past_the_deadline_does_not_revive_the_lease(
    chaos: Chaos, run_time: RunTime
) -> None:
    proxy, table = chaos
    store = LockStore(proxy, table)
    await add_items(store, 1)
    locker = Locker(store, max_clock_skew=SKEW)
    period = LEASE / 3
    # Renewals are sent a period apart; a stall of two periods after the first one lands
    # ends past the lease's local deadline (LEASE - margin), but before the renewed one.
    stall = 2 * period
    rounds = 0
    resumed = 0
    started = time.monotonic()
    stop_at = started + run_time(0)
    while not rounds or time.monotonic() < stop_at:
        rounds += 1
        woke: list[float] = []
        proxy.faults["update_item"].clear()
        proxy.inject("update_item", faults.delay(0), stall_with_the_answer(stall, woke))
        with pytest.raises(LeaseLostError, match="after the local deadline"):  # noqa: PT012
            async with (
                asyncio.timeout(stall + 3 * LEASE),  # a revived lease would never be lost
                locker.lease(LeaseRequest("w", LEASE), heartbeat_period=period),
            ):
                while True:
                    await asyncio.sleep(0.05)
                    resumed += bool(woke)
    assert not resumed, f"the work resumed {resumed} time(s) after the stall"
    Figures.of(
        f"event loop blocked {stall:.1f} s while a renewal's answer was in hand",
        time.monotonic() - started,
        check_history([]),
        faults={"loop stalls during a renewal": rounds},
        losses={"renewal answered after the local deadline": rounds},
    ).publish()
