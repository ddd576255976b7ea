"""The demo: its exclusion check (it must be able to fail), and one real run with a crash."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aiolease.cli import EXIT_OK, main
from aiolease.testing.history import History as _History
from aiolease.testing.history import Hold, check_exclusion


def hold(item: str, lessee: str, token: int, start: float, end: float | None) -> Hold:
    return Hold(item, lessee, token, start, until=start + 3, end=end)


# -- the check ----------------------------------------------------------------------------


def test_exclusion_check_passes_handovers_without_overlap() -> None:
    holds = [
        hold("a", "w1", 1, 0.0, 2.0),
        hold("a", "w2", 2, 2.5, 4.0),
        hold("b", "w1", 5, 2.1, 3.0),  # one worker, two items in turn: fine
    ]
    assert check_exclusion(holds) == []


def test_exclusion_check_reports_overlapping_holds() -> None:
    problems = check_exclusion([hold("a", "w1", 1, 0.0, 2.0), hold("a", "w2", 2, 1.9, 3.0)])
    assert len(problems) == 1 and "w2 (token 2) started 0.100s before w1" in problems[0]


def test_exclusion_check_reports_tokens_that_do_not_grow() -> None:
    problems = check_exclusion([hold("a", "w1", 3, 0.0, 1.0), hold("a", "w2", 3, 2.0, 3.0)])
    assert len(problems) == 1 and "fencing token went from 3" in problems[0]


def test_exclusion_check_reports_a_hold_that_never_ended() -> None:
    assert "never ended" in check_exclusion([hold("a", "w1", 1, 0.0, None)])[0]


def records(path: Path, *lines: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_a_dead_holder_holds_until_an_unanswered_renewal_could_have_expired(
    tmp_path: Path,
) -> None:
    """A renewal sent but never answered may have landed: the hold lasts until its expiry."""
    dead = records(
        tmp_path / "w1.jsonl",
        {"ev": "start", "w": "w1", "t": 100.0, "item": "a", "token": 1, "until": 103.0},
        {"ev": "renew-sent", "w": "w1", "t": 101.0, "item": "a", "token": 1, "until": 104.0},
        {"ev": "renew-ok", "w": "w1", "t": 101.1, "item": "a", "token": 1, "until": 104.0},
        {"ev": "renew-sent", "w": "w1", "t": 102.0, "item": "a", "token": 1, "until": 105.0},
        {"ev": "tick", "w": "w1", "t": 102.2, "item": "a", "token": 1, "step": 1, "of": 4},
    )
    history = _History()
    history.poll([dead], lambda kind, h: None)
    (died,) = history.died("w1", at=102.5)
    assert died.end == 105.0, "the unanswered renewal's expiry bounds the dead holder's lease"
    successor = hold("a", "w2", 2, 104.5, 106.0)
    assert check_exclusion([died, successor]), "a takeover before that expiry must be flagged"
    successor.start = 105.6
    assert check_exclusion([died, successor]) == []


def test_a_refused_renewal_does_not_extend_a_dead_holder(tmp_path: Path) -> None:
    dead = records(
        tmp_path / "w1.jsonl",
        {"ev": "start", "w": "w1", "t": 100.0, "item": "a", "token": 1, "until": 103.0},
        {"ev": "renew-sent", "w": "w1", "t": 101.0, "item": "a", "token": 1, "until": 104.0},
        {"ev": "renew-failed", "w": "w1", "t": 101.1, "item": "a", "token": 1},
    )
    with dead.open("a") as f:
        f.write('{"ev": "tick", "w": "w1", "t": 10')  # a line cut short by the SIGKILL
    history = _History()
    history.poll([dead], lambda kind, h: None)
    (died,) = history.died("w1", at=101.5)
    assert died.end == 103.0


# -- a real run ---------------------------------------------------------------------------


def test_demo_shows_a_failover_passes_its_check_and_ls_sees_its_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    timeline, report = tmp_path / "timeline.svg", tmp_path / "report.json"
    env = {**os.environ, "COLUMNS": "120"}
    command = [sys.executable, "-m", "aiolease", "demo", "--duration", "12"]
    demo = subprocess.Popen(
        [*command, "--timeline", str(timeline), "--report", str(report)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert demo.stdout is not None
        header = demo.stdout.readline() + demo.stdout.readline()
        found = re.search(r"ls --table (\S+) --endpoint-url (\S+)", header)
        assert found, header
        # While the demo runs, the operator's ls sees its rows on the embedded server.
        capsys.readouterr()
        assert main(["ls", "--json", "--table", found[1], "--endpoint-url", found[2]]) == EXIT_OK
        rows = json.loads(capsys.readouterr().out)
        assert [row["id"] for row in rows] == ["item-1", "item-2", "item-3", "item-4"]
        out, err = demo.communicate(timeout=150)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    output = header + out
    print(output)  # shown when the test fails
    assert demo.returncode == 0, output + err
    assert "exclusion check: passed" in output
    failover = re.search(r"item-\d: (worker-\d) \(SIGKILL\) -> (worker-\d) in ([\d.]+)s", output)
    assert failover, f"no failover after the SIGKILL:\n{output}"
    assert failover[1] != failover[2]
    assert float(failover[3]) > 0
    assert timeline.read_text().lstrip().startswith("<?xml") and "<svg" in timeline.read_text()
    figures = json.loads(report.read_text())
    assert figures["exclusion_problems"] == [] and figures["holds"] > 0, figures
    assert [f["how"] for f in figures["failovers"]] == ["SIGKILL", "SIGTERM"], figures
