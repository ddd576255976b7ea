"""The demo's end: the summary (failovers, the exclusion check) and the timeline picture."""

from __future__ import annotations

import json
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

from aiolease.testing.history import Hold, check_exclusion, count_handovers

from ._config import CLOCK_SKEW
from ._state import Demo, Victim

__all__ = ["summarize", "write_timeline"]


def summarize(demo: Demo, interrupted: bool) -> int:
    """Print the summary; returns the exit code (0 only if the exclusion check passed)."""
    holds = sorted(demo.history.holds.values(), key=lambda h: h.start)
    problems = check_exclusion(holds)
    crashed = [w.name for w in demo.workers if w.fate == "crashed"]
    lost = sum(h.why == "lost" for h in holds)
    handovers = count_handovers(holds)
    elapsed = time.time() - demo.t0
    print()
    print(f"Summary ({elapsed:.0f}s, {len(demo.workers)} workers, {len(demo.items)} items)")
    print(
        f"  leases obtained: {len(holds)}   renewals: {demo.history.renewals}   "
        f"handovers: {handovers}   leases lost: {lost}"
    )
    _print_failovers(demo)
    for name in crashed:
        print(f"  {name} exited by itself: see its log above")
    ok = not problems and bool(holds) and not crashed
    if problems:
        print(f"  exclusion check: FAILED, {len(problems)} violation(s):")
        for problem in problems[:20]:
            print(f"    {problem}")
    elif not holds:
        print("  exclusion check: nothing to check, no lease was obtained")
    else:
        print(
            f"  exclusion check: passed: {len(holds)} holds of {len(demo.items)} items, "
            "no two holds of one item overlap, fencing tokens strictly increase per item"
        )
    if demo.args.report:
        try:
            Path(demo.args.report).write_text(json.dumps(_report(demo, holds), indent=2) + "\n")
            print(f"  report: {demo.args.report}")
        except OSError as exc:
            print(f"  report: not written ({exc})")
            ok = False
    if demo.args.timeline:
        try:
            write_timeline(Path(demo.args.timeline), demo, holds)
            print(f"  timeline: {demo.args.timeline}")
        except (OSError, ValueError) as exc:
            print(f"  timeline: not written ({exc})")
            ok = False
    if interrupted:
        print("  (interrupted before the end)")
        return 130
    return 0 if ok else 1


def _report(demo: Demo, holds: list[Hold]) -> dict[str, Any]:
    """The figures --report writes (times in seconds since the start)."""
    return {
        "mode": "failover",
        "items": len(demo.items),
        "workers": len(demo.workers),
        "seconds": round(time.time() - demo.t0, 2),
        "holds": len(holds),
        "renewals": demo.history.renewals,
        "handovers": count_handovers(holds),
        "exclusion_problems": check_exclusion(holds),
        "failovers": [
            {
                "item": v.item,
                "worker": v.worker,
                "how": v.how,
                "at": round(v.at - demo.t0, 2),
                "taken_by": None if v.takeover is None else v.takeover.lessee,
                "after": None if v.takeover is None else round(v.takeover.start - v.at, 2),
            }
            for v in demo.victims
        ],
    }


def _print_failovers(demo: Demo) -> None:
    """One line per worker killed or stopped: who took its item over, and how fast."""
    print("  failovers:")
    for victim in demo.victims:
        verb = "killed" if victim.how == "SIGKILL" else "stopped"
        line = f"    {victim.item}: {victim.worker} ({victim.how}) -> "
        if victim.takeover is None:
            line += "nobody before the demo ended"
        else:
            seconds = victim.takeover.start - victim.at
            line += f"{victim.takeover.lessee} in {seconds:.1f}s"
            if victim.how == "SIGKILL":
                dead = demo.history.holds.get((victim.item, victim.token))
                if dead is not None and dead.end is not None:
                    line += (
                        f" (its lease ran {dead.end - victim.at:.1f}s more after the kill; "
                        f"then + {CLOCK_SKEW}s clock-skew allowance)"
                    )
            else:
                line += " (released on exit: no expiry to wait for)"
        print(f"{line}   [{verb} at {victim.at - demo.t0:.1f}s]")
    if not demo.victims:
        print("    none (no worker held a lease when it was time to kill one)")


# Token labels: 7-point digits, about 0.6 em wide each, with a little air around them.
_TOKEN_POINTS = 7
_LABEL_PAD_INCHES = 0.04
_SKEW_COLOR = "lightgray"


def write_timeline(path: Path, demo: Demo, holds: list[Hold]) -> None:
    """A picture of who held what when: a bar per hold, one row per item, color per worker.

    A dashed line marks each kill or stop (token labels move aside from it), and a gray
    stretch after a dead holder's lease is the clock-skew allowance the taker waited.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    palette = colormaps["tab10"]
    names = [w.name for w in demo.workers]
    color = {name: palette(i % 10) for i, name in enumerate(names)}
    figure = Figure(figsize=(11, 1.2 + 0.55 * len(demo.items)), layout="constrained")
    axes = figure.add_subplot()
    rows = {item: i for i, item in enumerate(demo.items)}
    drawn = [h for h in holds if h.item in rows and h.end is not None]
    labels: list[tuple[Hold, float, float]] = []
    for hold in drawn:
        assert hold.end is not None
        y = rows[hold.item]
        body_end = hold.died_at if hold.died_at is not None else hold.end
        axes.broken_barh(
            [(hold.start - demo.t0, body_end - hold.start)],
            (y - 0.35, 0.7),
            facecolors=color[hold.lessee],
        )
        if hold.died_at is not None:  # the dead holder's lease, still valid until expiry
            axes.broken_barh(
                [(body_end - demo.t0, hold.end - body_end)],
                (y - 0.35, 0.7),
                facecolors="none",
                edgecolors=color[hold.lessee],
                hatch="///",
            )
        labels.append((hold, hold.start - demo.t0, body_end - demo.t0))
    events = [victim.at - demo.t0 for victim in demo.victims]
    for victim, x in zip(demo.victims, events, strict=True):
        axes.axvline(x, color="black", linestyle="--", linewidth=1)
        axes.text(x, -0.6, f" {victim.how} {victim.worker}", fontsize=8, va="bottom")
        _draw_skew_gap(axes, demo, victim, rows)
    end = max((h.end - demo.t0 for h in drawn if h.end is not None), default=1.0) + 0.5
    axes.set_xlim(0, end)
    axes.set_yticks(range(len(demo.items)), demo.items)
    axes.set_ylim(len(demo.items) - 0.2, -0.9)
    axes.set_xlabel("seconds since the workers started (numbers: fencing tokens)")
    axes.set_title("aiolease demo: who held which item when (hatched: a dead holder's lease)")
    handles = [Patch(facecolor=color[name], label=name) for name in names]
    handles.append(Patch(facecolor=_SKEW_COLOR, label=f"clock-skew allowance ({CLOCK_SKEW}s)"))
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    # The layout is final now: how many seconds an inch of the x axis spans is known.
    figure.draw_without_rendering()
    seconds_per_inch = end / (axes.get_window_extent().width / figure.dpi)
    for hold, start, stop in labels:
        text = str(hold.token)
        inches = len(text) * 0.6 * _TOKEN_POINTS / 72 / 2 + _LABEL_PAD_INCHES
        where = label_position(start, stop, events, inches * seconds_per_inch)
        if where is not None:
            axes.text(
                where,
                rows[hold.item],
                text,
                ha="center",
                va="center",
                fontsize=_TOKEN_POINTS,
                color="white",
            )
    figure.savefig(path)


def label_position(start: float, end: float, avoid: list[float], half_width: float) -> float | None:
    """Where to centre a label of ``half_width`` on the bar ``[start, end]``, or ``None``.

    The middle of the widest stretch of the bar between the lines at ``avoid``, so that no
    line crosses the label; ``None`` when the label fits in no stretch.
    """
    edges = [start, *sorted(x for x in avoid if start < x < end), end]
    left, right = max(pairwise(edges), key=lambda s: s[1] - s[0])
    if right - left < 2 * half_width:
        return None
    return (left + right) / 2


def _draw_skew_gap(axes: Any, demo: Demo, victim: Victim, rows: dict[str, int]) -> None:
    """After a killed holder's lease: the stretch the taker waited for clock skew, named."""
    dead = demo.history.holds.get((victim.item, victim.token))
    if victim.how != "SIGKILL" or dead is None or dead.end is None or victim.item not in rows:
        return
    y = rows[victim.item]
    start = dead.end - demo.t0
    axes.broken_barh([(start, CLOCK_SKEW)], (y - 0.35, 0.7), facecolors=_SKEW_COLOR)
    axes.text(
        start + CLOCK_SKEW / 2,
        y + 0.5,
        f"+{CLOCK_SKEW}s clock skew",
        ha="center",
        va="center",
        fontsize=6,
    )
