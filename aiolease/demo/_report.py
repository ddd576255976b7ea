"""The demo's end: the summary (failovers, the exclusion check) and the timeline picture."""

from __future__ import annotations

import time
from pathlib import Path

from aiolease.testing.history import Hold, check_exclusion, count_handovers

from ._config import CLOCK_SKEW
from ._state import Demo

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


def write_timeline(path: Path, demo: Demo, holds: list[Hold]) -> None:
    """A picture of who held what when: a bar per hold, one row per item, color per worker."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    palette = colormaps["tab10"]
    names = [w.name for w in demo.workers]
    color = {name: palette(i % 10) for i, name in enumerate(names)}
    figure = Figure(figsize=(11, 1.2 + 0.55 * len(demo.items)), layout="constrained")
    axes = figure.add_subplot()
    rows = {item: i for i, item in enumerate(demo.items)}
    for hold in holds:
        if hold.item not in rows or hold.end is None:
            continue
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
        if body_end - hold.start > 0.8:
            axes.text(
                (hold.start + body_end) / 2 - demo.t0,
                y,
                str(hold.token),
                ha="center",
                va="center",
                fontsize=7,
                color="white",
            )
    for victim in demo.victims:
        x = victim.at - demo.t0
        axes.axvline(x, color="black", linestyle="--", linewidth=1)
        axes.text(x, -0.6, f" {victim.how} {victim.worker}", fontsize=8, va="bottom")
    axes.set_yticks(range(len(demo.items)), demo.items)
    axes.set_ylim(len(demo.items) - 0.5, -0.9)
    axes.set_xlabel("seconds since the workers started (numbers: fencing tokens)")
    axes.set_title("aiolease demo: who held which item when (hatched: a dead holder's lease)")
    handles = [Patch(facecolor=color[name], label=name) for name in names]
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    figure.savefig(path)
