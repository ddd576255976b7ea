"""Section 6: sessions. Keeping N leases alive one lease at a time, or under one session.

``keep_alive``: one process holds N items for N = 1, 10, 100, 1000, either as N
``locker.lease()`` scopes (each renewed once per heartbeat period) or as N
``session.lease()`` scopes under one ``locker.session()`` (one renewal per period for all
of them). Once every item is held, a call-counting client counts the write calls over a
window of whole heartbeat periods, and ``time.process_time()`` over the same window is the
client's CPU. Both are extrapolated to an hour and to the 10 s heartbeat that the cost
table prices.

``failover``: a process holding three items under a session is SIGKILLed at a random phase
of its heartbeat; a session-mode waiter in this process polls for the items: time until it
holds them / (session duration + clock-skew allowance).

``python -m benchmarks.sessions ENDPOINT TABLE ITEM,ITEM,... DURATION`` is that holder
process: it prints ``held T`` once it holds every item and ``renewed T`` after each session
renewal (``time.monotonic()``), until it is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import signal
import sys
import time
from typing import Any

from aiolease import LeaseLostError, LeaseRequest, Locker, LockStore

from ._common import CountingClient, open_client, ratio, summary, table_name

#: The on-demand write price the cost table uses: US East (N. Virginia), per million write
#: request units, as AWS has published it since November 2024 (read on 2026-12-02). A
#: write of an item up to 1 KB is one unit (a failed conditional write too).
PRICE_PER_MILLION_WRITES = 0.625
PRICE_NOTE = (
    "DynamoDB on-demand, US East (N. Virginia): $0.625 per million write request units "
    "(published since November 2024; read on 2026-12-02)"
)
#: The heartbeat the cost table prices, and AWS's month (730 hours).
COST_HEARTBEAT_S = 10.0
HOURS_PER_MONTH = 730
COST_LEASES = 1000

#: The heartbeat period of the measurement (the lease or session lives 3 periods).
BASE_PERIOD_S = 2.0
#: Single-lease mode renews N leases per period: the period grows with N so that the
#: shared moto server (about 60 writes/s on the loaded development machine) is never the
#: limit; writes per lease per period do not depend on the period.
MAX_WRITES_PER_S = 25.0
#: Acquisitions in flight at once while taking the N items.
ACQUIRING = 8

WRITE_CALLS = ("update_item", "put_item", "delete_item", "batch_write_item", "transact_write_items")


def _writes(client: CountingClient) -> int:
    return sum(client.calls.get(name, 0) for name in WRITE_CALLS)


def period_for(mode: str, n: int) -> float:
    """The heartbeat period measured for ``n`` leases in ``mode``."""
    if mode == "session":
        return BASE_PERIOD_S
    return max(BASE_PERIOD_S, n / MAX_WRITES_PER_S)


async def _hold_all(
    locker: Locker,
    items: list[str],
    mode: str,
    period: float,
    window: float,
    client: CountingClient,
) -> dict[str, Any]:
    """Hold every item (in ``mode``), then count writes and CPU over the window."""
    duration = 3 * period
    gate = asyncio.Semaphore(ACQUIRING)
    held = 0
    all_held = asyncio.Event()
    stop = asyncio.Event()
    lost = 0

    async def hold(opener: Any) -> None:
        nonlocal held, lost
        try:
            async with contextlib.AsyncExitStack() as stack:
                async with gate:
                    await stack.enter_async_context(opener())
                held += 1
                if held == len(items):
                    all_held.set()
                await stop.wait()
                # Leave as many scopes at once as were entered: 1000 releases queued
                # together behind one moto server would outlast the release's time bound.
                async with gate:
                    await stack.aclose()
        except LeaseLostError:
            lost += 1

    async def measure() -> dict[str, Any]:
        await all_held.wait()
        # Let the last acquisitions' heartbeats settle into their phases.
        await asyncio.sleep(min(period, 1.0))
        gc.collect()  # not the garbage of taking N items (seen: 0.3 s of CPU in the window)
        w0, c0, t0 = _writes(client), time.process_time(), time.monotonic()
        await asyncio.sleep(window)
        w1, c1, t1 = _writes(client), time.process_time(), time.monotonic()
        stop.set()
        return {"writes": w1 - w0, "cpu_s": c1 - c0, "window_s": t1 - t0}

    if mode == "session":
        request = LeaseRequest(f"bench-session-{len(items)}", duration)
        async with (
            locker.session(request, heartbeat_period=period) as session,
            asyncio.TaskGroup() as group,
        ):
            for item in items:
                group.create_task(hold(lambda item=item: session.lease(item, wait_period=0.5)))
            figures = await measure()
    else:
        request = LeaseRequest(f"bench-single-{len(items)}", duration)
        async with asyncio.TaskGroup() as group:
            for item in items:
                group.create_task(
                    hold(
                        lambda item=item: locker.lease(
                            request, item, wait_period=0.5, heartbeat_period=period
                        )
                    )
                )
            figures = await measure()
    figures["lost"] = lost
    return figures


async def keep_alive(
    endpoint_url: str,
    ns: list[int],
    *,
    min_window_s: float,
    window_periods: int,
    modes: tuple[str, ...] = ("single", "session"),
    log: Any = print,
) -> dict[str, Any]:
    """Writes and client CPU to keep N leases alive, per mode, extrapolated per hour.

    The window is ``window_periods`` heartbeat periods, and at least ``min_window_s``.
    """
    steps: list[dict[str, Any]] = []
    async with open_client(endpoint_url) as raw:
        client = CountingClient(raw)
        store = LockStore(client, table_name("sessions"))
        await store.create_table()
        items = [f"item-{i:04d}" for i in range(max(ns))]
        gate = asyncio.Semaphore(ACQUIRING * 2)

        async def add(item: str) -> None:
            async with gate:
                await store.add_item(item)

        await asyncio.gather(*(add(item) for item in items))
        for mode in modes:
            for n in ns:
                period = period_for(mode, n)
                window = max(min_window_s, window_periods * period)
                log(f"   {mode}: N={n}, heartbeat {period:g} s, window {window:g} s")
                async with Locker(store, max_clock_skew=0.5) as locker:
                    figures = await _hold_all(locker, items[:n], mode, period, window, client)
                window = figures["window_s"]
                per_hour = figures["writes"] / window * 3600
                # Writes and CPU go with renewals: one per lease (single) or per session,
                # per period. Rescale from the measured period to the priced one.
                scale = period / COST_HEARTBEAT_S
                lease_hours = n * window / 3600
                steps.append(
                    {
                        "mode": mode,
                        "n": n,
                        "period_s": period,
                        **figures,
                        "writes_per_hour": per_hour,
                        "writes_per_hour_at_10s": per_hour * scale,
                        "writes_per_lease_period": figures["writes"] / (n * window / period),
                        "cpu_per_lease_hour_s": figures["cpu_s"] / lease_hours,
                        "cpu_per_lease_hour_at_10s_s": figures["cpu_s"] / lease_hours * scale,
                    }
                )
    return {
        "steps": steps,
        "cost": cost(steps),
        "base_period_s": BASE_PERIOD_S,
        "max_writes_per_s": MAX_WRITES_PER_S,
        "min_window_s": min_window_s,
        "window_periods": window_periods,
    }


def cost(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The monthly write cost of 1000 leases with a 10 s heartbeat, measured and by rule."""
    out: dict[str, Any] = {
        "leases": COST_LEASES,
        "heartbeat_s": COST_HEARTBEAT_S,
        "hours_per_month": HOURS_PER_MONTH,
        "price_per_million_writes": PRICE_PER_MILLION_WRITES,
        "price": PRICE_NOTE,
    }
    rule = {
        "single": COST_LEASES * 3600 / COST_HEARTBEAT_S,
        "session": 3600 / COST_HEARTBEAT_S,
    }
    for mode in ("single", "session"):
        measured = [s for s in steps if s["mode"] == mode and s["n"] == COST_LEASES]
        per_hour = measured[0]["writes_per_hour_at_10s"] if measured else None
        month = None if per_hour is None else per_hour * HOURS_PER_MONTH
        out[mode] = {
            "writes_per_hour_measured": per_hour,
            "writes_per_month_measured": month,
            "usd_per_month_measured": None
            if month is None
            else month / 1e6 * PRICE_PER_MILLION_WRITES,
            "writes_per_hour_rule": rule[mode],
            "usd_per_month_rule": rule[mode] * HOURS_PER_MONTH / 1e6 * PRICE_PER_MILLION_WRITES,
        }
    return out


# -- failover after SIGKILL of a session holder ------------------------------------------------


async def _holder(endpoint_url: str, table: str, items: list[str], duration: float) -> None:
    def on_update(kwargs: dict[str, Any], ok: bool) -> None:
        update = kwargs.get("UpdateExpression", "")
        # a session renewal: sets the session row's expiry, on a row that exists
        if (
            ok
            and "#su" in update
            and "attribute_not_exists" not in kwargs.get("ConditionExpression", "")
        ):
            print(f"renewed {time.monotonic()}", flush=True)

    async with open_client(endpoint_url) as raw:
        store = LockStore(CountingClient(raw, on_update=on_update), table)
        locker = Locker(store, max_clock_skew=0.5)
        request = LeaseRequest(f"holder-{os.getpid()}", duration)
        async with locker.session(request) as session, contextlib.AsyncExitStack() as stack:
            for item in items:
                await stack.enter_async_context(session.lease(item))
            print(f"held {time.monotonic()}", flush=True)
            await asyncio.Event().wait()  # until SIGKILL


async def failover(
    endpoint_url: str, repeats: int, *, duration: float, skew: float, wait: float
) -> dict[str, Any]:
    """SIGKILL a session holder of 3 items; time until a session-mode waiter holds them."""
    async with open_client(endpoint_url) as client:
        store = LockStore(client, table_name("session-crash"))
        await store.create_table()
        groups = [[f"item-{r}-{i}" for i in range(3)] for r in range(repeats)]
        await asyncio.gather(*(store.add_item(i) for group in groups for i in group))

        async def one(items: list[str]) -> dict[str, Any]:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "benchmarks.sessions",
                endpoint_url,
                store.table_name,
                ",".join(items),
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
            locker = Locker(store, max_clock_skew=skew)
            taken: list[float] = []

            async def take(item: str) -> None:
                async with session.lease(item, wait_period=wait):
                    taken.append(time.monotonic() - killed)

            async with (
                locker,
                locker.session(LeaseRequest(f"waiter-{items[0]}", duration)) as session,
                asyncio.TaskGroup() as group,
            ):
                for item in items:
                    group.create_task(take(item))
            return {
                "first_s": min(taken),
                "all_s": max(taken),
                "since_last_write_s": max(taken) + killed - last_write,
                "killed_after_write_s": killed - last_write,
            }

        runs = await asyncio.gather(*(one(items) for items in groups))
    bound = duration + skew
    first = summary(r["first_s"] for r in runs)
    every = summary(r["all_s"] for r in runs)
    return {
        "duration_s": duration,
        "max_clock_skew_s": skew,
        "wait_period_s": wait,
        "items_per_session": 3,
        "first_item_s": first,
        "all_items_s": every,
        "ratio_median": ratio(every["median"], bound),
        "ratio_max": ratio(every["max"], bound),
        "target": 1.1,
        "runs": runs,
    }


# -- the rows of the figures table -------------------------------------------------------------


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(figure, aiolease, reference, ratio, target, met) rows of the sessions section."""
    out: list[tuple[str, str, str, str, str, str]] = []
    writes, cpu = "writes_per_hour_at_10s", "cpu_per_lease_hour_at_10s_s"
    if keep := results.get("sessions"):
        by = {(s["mode"], s["n"]): s for s in keep["steps"]}
        for n in sorted({s["n"] for s in keep["steps"]}):
            single, session = by.get(("single", n)), by.get(("session", n))
            if not single or not session:
                continue
            out.append(
                (
                    f"writes/hour to keep N={n} alive at a 10 s heartbeat, session vs single "
                    f"(lost {single['lost']} / {session['lost']})",
                    f"{session['writes_per_hour_at_10s']:,.0f}",
                    f"{single['writes_per_hour_at_10s']:,.0f}",
                    f"{ratio(session[writes], single[writes]):.4f}",
                    "-",
                    "-",
                )
            )
        for n in sorted({s["n"] for s in keep["steps"]}):
            single, session = by.get(("single", n)), by.get(("session", n))
            if not single or not session:
                continue
            out.append(
                (
                    f"client CPU per held lease-hour at a 10 s heartbeat, N={n}, session vs single",
                    f"{session['cpu_per_lease_hour_at_10s_s'] * 1000:.2f} ms",
                    f"{single['cpu_per_lease_hour_at_10s_s'] * 1000:.2f} ms",
                    f"{ratio(session[cpu], single[cpu]):.3f}",
                    "-",
                    "-",
                )
            )
        sessions = [s for s in keep["steps"] if s["mode"] == "session"]
        if sessions:
            # Every session step has the same window: flat means the same count, give or
            # take the one write a window's phase can add or drop.
            counts = [s["writes"] for s in sessions]
            out.append(
                (
                    "session mode: writes per window for N = "
                    + ", ".join(str(s["n"]) for s in sessions),
                    ", ".join(str(c) for c in counts),
                    "",
                    "",
                    "flat (within 1)",
                    "yes" if max(counts) - min(counts) <= 1 else "NO",
                )
            )
        c = keep["cost"]
        for mode in ("single", "session"):
            m = c[mode]
            if m["usd_per_month_measured"] is None:
                continue
            out.append(
                (
                    f"monthly write cost, {c['leases']} leases, 10 s heartbeat, {mode} mode "
                    f"(${c['price_per_million_writes']}/million writes)",
                    f"${m['usd_per_month_measured']:,.2f}",
                    f"${m['usd_per_month_rule']:,.2f} (by rule)",
                    "",
                    "",
                    "",
                )
            )
    if crash := results.get("sessions_failover"):
        bound = crash["duration_s"] + crash["max_clock_skew_s"]
        out.append(
            (
                f"session failover after SIGKILL (all 3 items), median (max) / (duration "
                f"{crash['duration_s']:g} + skew {crash['max_clock_skew_s']:g} s)",
                f"{crash['all_items_s']['median']:.2f} s ({crash['all_items_s']['max']:.2f} s)",
                f"{bound:.2f} s",
                f"{crash['ratio_median']:.2f} ({crash['ratio_max']:.2f})",
                "<= 1.1",
                "yes" if crash["ratio_max"] <= 1.1 else "NO",
            )
        )
    return out


def markdown(results: dict[str, Any]) -> str:
    """The per-N table and the cost table, in Markdown, for docs/performance.md."""
    keep = results.get("sessions")
    if not keep:
        return ""
    lines = [
        "| mode | N | heartbeat measured | window | writes counted | writes/hour (measured "
        "heartbeat) | writes/hour at a 10 s heartbeat | writes per lease per period | "
        "client CPU per lease-hour at a 10 s heartbeat | leases lost |",
        "|" + " --- |" * 10,
    ]
    for s in sorted(keep["steps"], key=lambda s: (s["mode"] != "single", s["n"])):
        lines.append(
            f"| {s['mode']} | {s['n']} | {s['period_s']:g} s | {s['window_s']:.1f} s | "
            f"{s['writes']} | {s['writes_per_hour']:,.0f} | {s['writes_per_hour_at_10s']:,.0f} | "
            f"{s['writes_per_lease_period']:.3f} | "
            f"{s['cpu_per_lease_hour_at_10s_s'] * 1000:.2f} ms | {s['lost']} |"
        )
    c = keep["cost"]
    lines += [
        "",
        f"| {c['leases']} leases, {c['heartbeat_s']:g} s heartbeat | writes/hour | "
        f"writes/month ({c['hours_per_month']} h) | cost/month |",
        "| --- | --- | --- | --- |",
    ]
    for mode, label in (("single", "one lease each"), ("session", "one session")):
        m = c[mode]
        if m["writes_per_hour_measured"] is not None:
            lines.append(
                f"| {label}, measured | {m['writes_per_hour_measured']:,.0f} | "
                f"{m['writes_per_month_measured']:,.0f} | ${m['usd_per_month_measured']:,.2f} |"
            )
        rule = m["writes_per_hour_rule"]
        lines.append(
            f"| {label}, by rule | {rule:,.0f} | {rule * c['hours_per_month']:,.0f} | "
            f"${m['usd_per_month_rule']:,.2f} |"
        )
    lines += ["", f"Price: {c['price']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    url, table, items, seconds = sys.argv[1:5]
    asyncio.run(_holder(url, table, items.split(","), float(seconds)))
