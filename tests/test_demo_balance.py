"""``aiolease demo --balance``: its figures from a made-up history, and one real run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aiolease.cli import main
from aiolease.demo._balance_figures import overlaps, passings, phases
from aiolease.demo._state import Moment
from aiolease.testing.history import Hold

# w1 and w2 start at 0 with four items; w3 joins at 10; w1 is stopped at 20.
MEMBERSHIP: dict[str, tuple[float, float | None]] = {
    "w1": (0.0, 20.0),
    "w2": (0.0, None),
    "w3": (10.0, None),
}
MOMENTS = [
    Moment(0.0, "start", ("w1", "w2")),
    Moment(10.0, "join", ("w3",)),
    Moment(20.0, "SIGTERM", ("w1",)),
]


def history() -> list[Hold]:
    return [
        Hold("a", "w1", 1, 1.0, 12.0, why="drained"),
        Hold("a", "w3", 2, 12.3, 30.0),  # handed off after the join
        Hold("b", "w1", 1, 1.0, 20.2, why="stopped"),
        Hold("b", "w3", 2, 20.5, 30.0),  # handed off after the stop
        Hold("c", "w2", 1, 1.5, 30.0),
        Hold("d", "w2", 1, 1.2, 30.0),
    ]


def test_time_to_balance_counts_from_each_moment_until_every_item_is_held_evenly() -> None:
    found = phases(history(), 4, MEMBERSHIP, MOMENTS, end=30.0)
    after = [p.balanced_after for p in found]
    assert after == pytest.approx([1.5, 2.3, 0.5]), f"balanced after {after}"
    assert [p.members for p in found] == [2, 3, 2]
    assert [p.spread_at_end for p in found] == [0, 1, 0]


def test_a_pool_that_does_not_settle_before_the_next_moment_has_no_time_to_balance() -> None:
    holds = history()
    holds[1].start = 25.0  # a stays free from 12 s until after the stop at 20 s
    found = phases(holds, 4, MEMBERSHIP, MOMENTS, end=30.0)
    assert found[1].balanced_after is None, "the join's phase never had every item held"


def test_a_balance_that_breaks_again_counts_from_when_it_last_settled() -> None:
    holds = history()
    holds[1].end = 15.0  # w3 gives a back at 15 s and takes it again at 16 s
    holds.append(Hold("a", "w3", 3, 16.0, 30.0))
    found = phases(holds, 4, MEMBERSHIP, MOMENTS, end=30.0)
    assert found[1].balanced_after == pytest.approx(6.0), "settled for good only at 16 s"


def test_handoffs_and_takeovers_are_told_apart_from_the_holds_alone() -> None:
    holds = [*history(), Hold("c", "w3", 2, 31.0, 32.0)]
    holds[4].end, holds[4].died_at = 30.5, 27.0  # w2 died holding c; its lease ran to 30.5
    moved = passings(holds)
    assert [(p.item, p.before.lessee, p.after.lessee, p.handoff) for p in moved] == [
        ("a", "w1", "w3", True),
        ("b", "w1", "w3", True),
        ("c", "w2", "w3", False),
    ]
    assert [round(p.seconds, 2) for p in moved] == [0.3, 0.3, 0.5]
    assert overlaps(holds) == 0


def test_a_hold_that_starts_before_the_last_one_ended_is_an_overlap() -> None:
    holds = history()
    holds[1].start = 11.9
    assert overlaps(holds) == 1


def test_balance_needs_two_workers_to_join_and_two_to_leave() -> None:
    assert main(["demo", "--balance", "--workers", "3"]) == 2


def test_the_balance_demo_rebalances_after_joins_and_leaves_without_overlap(
    tmp_path: Path,
) -> None:
    report, timeline = tmp_path / "report.json", tmp_path / "timeline.svg"
    command = [sys.executable, "-m", "aiolease", "demo", "--balance", "--duration", "10"]
    command += ["--items", "12", "--workers", "4", "--report", str(report)]
    command += ["--timeline", str(timeline)]
    run = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "COLUMNS": "120"},
    )
    print(run.stdout)  # shown when the test fails
    assert run.returncode == 0, run.stdout + run.stderr
    figures = json.loads(report.read_text())
    assert figures["overlaps"] == 0 and figures["exclusion_problems"] == [], figures
    assert figures["items_processed"] == 12, f"items not processed: {figures}"
    moments = {m["what"]: m for m in figures["moments"]}
    assert list(moments) == ["start", "join", "SIGTERM", "SIGKILL"], figures["moments"]
    joins = [m for m in figures["moments"] if m["what"] == "join"]
    assert all(m["balanced_after"] is not None for m in joins), figures["moments"]
    assert moments["SIGTERM"]["balanced_after"] is not None, figures["moments"]
    assert figures["handoffs"] > 0 and figures["takeovers"] > 0, figures
    assert "<svg" in timeline.read_text()
