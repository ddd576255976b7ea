"""``aiolease demo --balance``: workers serve a pool with ``session.serve()``; the script.

The first workers start together; at set moments (fractions of --duration, each waiting
for the pool to have settled since the one before) two more join, one is stopped
gracefully (SIGTERM: it drains and releases its items) and one is killed (SIGKILL: its
items are taken over once its session has expired). Then the summary and the report
(:mod:`._balance_figures`) say how long the pool took to balance after each moment, how
many items were handed off, and that no two workers held one item at once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from aiolease import LockStore
from aiolease.testing.history import check_exclusion

from ._balance_figures import (
    counts_at,
    is_balanced,
    members_at,
    overlaps,
    passings,
    phases,
    seconds_summary,
    spread,
)
from ._config import (
    BALANCE_LATE,
    BALANCE_OVERTIME,
    BALANCE_SCRIPT,
    BALANCE_SETTLED,
    CLOCK_SKEW,
    LEASE_SECONDS,
    REFRESH,
    WAIT_PERIOD,
)
from ._orchestrator import poll, refresh_rows, start_worker
from ._state import Demo, Moment, Worker
from ._views import PlainView

__all__ = [
    "balance_report",
    "first_workers",
    "membership",
    "orchestrate_balance",
    "summarize_balance",
]


def first_workers(demo: Demo) -> int:
    """How many workers start at once: all but the two that join later."""
    return len(demo.workers) - sum(what == "join" for _, what in BALANCE_SCRIPT)


def membership(demo: Demo) -> dict[str, tuple[float, float | None]]:
    """Each started worker's membership: from its start to its stop or kill."""
    return {w.name: (w.joined_at, w.signalled_at) for w in demo.workers if w.joined_at is not None}


def live_counts(demo: Demo, at: float) -> dict[str, int]:
    """Items per member at ``at``, from the workers' records."""
    members = members_at(membership(demo), at)
    return counts_at(demo.history.holds.values(), members, at)


def _member_to_signal(demo: Demo) -> Worker | None:
    """The longest-serving member still running (the first started, first stopped)."""
    live = [w for w in demo.workers if w.joined_at is not None and not w.fate]
    return min(live, key=lambda w: w.joined_at or 0.0) if live else None


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items())


async def _act(demo: Demo, what: str) -> None:
    """Carry out one moment of the script now."""
    now = time.time()
    if what == "join":
        joiner = next((w for w in demo.workers if w.joined_at is None), None)
        if joiner is None:
            return
        start_worker(joiner, now)
        demo.moments.append(Moment(now, what, (joiner.name,)))
        members = len(members_at(membership(demo), now))
        low, high = len(demo.items) // members, -(-len(demo.items) // members)
        share = str(low) if low == high else f"{low}-{high}"
        demo.event(
            f"JOIN {joiner.name}: {members} workers now, a fair share is {share} items",
            notable=True,
            at=now,
        )
        return
    worker = _member_to_signal(demo)
    if worker is None or worker.process is None:
        return
    held = live_counts(demo, now).get(worker.name, 0)
    worker.signalled_at = now
    demo.moments.append(Moment(now, what, (worker.name,)))
    if what == "SIGKILL":
        worker.fate = "killed"
        worker.process.send_signal(signal.SIGKILL)
        await worker.process.wait()
        poll(demo)  # what it recorded; its holds then last until its session's expiry
        demo.history.died(worker.name, now)
        demo.event(
            f"SIGKILL {worker.name} holding {held} items: no release, its session must "
            "expire first",
            notable=True,
            at=now,
        )
    else:
        worker.fate = "stopped"
        worker.process.send_signal(signal.SIGTERM)
        demo.event(
            f"SIGTERM {worker.name} holding {held} items: it drains and releases them",
            notable=True,
            at=now,
        )


async def orchestrate_balance(
    demo: Demo, store: LockStore, view: PlainView, interrupted: asyncio.Event
) -> None:
    """Run the script; after --duration, wait (bounded) for the last moment's balance."""
    duration = demo.args.duration
    demo.moments.append(
        Moment(demo.t0, "start", tuple(w.name for w in demo.workers if w.joined_at is not None))
    )
    script = list(BALANCE_SCRIPT)
    balanced_since: float | None = None
    while not interrupted.is_set():
        poll(demo)
        now = time.time()
        counts = live_counts(demo, now)
        if is_balanced(counts, len(demo.items)):
            if balanced_since is None:
                balanced_since = now
                since = now - demo.moments[-1].at
                demo.event(
                    f"balanced {since:.1f}s after the {demo.moments[-1].what}: "
                    f"{_counts_text(counts)} (spread {spread(counts)})",
                    notable=True,
                )
        else:
            balanced_since = None
        settled = balanced_since is not None and now - balanced_since >= BALANCE_SETTLED
        if script:
            fraction, what = script[0]
            due = demo.t0 + fraction * duration
            if now >= due and (settled or now >= due + BALANCE_LATE):
                script.pop(0)
                await _act(demo, what)
                balanced_since = None
        elif now >= demo.t0 + duration and (
            settled or now >= demo.t0 + duration + BALANCE_OVERTIME
        ):
            break
        await refresh_rows(demo, store)
        view.update()
        with suppress(TimeoutError):
            await asyncio.wait_for(interrupted.wait(), REFRESH)
    demo.ended = time.time()


def balance_report(demo: Demo) -> dict[str, Any]:
    """The run's figures, as written by --report (times in seconds since the start)."""
    holds = sorted(demo.history.holds.values(), key=lambda h: h.start)
    end = demo.ended or time.time()
    found = phases(holds, len(demo.items), membership(demo), demo.moments, end)
    moved = passings(holds)
    handoffs = [p for p in moved if p.handoff]
    takeovers = [p for p in moved if not p.handoff]
    steps: dict[str, int] = {}
    for hold in holds:
        steps[hold.item] = steps.get(hold.item, 0) + hold.step
    return {
        "mode": "balance",
        "items": len(demo.items),
        "workers": len(demo.workers),
        "session_seconds": LEASE_SECONDS,
        "wait_period": WAIT_PERIOD,
        "clock_skew": CLOCK_SKEW,
        "seconds": round(end - demo.t0, 2),
        "moments": [
            {
                "at": round(phase.moment.at - demo.t0, 2),
                "what": phase.moment.what,
                "workers": list(phase.moment.workers),
                "members": phase.members,
                "balanced_after": (
                    None if phase.balanced_after is None else round(phase.balanced_after, 2)
                ),
                "spread_at_end": phase.spread_at_end,
            }
            for phase in found
        ],
        "holds": len(holds),
        "handoffs": len(handoffs),
        "handoff_seconds": seconds_summary([p.seconds for p in handoffs]),
        "takeovers": len(takeovers),
        "takeover_seconds": seconds_summary([p.seconds for p in takeovers]),
        "overlaps": overlaps(holds),
        "exclusion_problems": check_exclusion(holds),
        "items_processed": sum(1 for item in demo.items if steps.get(item, 0) > 0),
        "steps": sum(steps.values()),
        "renewals": demo.history.renewals,
        "crashed": [w.name for w in demo.workers if w.fate == "crashed"],
    }


def summarize_balance(demo: Demo, interrupted: bool) -> int:
    """Print the summary, write the report and the timeline; the exit code (0: all passed)."""
    report = balance_report(demo)
    print()
    print(
        f"Summary ({report['seconds']:.0f}s, {report['workers']} workers, "
        f"{report['items']} items, serve() with a {WAIT_PERIOD}s wait period)"
    )
    for moment in report["moments"]:
        after = moment["balanced_after"]
        settled = "not balanced" if after is None else f"balanced after {after:.1f}s"
        who = ", ".join(moment["workers"])
        print(
            f"  {moment['at']:5.1f}s  {moment['what']:<7} {who:<28} -> {moment['members']} "
            f"workers, {settled}"
        )
    handoff, takeover = report["handoff_seconds"], report["takeover_seconds"]
    print(
        f"  handoffs: {report['handoffs']} (released by one worker, taken by another; "
        f"median {_fmt(handoff['median'])}s, max {_fmt(handoff['max'])}s)   "
        f"takeovers after the kill: {report['takeovers']} (max {_fmt(takeover['max'])}s "
        "after the session expired)"
    )
    print(
        f"  items processed: {report['items_processed']} of {report['items']} "
        f"({report['steps']} steps in {report['holds']} holds)"
    )
    problems = report["exclusion_problems"]
    unbalanced = [m for m in report["moments"] if m["balanced_after"] is None]
    if problems:
        print(f"  exclusion check: FAILED, {len(problems)} violation(s):")
        for problem in problems[:20]:
            print(f"    {problem}")
    else:
        print(f"  exclusion check: passed: 0 overlaps in {report['holds']} holds")
    for name in report["crashed"]:
        print(f"  {name} exited by itself: see its log above")
    ok = not problems and not report["crashed"] and report["holds"] > 0
    if demo.args.report:
        try:
            Path(demo.args.report).write_text(json.dumps(report, indent=2) + "\n")
            print(f"  report: {demo.args.report}")
        except OSError as exc:
            print(f"  report: not written ({exc})")
            ok = False
    if demo.args.timeline:
        from ._balance_timeline import write_balance_timeline

        try:
            write_balance_timeline(Path(demo.args.timeline), demo)
            print(f"  timeline: {demo.args.timeline}")
        except (OSError, ValueError) as exc:
            print(f"  timeline: not written ({exc})")
            ok = False
    if unbalanced:
        print(f"  not balanced after: {', '.join(m['what'] for m in unbalanced)}")
    if interrupted:
        print("  (interrupted before the end)")
        return 130
    return 0 if ok else 1


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
