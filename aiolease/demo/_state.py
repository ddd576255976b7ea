"""What the demo's parent knows: its workers, the failovers it caused, the rows, the log."""

from __future__ import annotations

import argparse
import asyncio
import collections
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from aiolease import LeaseItem
from aiolease.testing.history import History, Hold

__all__ = ["Demo", "Moment", "Victim", "Worker"]


@dataclass
class Worker:
    """One worker process, its record file and its log (its standard error)."""

    name: str
    records: Path
    log: Path
    process: asyncio.subprocess.Process | None = None
    fate: str = ""  # "", "killed", "stopped", "crashed"
    signalled_at: float | None = None
    joined_at: float | None = None  # --balance: when it was told to start (None: not yet)

    @property
    def exited(self) -> bool:
        return self.process is not None and self.process.returncode is not None

    @property
    def last_words(self) -> str:
        """': <the last line of its log>', or '' if it logged nothing."""
        with suppress(OSError):
            lines = self.log.read_text(errors="replace").strip().splitlines()
            if lines:
                return f": {lines[-1][:160]}"
        return ""


@dataclass
class Victim:
    """A worker the demo killed or stopped while it held ``item``, and who took it over."""

    worker: str
    how: str  # "SIGKILL" or "SIGTERM"
    at: float
    item: str
    token: int
    takeover: Hold | None = None


@dataclass(frozen=True)
class Moment:
    """--balance: a moment of the script: the start, a join, a graceful stop or a kill."""

    at: float
    what: str  # "start", "join", "SIGTERM", "SIGKILL"
    workers: tuple[str, ...]


@dataclass
class Demo:
    """Everything the view and the summary need to know."""

    args: argparse.Namespace
    items: list[str]
    workers: list[Worker]
    endpoint: str | None = None
    history: History = field(default_factory=History)
    victims: list[Victim] = field(default_factory=list)
    moments: list[Moment] = field(default_factory=list)
    rows: list[LeaseItem] = field(default_factory=list)
    events: collections.deque[tuple[float, str, bool]] = field(
        default_factory=lambda: collections.deque(maxlen=9)
    )
    t0: float = 0.0
    ended: float = 0.0  # --balance: when the script ended (the figures stop there)

    events_total: int = 0

    def event(self, text: str, *, notable: bool = False, at: float | None = None) -> None:
        """Log ``text`` (at ``at``, default now); a notable event is printed in plain output."""
        self.events.append(((at or time.time()) - self.t0, text, notable))
        self.events_total += 1
