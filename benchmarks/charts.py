"""PNG charts of a benchmark run (matplotlib, installed only in the bench session)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(results: dict[str, Any], out: Path) -> list[Path]:
    """Write the charts next to the JSON; returns their paths (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths: list[Path] = []

    latency = results.get("latency")
    if latency:
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, label in (
            ("aiolease", "aiolease acquire + release"),
            ("same_requests", "the same 2 requests, bare client"),
            ("floor", "2 x bare UpdateItem (floor)"),
        ):
            data = sorted(x * 1000 for x in latency["samples"][name])
            ys = [(i + 1) / len(data) for i in range(len(data))]
            ax.step(data, ys, where="post", label=label)
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("fraction of calls")
        ax.set_title(f"Acquire + release, one worker (median ratio {latency['ratio_median']:.2f})")
        ax.grid(alpha=0.3)
        ax.legend()
        paths.append(_save(fig, out / "latency.png"))

    hold = results.get("renewals")
    if hold and hold.get("aiolease"):
        fig, ax = plt.subplots(figsize=(7, 4))
        for key, label, marker in (
            ("aiolease", "aiolease", "o"),
            ("peer", "python-dynamodb-lock", "s"),
        ):
            steps = hold.get(key) or []
            if steps:
                ax.plot(
                    [s["needed_per_s"] for s in steps],
                    [s["achieved_per_s"] for s in steps],
                    marker=marker,
                    label=label,
                )
                for s in steps:
                    if s["lost"]:
                        ax.annotate(f"{s['lost']} lost", (s["needed_per_s"], s["achieved_per_s"]))
        top = max(s["needed_per_s"] for s in hold["aiolease"] + (hold.get("peer") or []))
        ax.plot([0, top], [0, top], ":", color="grey", label="achieved = needed")
        ax.axhline(hold["saturated_writes_per_s"], color="red", ls="--", label="server saturated")
        ax.set_xlabel("renewals/s needed (N leases / period)")
        ax.set_ylabel("renewals/s achieved")
        ax.set_title(f"Holding N leases, heartbeat period {hold['period_s']:g} s")
        ax.grid(alpha=0.3)
        ax.legend()
        paths.append(_save(fig, out / "renewals.png"))

    crash, release = results.get("failover_crash"), results.get("failover_release")
    if crash and release:
        fig, (left, right) = plt.subplots(1, 2, figsize=(8, 4))
        values = [r["takeover_s"] for r in crash["runs"]]
        left.plot([1] * len(values), values, "o", alpha=0.6)
        bound = crash["duration_s"] + crash["max_clock_skew_s"]
        left.axhline(bound, color="grey", ls=":", label="duration + skew")
        left.axhline(bound * crash["target"], color="red", ls="--", label="target (1.1x)")
        left.set_xticks([1], ["SIGKILL"])
        left.set_ylabel("time to takeover (s)")
        left.set_ylim(0, bound * 1.3)
        left.legend(fontsize=8)
        right.plot([1] * len(release["runs"]), release["runs"], "o", alpha=0.6)
        right.axhline(
            release["wait_period_s"], color="red", ls="--", label="target: one wait period"
        )
        right.set_xticks([1], ["graceful release"])
        right.set_ylim(0, release["wait_period_s"] * 1.3)
        right.legend(fontsize=8)
        fig.suptitle("Failover: time until another worker holds the item")
        paths.append(_save(fig, out / "failover.png"))

    race = results.get("contention")
    if race:
        fig, ax = plt.subplots(figsize=(6, 4))
        names = ["aiolease", "seed algorithm"]
        values = [race["aiolease"]["writes_per_lease"], race["seed"]["writes_per_lease"]]
        bars = ax.bar(names, values, color=["tab:blue", "tab:grey"])
        ax.bar_label(bars, fmt="%.2f")
        ax.set_yscale("log")
        ax.set_ylim(bottom=1)
        ax.set_ylabel("write attempts per obtained lease (log)")
        cut = f" (seed cut off after {race['seed']['obtained']})" if race["seed"]["capped"] else ""
        workers, items = race["aiolease"]["workers"], race["aiolease"]["items"]
        ax.set_title(f"{workers} workers racing for {items} items{cut}")
        paths.append(_save(fig, out / "contention.png"))

    keep = results.get("sessions")
    if keep and keep.get("steps"):
        fig, ax = plt.subplots(figsize=(7, 4))
        for mode, label, marker in (
            ("single", "one lease each (locker.lease)", "o"),
            ("session", "one session (locker.session)", "s"),
        ):
            steps = sorted((s for s in keep["steps"] if s["mode"] == mode), key=lambda s: s["n"])
            if steps:
                ax.plot(
                    [s["n"] for s in steps],
                    [s["writes_per_hour_at_10s"] for s in steps],
                    marker=marker,
                    label=label,
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("leases held by one worker (N)")
        ax.set_ylabel("writes per hour (10 s heartbeat)")
        ax.set_title("Writes to keep N leases alive")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
        paths.append(_save(fig, out / "sessions.png"))

    balance = (results.get("balancing") or {}).get("convergence")
    if balance and balance.get("samples"):
        fig, ax = plt.subplots(figsize=(8, 4))
        names = sorted({name for _, counts in balance["samples"] for name in counts})
        for name in names:
            xs = [t for t, counts in balance["samples"] if name in counts]
            ys = [counts[name] for _, counts in balance["samples"] if name in counts]
            ax.step(xs, ys, where="post", label=name, linewidth=1)
        ax.set_xlabel("seconds (a worker joins, one stops gracefully, one freezes)")
        ax.set_ylabel("items held")
        ax.set_title(f"session.serve(): items per worker, {balance['items']} items")
        ax.grid(alpha=0.3)
        ax.legend(ncol=3, fontsize="small")
        paths.append(_save(fig, out / "balancing.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
