"""--balance's picture: items per worker over time above, each item's holders below.

Below, one row per item and a bar per hold in its worker's color, so a handoff is where
the color changes (marked with a black tick, a takeover after the kill with a red one). A
dashed line marks each moment of the script (start, join, SIGTERM, SIGKILL) across both.
"""

from __future__ import annotations

from pathlib import Path

from ._balance import membership
from ._balance_figures import counts_at, members_at, passings
from ._state import Demo, Moment

__all__ = ["write_balance_timeline"]

_ROW_INCHES = 0.24


def write_balance_timeline(path: Path, demo: Demo) -> None:
    """Draw the run to ``path`` (.svg or .png)."""
    from matplotlib import colormaps
    from matplotlib.artist import Artist
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    holds = sorted(demo.history.holds.values(), key=lambda h: h.start)
    drawn = [h for h in holds if h.end is not None]
    palette = colormaps["tab10"]
    names = [w.name for w in demo.workers if w.joined_at is not None]
    color = {name: palette(i % 10) for i, name in enumerate(names)}
    end = max([demo.ended - demo.t0, *(h.end - demo.t0 for h in drawn if h.end)]) + 0.5
    figure = Figure(figsize=(12, 3.2 + _ROW_INCHES * len(demo.items)), layout="constrained")
    top, bottom = figure.subplots(
        2, 1, sharex=True, height_ratios=[2.2, _ROW_INCHES * len(demo.items)]
    )
    # Above: items per worker, stepping at every start and end of a hold.
    members = membership(demo)
    changes = sorted(
        {0.0, end} | {h.start - demo.t0 for h in drawn} | {h.end - demo.t0 for h in drawn if h.end}
    )
    highest = 1
    for name in names:
        joined, left = members[name]
        xs = [t for t in changes if joined - demo.t0 <= t]
        ys = [counts_at(drawn, [name], t + demo.t0)[name] for t in xs]
        highest = max([highest, *ys])
        top.step(xs, ys, where="post", color=color[name], linewidth=1.6, label=name)
        if left is not None:
            top.plot([left - demo.t0], [counts_at(drawn, [name], left)[name]], "x", color="black")
    spreads = []
    for t in changes:
        counts = counts_at(drawn, members_at(members, t + demo.t0), t + demo.t0)
        spreads.append(max(counts.values()) - min(counts.values()) if counts else 0)
    top.step(changes, spreads, where="post", color="gray", linestyle=":", label="spread (max-min)")
    top.set_ylabel("items held")
    top.set_ylim(0, highest * 1.3 + 0.5)  # room for the moments' labels at the top
    top.grid(axis="y", alpha=0.3)
    top.set_title(
        f"aiolease demo --balance: {len(demo.items)} items served by session.serve(); "
        "items per worker (above) and each item's holder (below)",
        fontsize=10,
    )
    # Below: each item's holders.
    rows = {item: i for i, item in enumerate(demo.items)}
    for hold in drawn:
        assert hold.end is not None
        body_end = hold.died_at if hold.died_at is not None else hold.end
        y = rows[hold.item]
        bottom.broken_barh(
            [(hold.start - demo.t0, body_end - hold.start)],
            (y - 0.4, 0.8),
            facecolors=color.get(hold.lessee, "black"),
        )
        if hold.died_at is not None:  # the dead worker's session, still valid until expiry
            bottom.broken_barh(
                [(body_end - demo.t0, hold.end - body_end)],
                (y - 0.4, 0.8),
                facecolors="none",
                edgecolors=color.get(hold.lessee, "black"),
                hatch="///",
            )
    for passing in passings(drawn):
        x = passing.after.start - demo.t0
        y = rows[passing.item]
        bottom.plot(
            [x, x], [y - 0.5, y + 0.5], color="black" if passing.handoff else "red", linewidth=1.4
        )
    ends = [*demo.moments, Moment(demo.ended, "stop all", ())] if demo.ended else demo.moments
    for moment in ends:
        x = moment.at - demo.t0
        for axes in (top, bottom):
            axes.axvline(x, color="black", linestyle="--", linewidth=0.8)
        label = moment.what if moment.what == "start" else " ".join([moment.what, *moment.workers])
        last = moment.what == "stop all"  # at the right edge: its label goes to the left
        top.text(
            x,
            0.97,
            f"{label} " if last else f" {label}",
            transform=top.get_xaxis_transform(),
            fontsize=8,
            va="top",
            ha="right" if last else "left",
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0},
        )
    bottom.set_xlim(0, end)
    bottom.set_yticks(range(len(demo.items)), demo.items, fontsize=7)
    bottom.set_ylim(len(demo.items) - 0.4, -0.6)
    bottom.set_xlabel("seconds since the first workers started")
    handles: list[Artist] = [Patch(facecolor=color[name], label=name) for name in names]
    handles += [
        Line2D([], [], color="black", linewidth=1.4, label="handoff (released, taken)"),
        Line2D([], [], color="red", linewidth=1.4, label="takeover after the kill"),
        Patch(facecolor="none", edgecolor="gray", hatch="///", label="killed worker's session"),
        Line2D([], [], color="gray", linestyle=":", label="spread (max-min)"),
    ]
    bottom.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    figure.savefig(path)
