"""Run the benchmark suite against one embedded moto server and report figures and ratios.

``python -m benchmarks [--quick] [--out DIR] [--only SECTION ...] [--copy-charts DIR]``

``python -m benchmarks --only hotpath edf`` prints the figures of docs/performance.md's "Hot
path" section (client CPU and latency against python-dynamodb-lock, the profile of a
renewal before and after, leases lost past capacity first come first served vs earliest
deadline first).

Prints a table, writes ``results.json`` and PNG charts to ``--out`` (``bench-results/``).
Nothing here asserts: targets are reported as met or not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from aiolease.testing import MotoServer

from . import (
    balancing,
    charts,
    contention,
    edf,
    events,
    failover,
    hotpath,
    latency,
    peer,
    sessions,
    throughput,
)
from ._common import load_average, ratio, set_fake_environment

SECTIONS = (
    "latency",
    "cpu",
    "events",
    "renewals",
    "contention",
    "failover",
    "sessions",
    "balancing",
    "hotpath",
    "edf",
)

FULL = {
    "latency_rounds": 300,
    "cpu_calls": 500,
    "events_renewals": 1000,
    "saturate_s": 3.0,
    "fractions": [0.5, 0.7, 0.9, 1.1, 1.3],
    "long_fraction": 0.7,
    "window_s": 12.0,
    "long_window_s": 60.0,
    "peer_fractions": [0.5, 0.7, 0.9, 1.1],
    "peer_window_s": 12.0,
    "workers": 20,
    "items": 200,
    "seed_items": 200,
    "seed_budget_s": 120.0,
    "failover_repeats": 8,
    "hotpath_rounds": 50,
    "profile_calls": 300,
    "edf_fractions": [1.1, 1.3, 2.0],
    "edf_window_s": 10.0,
    "session_ns": [1, 10, 100, 1000],
    "session_min_window_s": 20.0,
    "session_window_periods": 2,
}
QUICK = {
    **FULL,
    "latency_rounds": 100,
    "cpu_calls": 150,
    "events_renewals": 300,
    "saturate_s": 2.0,
    "fractions": [0.7, 1.2],
    "long_window_s": 6.0,
    "window_s": 6.0,
    "peer_fractions": [0.7, 1.2],
    "peer_window_s": 6.0,
    "seed_items": 50,
    "seed_budget_s": 30.0,
    "failover_repeats": 4,
    "hotpath_rounds": 12,
    "profile_calls": 150,
    "edf_fractions": [1.1, 1.3],
    "edf_window_s": 8.0,
    "session_min_window_s": 10.0,
    "session_window_periods": 1,
}
# Holding many leases: a 6 s lease renewed every 2 s (the default third of the lease).
HOLD_DURATION, HOLD_PERIOD = 6.0, 2.0
# Failover: a 3 s lease, 0.5 s clock-skew allowance; waiters poll every 0.25 s after a
# crash and at the default 1 s after a graceful release.
CRASH_DURATION, SKEW, CRASH_WAIT, RELEASE_WAIT = 3.0, 0.5, 0.25, 1.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
    }
    for package in ("aiobotocore", "botocore", "moto", "python-dynamodb-lock"):
        try:
            from importlib.metadata import version

            info[package] = version(package)
        except Exception:
            info[package] = None
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


async def run(args: argparse.Namespace, endpoint_url: str) -> dict[str, Any]:
    cfg = QUICK if args.quick else FULL
    results: dict[str, Any] = {"config": cfg, "load_before": load_average()}
    sections = args.only or SECTIONS
    timings: dict[str, float] = {}

    async def section(name: str, coro: Any) -> Any:
        t0 = time.monotonic()
        log(f"== {name}")
        value = await coro
        timings[name] = round(time.monotonic() - t0, 1)
        results.setdefault("load_during", {})[name] = load_average()
        return value

    if "latency" in sections:
        results["latency"] = await section(
            "latency", latency.acquire_release(endpoint_url, cfg["latency_rounds"])
        )
    if "cpu" in sections:
        results["cpu"] = await section(
            "cpu", latency.cpu_per_renewal(endpoint_url, cfg["cpu_calls"])
        )
    if "events" in sections:
        results["events"] = await section(
            "events", events.events_cost(endpoint_url, cfg["events_renewals"])
        )
    if "renewals" in sections:
        saturation = await section(
            "saturation", throughput.saturated_write_rate(endpoint_url, cfg["saturate_s"])
        )
        results["saturation"] = saturation
        results["renewals"] = await section(
            "renewals",
            throughput.renewal_throughput(
                endpoint_url,
                saturation["writes_per_s"],
                fractions=cfg["fractions"],
                long_fraction=cfg["long_fraction"],
                window=cfg["window_s"],
                long_window=cfg["long_window_s"],
                period=HOLD_PERIOD,
                duration=HOLD_DURATION,
                peer_fractions=cfg["peer_fractions"],
                peer_window=cfg["peer_window_s"],
                log=log,
            ),
        )
    if "contention" in sections:
        results["contention"] = await section(
            "contention",
            contention.contention(
                endpoint_url, cfg["workers"], cfg["items"], cfg["seed_items"], cfg["seed_budget_s"]
            ),
        )
    if "failover" in sections:
        results["failover_crash"] = await section(
            "failover (crash)",
            failover.crash(
                endpoint_url,
                cfg["failover_repeats"],
                duration=CRASH_DURATION,
                skew=SKEW,
                wait=CRASH_WAIT,
            ),
        )
        results["failover_release"] = await section(
            "failover (release)",
            failover.release(
                endpoint_url, cfg["failover_repeats"], duration=CRASH_DURATION, wait=RELEASE_WAIT
            ),
        )
    if "hotpath" in sections:
        results["hotpath"] = await section(
            "hotpath", hotpath.hot_path(endpoint_url, cfg["hotpath_rounds"])
        )
        results["hotpath_profile"] = await section(
            "hotpath profile", hotpath.profile_renewals(endpoint_url, cfg["profile_calls"])
        )
    if "edf" in sections:
        results["edf"] = await section(
            "edf", edf.edf(endpoint_url, cfg["edf_fractions"], cfg["edf_window_s"])
        )
    if "sessions" in sections:
        results["sessions"] = await section(
            "sessions (keeping N leases alive)",
            sessions.keep_alive(
                endpoint_url,
                cfg["session_ns"],
                min_window_s=cfg["session_min_window_s"],
                window_periods=cfg["session_window_periods"],
                log=log,
            ),
        )
        results["sessions_failover"] = await section(
            "sessions (failover after SIGKILL)",
            sessions.failover(
                endpoint_url,
                cfg["failover_repeats"],
                duration=CRASH_DURATION,
                skew=SKEW,
                wait=CRASH_WAIT,
            ),
        )
    if "balancing" in sections:
        results["balancing"] = await section(
            "balancing (session.serve: race, join, leave)", balancing.balancing(endpoint_url)
        )
    results["seconds"] = timings
    results["load_after"] = load_average()
    return results


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(figure, aiolease, reference, ratio, target, met) for the terminal and the docs."""
    out: list[tuple[str, str, str, str, str, str]] = []

    def ms(x: float) -> str:
        return f"{x * 1000:.2f} ms"

    def met(ok: bool | None) -> str:
        return "-" if ok is None else ("yes" if ok else "NO")

    if lat := results.get("latency"):
        out.append(
            (
                "acquire+release median (vs 2 bare UpdateItem)",
                ms(lat["aiolease_s"]["median"]),
                ms(lat["floor_s"]["median"]),
                f"{lat['ratio_median']:.2f}",
                "<= 1.10",
                met(lat["ratio_median"] <= 1.10),
            )
        )
        out.append(
            (
                "  same two requests sent bare (server cost of the expressions)",
                ms(lat["same_requests_s"]["median"]),
                ms(lat["floor_s"]["median"]),
                f"{lat['same_requests_ratio_median']:.2f}",
                "-",
                "-",
            )
        )
        out.append(
            (
                "  aiolease vs the same two requests sent bare (library overhead)",
                ms(lat["aiolease_s"]["median"]),
                ms(lat["same_requests_s"]["median"]),
                f"{lat['library_ratio_median']:.2f}",
                "-",
                "-",
            )
        )
        out.append(
            (
                "acquire+release p99",
                ms(lat["aiolease_s"]["p99"]),
                ms(lat["floor_s"]["p99"]),
                f"{lat['ratio_p99']:.2f}",
                "-",
                "-",
            )
        )
    if cpu := results.get("cpu"):
        out.append(
            (
                "client CPU per renewal (vs bare UpdateItem)",
                ms(cpu["aiolease_cpu_s"]),
                ms(cpu["floor_cpu_s"]),
                f"{cpu['ratio']:.2f}",
                "<= 1.15",
                met(cpu["ratio"] <= 1.15),
            )
        )
        p = cpu["peer"]
        out.append(
            (
                f"{peer.PEER} CPU per renewal (boto3 bare: {ms(p['boto3_floor_cpu_s'])})",
                ms(p["cpu_s"]),
                ms(cpu["floor_cpu_s"]),
                f"{cpu['peer_ratio']:.2f}",
                "-",
                "-",
            )
        )
    if ev := results.get("events"):
        out.append(
            (
                "client CPU per heartbeat renewal, events+metrics on (vs off)",
                ms(ev["on_cpu_s"]),
                ms(ev["off_cpu_s"]),
                f"{ev['ratio']:.3f}",
                f"<= {ev['target']:.2f}",
                met(ev["ratio"] <= ev["target"]),
            )
        )
        for part in ("events", "metrics"):
            out.append(
                (
                    f"  {part} only (vs off)",
                    ms(ev[f"{part}_cpu_s"]),
                    ms(ev["off_cpu_s"]),
                    f"{ev[f'{part}_ratio']:.3f}",
                    "-",
                    "-",
                )
            )
    if sat := results.get("saturation"):
        rate = f"{sat['writes_per_s']:.0f}/s"
        out.append(("server saturated write rate (bare UpdateItem)", rate, "", "", "", ""))
    if hold := results.get("renewals"):
        saturated = hold["saturated_writes_per_s"]
        for name, steps in (("aiolease", hold["aiolease"]), (peer.PEER, hold["peer"])):
            for s in steps:
                out.append(
                    (
                        f"{name}: N={s['n']} leases ({s['fraction_of_capacity']:.1f}x capacity), "
                        f"lost {s['lost']}, interval p99 "
                        f"{s['interval_s'].get('p99', math.nan):.2f} s",
                        f"{s['achieved_per_s']:.0f}/s",
                        f"{s['needed_per_s']:.0f}/s needed",
                        f"{s['achieved_over_needed']:.2f}",
                        "",
                        "",
                    )
                )
        ours = hold["aiolease"]
        if ours:
            under = [s for s in ours if s["fraction_of_capacity"] <= 0.9]
            best = max(s["achieved_per_s"] for s in ours)
            out.append(
                (
                    "aiolease best renewal rate / saturated rate",
                    f"{best:.0f}/s",
                    f"{saturated:.0f}/s",
                    f"{ratio(best, saturated):.2f}",
                    ">= 0.9",
                    met(ratio(best, saturated) >= 0.9),
                )
            )
            out.append(
                (
                    "aiolease below capacity: leases lost; worst interval p99 / period",
                    str(sum(s["lost"] for s in under)),
                    "",
                    f"{max((s['interval_p99_over_period'] for s in under), default=math.nan):.2f}",
                    "0 lost; <= 1.5",
                    met(
                        bool(under)
                        and sum(s["lost"] for s in under) == 0
                        and max(s["interval_p99_over_period"] for s in under) <= 1.5
                    ),
                )
            )
        if hold["peer"]:
            best = max(s["achieved_per_s"] for s in hold["peer"])
            out.append(
                (
                    f"{peer.PEER} best renewal rate / saturated rate",
                    f"{best:.0f}/s",
                    f"{saturated:.0f}/s",
                    f"{ratio(best, saturated):.2f}",
                    "-",
                    "-",
                )
            )
    if race := results.get("contention"):
        a, s = race["aiolease"], race["seed"]
        out.append(
            (
                f"contention: writes per lease, {a['workers']} workers x {a['items']} items "
                f"(seed: x {s['items']})",
                f"{a['writes_per_lease']:.2f}",
                f"{s['writes_per_lease']:.2f} (seed)",
                f"{ratio(a['writes_per_lease'], s['writes_per_lease']):.3f}",
                "<= 1.3",
                met(a["writes_per_lease"] <= 1.3),
            )
        )
        out.append(
            (
                "  aiolease failed writes with fewer items left than workers / before that",
                f"{a['failed_writes_endgame']} / {a['failed_writes_before_endgame']}",
                f"{s['failed_writes_endgame']} / {s['failed_writes_before_endgame']} (seed)",
                "",
                "",
                "",
            )
        )
        out.append(
            (
                "contention: time until all items taken"
                + (f" (seed cut off: {s['obtained']} taken)" if s["capped"] else ""),
                f"{a['time_to_take_all_s']:.2f} s",
                f"{s['time_to_take_all_s']:.2f} s (seed)",
                "",
                "",
                "",
            )
        )
    if crash := results.get("failover_crash"):
        bound = crash["duration_s"] + crash["max_clock_skew_s"]
        out.append(
            (
                f"failover after SIGKILL, median (max) / (duration {crash['duration_s']:g} + skew "
                f"{crash['max_clock_skew_s']:g} s)",
                f"{crash['takeover_s']['median']:.2f} s ({crash['takeover_s']['max']:.2f} s)",
                f"{bound:.2f} s",
                f"{crash['ratio_median']:.2f} ({crash['ratio_max']:.2f})",
                "<= 1.1",
                met(crash["ratio_max"] <= 1.1),
            )
        )
    if rel := results.get("failover_release"):
        out.append(
            (
                "takeover after a graceful release, median (max) / wait period",
                f"{rel['takeover_s']['median']:.2f} s ({rel['takeover_s']['max']:.2f} s)",
                f"{rel['wait_period_s']:.2f} s",
                f"{rel['ratio_median']:.2f} ({rel['ratio_max']:.2f})",
                "<= 1.0",
                met(rel["ratio_max"] <= 1.0),
            )
        )
    if hot := results.get("hotpath"):
        out += hotpath.hot_path_rows(hot)
    if deadline := results.get("edf"):
        out += edf.edf_rows(deadline)
    out += sessions.rows(results)
    out += balancing.rows(results)
    return out


def table(results: dict[str, Any]) -> str:
    header = ("figure", "aiolease", "reference", "ratio", "target", "met")
    lines = [header, *rows(results)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = []
    for i, line in enumerate(lines):
        text.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if i == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)


def markdown_table(results: dict[str, Any]) -> str:
    header = ("figure", "aiolease", "reference", "ratio", "target", "met")
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="a ~2 minute run with fewer samples")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--copy-charts", type=Path, help="also copy the PNG charts here")
    parser.add_argument(
        "--endpoint-url",
        help="run against this DynamoDB-compatible server instead of an embedded moto one "
        "(e.g. dynalite on a loopback port)",
    )
    args = parser.parse_args(argv)

    set_fake_environment()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if args.endpoint_url:
        results = asyncio.run(run(args, args.endpoint_url))
    else:
        with MotoServer() as server:
            assert server.endpoint_url is not None
            results = asyncio.run(run(args, server.endpoint_url))
    results["machine"] = machine()
    results["server"] = args.endpoint_url or "moto"
    results["command"] = "python -m benchmarks" + (" --quick" if args.quick else "")
    results["total_s"] = round(time.monotonic() - started, 1)
    path = args.out / "results.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    (args.out / "table.md").write_text(markdown_table(results) + "\n")
    if "sessions" in results:
        (args.out / "sessions.md").write_text(sessions.markdown(results))
    pictures = charts.draw(results, args.out)
    if args.copy_charts:
        args.copy_charts.mkdir(parents=True, exist_ok=True)
        for picture in pictures:
            shutil.copy(picture, args.copy_charts / picture.name)
    print(table(results))
    if profile := results.get("hotpath_profile"):
        print()
        print(hotpath.profile_text(profile))
    print(
        f"\n{results['machine']['cpus']} CPUs ({results['machine']['processor']}), Python "
        f"{results['machine']['python']}; load before/after {results['load_before']} / "
        f"{results['load_after']}; {results['total_s']} s"
    )
    print(f"results: {path}; charts: {', '.join(str(p) for p in pictures) or 'none'}")
    if not peer.available():
        print(f"({peer.PEER} is not installed, so its figures are missing: use nox -s bench)")


if __name__ == "__main__":
    main()
