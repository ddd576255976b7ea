"""Check a history of holds for mutual exclusion: no two holds of one item overlap.

A *hold* is one worker's hold of one item under one lease, from when its work started to
when it stopped. :func:`check_exclusion` lists the violations of a history (an empty list
means it passed); :func:`check_history` is its form for tests, raising
``AssertionError`` on the first violation. The demo and aiolease's own tests use these.

Workers in other processes record their holds as JSON lines with :class:`RecordWriter`;
:class:`History` reads those files back, as they grow, into :class:`Hold` objects. Each
line is ``{"ev": EVENT, "w": LESSEE, "t": EPOCH_SECONDS, ...}``, where EVENT is one of

- ``ready``, ``looking``: the worker is connected; holds nothing and looks for an item;
- ``start`` (``item``, ``token``, ``until``, and ``session`` for an item held under a
  session: the session row's key): its work under a new lease began;
- ``tick`` (``item``, ``token``, ``step``, ``of``): progress, for display;
- ``renew-sent`` (``item``, ``token``, ``until``): a renewal *about to be sent*, so the
  record is never behind the table; ``renew-ok`` (``until``) or ``renew-failed`` follow
  if its answer arrived;
- ``end`` (``item``, ``token``, ``why``): its work stopped (before the lease is released);
- ``session-ended`` (``lessee``, ``session``, ``until``): this worker, a taker, ended
  ``lessee``'s session, judged expired, by a write pinned to the expiry read (``until``):
  no renewal of it landed since, nor can one land after. A dead worker's holds under that
  session (as their ``start`` named it) then end at exactly that expiry, whatever bound its
  unanswered renewals recorded; of two such records for one session, the later expiry.

All times of one history must come from one clock; across processes of one host,
``time.time()`` or ``time.monotonic()``.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "History",
    "Hold",
    "RecordWriter",
    "Report",
    "check_exclusion",
    "check_history",
    "count_handovers",
]


@dataclass(eq=False)
class Hold:
    """One worker's hold of one item, from ``start`` to ``end`` (seconds, on one clock).

    ``end`` is when the work stopped; for a worker that died holding the lease, the last
    expiry that lease may have had (see :meth:`History.died`); ``None`` while unknown.
    The keyword-only fields are filled from a worker's records: ``until`` is the latest
    confirmed expiry and ``pending`` the expiry of a renewal sent but not answered.
    Holds compare by identity: each is one event of a history, updated as records arrive.
    """

    item: str
    lessee: str
    token: int
    start: float
    end: float | None = None
    _: KW_ONLY
    until: float = 0.0
    why: str = ""
    pending: float = 0.0
    session: str | None = None
    died_at: float | None = None
    step: int = 0
    steps: int = 0

    @property
    def last_expiry(self) -> float:
        """The latest expiry the lease may have: the confirmed one or an unanswered renewal's."""
        return max(self.until, self.pending)


def check_exclusion(holds: Iterable[Hold]) -> list[str]:
    """The violations of mutual exclusion in ``holds``, one sentence each; empty if none.

    A violation is: two holds of one item that overlap, an item's fencing token that did
    not grow from one hold to the next, a hold that ends before it starts, or one with no
    end (its worker's fate unknown: it cannot be shown not to overlap).
    """
    problems: list[str] = []
    by_item: dict[str, list[Hold]] = collections.defaultdict(list)
    for hold in holds:
        if hold.end is None:
            problems.append(f"{hold.item}: {hold.lessee} (token {hold.token}) never ended")
            continue
        if hold.end < hold.start:
            problems.append(f"hold ends before it starts: {hold}")
        by_item[hold.item].append(hold)
    for item, item_holds in sorted(by_item.items()):
        item_holds.sort(key=lambda h: h.start)
        for before, after in itertools.pairwise(item_holds):
            assert before.end is not None
            if after.start < before.end:
                problems.append(
                    f"{item}: {after.lessee} (token {after.token}) started "
                    f"{before.end - after.start:.3f}s before {before.lessee} "
                    f"(token {before.token}) stopped holding it (at {after.start:.3f}, "
                    f"while it was held until {before.end:.3f})"
                )
            if after.token <= before.token:
                problems.append(
                    f"{item}: fencing token went from {before.token} ({before.lessee}) "
                    f"to {after.token} ({after.lessee})"
                )
    return problems


def count_handovers(holds: Iterable[Hold]) -> int:
    """How often an item passed from one lessee to another (holds in order of start)."""
    by_item: dict[str, list[Hold]] = collections.defaultdict(list)
    for hold in holds:
        by_item[hold.item].append(hold)
    return sum(
        before.lessee != after.lessee
        for item_holds in by_item.values()
        for before, after in itertools.pairwise(sorted(item_holds, key=lambda h: h.start))
    )


@dataclass(frozen=True)
class Report:
    """What :func:`check_history` checked: holds, items, and handovers between lessees."""

    holds: int
    items: int
    handovers: int

    def __str__(self) -> str:
        return (
            f"checked {self.holds} holds of {self.items} items, {self.handovers} handovers: "
            "0 overlaps, tokens strictly increasing"
        )


def check_history(holds: list[Hold]) -> Report:
    """Raise ``AssertionError`` naming the first violation; return the counts checked."""
    problems = check_exclusion(holds)
    assert not problems, problems[0]
    return Report(
        holds=len(holds),
        items=len({hold.item for hold in holds}),
        handovers=count_handovers(holds),
    )


class RecordWriter:
    """Appends a worker's records to its file, one ``write()`` per line.

    One system call per line: a process killed mid-record leaves at most one cut line,
    which :class:`History` skips.
    """

    def __init__(self, path: str | os.PathLike[str], lessee: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.lessee = lessee

    def write(self, event: str, **fields: Any) -> None:
        """Record ``event`` now (``time.time()``) with ``fields``."""
        record = {"ev": event, "w": self.lessee, "t": time.time(), **fields}
        os.write(self._fd, (json.dumps(record) + "\n").encode())

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)


class History:
    """Reads the workers' record files as they grow, into holds and events.

    Call :meth:`poll` as often as wanted: it reads only what was appended since, and keeps
    a line still being written for the next call.
    """

    def __init__(self) -> None:
        #: Every hold seen, by item and fencing token.
        self.holds: dict[tuple[str, int], Hold] = {}
        #: Renewals answered so far.
        self.renewals = 0
        #: The workers that said they are connected.
        self.ready: set[str] = set()
        #: When each worker that holds nothing started looking for an item.
        self.looking: dict[str, float] = {}
        #: Each session a taker ended (by session key): the expiry stored when it was ended.
        self.sessions_ended: dict[str, float] = {}
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}

    def poll(
        self, paths: Iterable[Path], on_event: Callable[[str, Hold], None] | None = None
    ) -> None:
        """Apply the records appended to ``paths``; ``on_event("start"|"end", hold)``."""
        for path in paths:
            for record in self._read_new(path):
                self._apply(record, on_event or _ignore)

    def _read_new(self, path: Path) -> Iterator[dict[str, Any]]:
        try:
            with path.open("rb") as f:
                f.seek(self._offsets.get(path, 0))
                data = f.read()
        except FileNotFoundError:
            return
        self._offsets[path] = self._offsets.get(path, 0) + len(data)
        data = self._partial.pop(path, b"") + data
        *lines, rest = data.split(b"\n")
        if rest:
            self._partial[path] = rest  # a line still being written (or cut by SIGKILL)
        for line in lines:
            with suppress(ValueError):
                yield json.loads(line)

    def _apply(self, record: dict[str, Any], on_event: Callable[[str, Hold], None]) -> None:
        event = record.get("ev")
        key = (str(record.get("item")), int(record.get("token", 0)))
        if event == "ready":
            self.ready.add(record["w"])
            return
        if event == "looking":
            self.looking[record["w"]] = record["t"]
            return
        if event == "session-ended":
            # Keyed by session, not lessee: a name may come back under a new session, and
            # an older session's end says nothing of the newer one's leases. The later
            # expiry wins: a taker whose write was retried may report an earlier read.
            session = str(record["session"])
            ended = self.sessions_ended.get(session, record["until"])
            self.sessions_ended[session] = max(ended, record["until"])
            for hold in self.holds.values():
                if hold.session == session and hold.died_at is not None:
                    hold.end = self._death_end(hold, hold.died_at)
            return
        if event == "start":
            self.looking.pop(record["w"], None)
            hold = Hold(
                key[0],
                record["w"],
                key[1],
                record["t"],
                until=record["until"],
                session=record.get("session"),
            )
            self.holds[key] = hold
            on_event("start", hold)
            return
        hold_or_none = self.holds.get(key)
        if hold_or_none is None:
            return
        hold = hold_or_none
        if event == "tick":
            hold.step, hold.steps = record["step"], record["of"]
        elif event == "renew-sent":
            hold.pending = max(hold.pending, record["until"])
        elif event == "renew-ok":
            hold.until = max(hold.until, record["until"])
            hold.pending = 0.0
            self.renewals += 1
        elif event == "renew-failed":
            hold.pending = 0.0
        elif event == "end":
            hold.end, hold.why = record["t"], record["why"]
            on_event("end", hold)

    def open_holds(self, lessee: str | None = None) -> list[Hold]:
        """The holds not ended yet (of ``lessee``, or of everyone)."""
        return [
            h
            for h in self.holds.values()
            if h.end is None and h.died_at is None and lessee in (None, h.lessee)
        ]

    def died(self, lessee: str, at: float) -> list[Hold]:
        """The worker is dead: its open holds end at their leases' last possible expiry."""
        holds = self.open_holds(lessee)
        for hold in holds:
            hold.died_at = at
            hold.end = self._death_end(hold, at)
            hold.why = "holder died"
        return holds

    def _death_end(self, hold: Hold, died_at: float) -> float:
        """A dead worker's hold ends at its lease's last expiry: the one its session had when
        a taker ended it, if one did (exact); else the last its records show (a bound)."""
        ended = None if hold.session is None else self.sessions_ended.get(hold.session)
        if ended is None:
            return max(hold.last_expiry, died_at)
        # Exact: the end was pinned to this expiry, so no renewal landed after it. (Not
        # capped by the recorded bound: where the two disagree, the bound was wrong.)
        return max(hold.until, ended, died_at)


def _ignore(kind: str, hold: Hold) -> None:
    pass
