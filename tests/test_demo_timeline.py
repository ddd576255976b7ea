"""The demo's timeline picture: the kill line crosses no token label; the skew gap is named."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from aiolease.demo._report import write_timeline
from aiolease.demo._state import Demo, Victim, Worker
from aiolease.testing.history import Hold

pytest.importorskip("matplotlib")
KILLED_AT = 5.0


def scene(tmp_path: Path) -> tuple[Demo, list[Hold]]:
    """worker-1 is SIGKILLed at 5 s holding item-1; item-2's bar has its middle at 5 s."""
    workers = [
        Worker(f"worker-{n}", tmp_path / f"{n}.jsonl", tmp_path / f"{n}.log") for n in (1, 2, 3)
    ]
    demo = Demo(argparse.Namespace(timeline="x.png"), ["item-1", "item-2", "item-3"], workers)
    dead = Hold("item-1", "worker-1", 1, 1.0, 7.5, died_at=KILLED_AT)
    taker = Hold("item-1", "worker-2", 2, 8.1, 14.0)
    holds = [
        dead,
        taker,
        Hold("item-2", "worker-3", 1, 0.5, 9.5),  # its label would sit right on the line
        Hold("item-3", "worker-2", 1, 2.0, 6.0),
    ]
    demo.history.holds.update({(h.item, h.token): h for h in holds})
    demo.victims.append(Victim("worker-1", "SIGKILL", KILLED_AT, "item-1", 1, taker))
    return demo, holds


def draw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Write the timeline as a PNG and return the figure that was saved."""
    from matplotlib.figure import Figure

    saved: list[Figure] = []
    original = Figure.savefig

    def keep(self: Figure, *args: Any, **kwargs: Any) -> None:
        saved.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    demo, holds = scene(tmp_path)
    path = tmp_path / "timeline.png"
    write_timeline(path, demo, holds)
    assert path.stat().st_size > 0 and saved
    return saved[0]


def test_the_kill_line_crosses_no_token_label(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figure = draw(tmp_path, monkeypatch)
    axes = figure.axes[0]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    line_x = axes.transData.transform((KILLED_AT, 0))[0]
    labels = [t for t in axes.texts if t.get_text().strip().isdigit()]
    assert {t.get_text() for t in labels} >= {"1", "2"}, "the token labels are missing"
    for text in labels:
        box = text.get_window_extent(renderer)
        assert not box.x0 - 1 <= line_x <= box.x1 + 1, (
            f"the SIGKILL line crosses token label {text.get_text()!r} at {text.get_position()}"
        )


def test_the_clock_skew_gap_has_a_label(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figure = draw(tmp_path, monkeypatch)
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert any("skew" in text for text in texts), f"no label names the clock-skew gap: {texts}"
