"""``aiolease watch``: the ``ls`` table of a lease table, redrawn in place every few seconds.

Rows whose holder or fencing token changed since the previous refresh are highlighted. With
``rich`` (the ``server`` extra) on a terminal the table is a live view; otherwise it is
redrawn plainly (cleared on a terminal, one snapshot after another when piped), changed rows
marked ``*``. Ctrl-C (SIGINT) ends it with exit code 0, even while a scan hangs (the scan is
cancelled); a second Ctrl-C, if the first is still unwinding, ends it at once (code 130).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Coroutine, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO, TypeVar

from aiolease import LeaseItem, LeaseUnavailableError

from ._commands import _open_store
from ._exit import EXIT_INTERRUPTED, EXIT_OK, UsageError
from ._format import HEADER, table_rows

__all__ = ["changed_rows", "plain_lines", "watch"]

_CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen
_BOLD, _RESET = "\x1b[1m", "\x1b[0m"

Tenures = dict[str, tuple[str | None, int]]


def tenures(items: Sequence[LeaseItem]) -> Tenures:
    """Each item's (holder, fencing token): what a change is (a renewal is none)."""
    return {item.lease_id: (item.lessee_id, item.fencing_token) for item in items}


def changed_rows(previous: Tenures | None, items: Sequence[LeaseItem]) -> set[str]:
    """IDs whose holder or token differ from ``previous`` (new rows too); none at first."""
    if previous is None:
        return set()
    now = tenures(items)
    return {lease_id for lease_id, tenure in now.items() if previous.get(lease_id) != tenure}


def plain_lines(
    rows: Sequence[tuple[str, ...]], changed: set[str], *, bold: bool = False
) -> list[str]:
    """The table as aligned lines, changed rows marked ``*`` (and bold on a terminal)."""
    table = [HEADER, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    lines = []
    for index, row in enumerate(table):
        text = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        mark = index > 0 and row[0] in changed
        line = ("* " if mark else "  ") + text
        lines.append(f"{_BOLD}{line}{_RESET}" if mark and bold else line)
    return lines


class _View(Protocol):
    def show(self, title: str, rows: list[tuple[str, ...]], changed: set[str]) -> None: ...

    def close(self) -> None: ...


class _PlainView:
    """Redraws by clearing a terminal; prints snapshots one after another when piped."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()
        self._shown = False

    def show(self, title: str, rows: list[tuple[str, ...]], changed: set[str]) -> None:
        lines = [title, *plain_lines(rows, changed, bold=self._tty)]
        if self._tty:
            self._out.write(_CLEAR)
        elif self._shown:
            self._out.write("\n")
        self._out.write("\n".join(lines) + "\n")
        self._out.flush()
        self._shown = True

    def close(self) -> None:
        pass


class _RichView:
    """A rich ``Live`` table, refreshed in place; changed rows in bold yellow."""

    def __init__(self) -> None:
        from rich.live import Live

        self._live = Live(auto_refresh=False)
        self._live.start()

    def show(self, title: str, rows: list[tuple[str, ...]], changed: set[str]) -> None:
        from rich.table import Table
        from rich.text import Text

        # Text, not str: an ID or a note like "jobs[/x]" is shown as is, never parsed as markup.
        table = Table(title=Text(title), title_justify="left")
        for name in HEADER:
            table.add_column(name)
        for row in rows:
            cells = [Text(cell) for cell in row]
            table.add_row(*cells, style="bold yellow" if row[0] in changed else None)
        self._live.update(table, refresh=True)

    def close(self) -> None:
        self._live.stop()


def _view(plain: bool) -> _View:
    if not plain and sys.stdout.isatty():
        try:
            return _RichView()
        except ImportError:
            pass
    return _PlainView(sys.stdout)


# After a Ctrl-C, a hung scan gets this long to unwind from its cancellation.
_UNWIND = 5.0

_T = TypeVar("_T")


class _Interrupts:
    """Ctrl-C handling: the first sets ``stop`` (a clean exit, code 0); a second, while
    the first is still unwinding, cancels the watch itself (exit code 130)."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.forced = False
        self._task = asyncio.current_task()

    def __call__(self) -> None:
        if not self.stop.is_set():
            self.stop.set()
        elif not self.forced and self._task is not None:
            self.forced = True
            self._task.cancel()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Take SIGINT where the loop can (not on Windows, nor off the main thread)."""
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, self)
        except (NotImplementedError, RuntimeError, ValueError):
            yield
            return
        try:
            yield
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    async def unless_stopped(self, work: Coroutine[Any, Any, _T]) -> _T | None:
        """``work``'s result, or None if Ctrl-C comes first: then ``work`` is cancelled
        (a scan against an endpoint that does not answer must not hold the exit)."""
        task = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            task.cancel()
            await asyncio.wait({task}, timeout=_UNWIND)
            return None
        finally:
            stopping.cancel()
            task.cancel()  # a no-op once done; again if a second Ctrl-C cut the unwinding


async def _scan(store: Any) -> list[LeaseItem]:
    return [item async for item in store.scan(consistent_read=True)]


async def watch(args: argparse.Namespace) -> int:
    """``aiolease watch``: refresh the table every ``--interval`` s, ``--count`` times."""
    interval: float = args.interval
    count: int | None = args.count
    if not interval > 0:
        raise UsageError(f"--interval must be a positive number of seconds, not {interval}")
    if count is not None and count < 1:
        raise UsageError(f"--count must be at least 1, not {count}")
    interrupts = _Interrupts()
    stop = interrupts.stop
    try:
        async with _open_store(args) as store:
            view = _view(args.plain)
            previous: Tenures | None = None
            shown = 0
            try:
                with interrupts.installed():
                    while not stop.is_set():
                        title = f"{args.table} at {datetime.now(UTC):%H:%M:%S} UTC"
                        try:
                            items = await interrupts.unless_stopped(_scan(store))
                        except LeaseUnavailableError as exc:
                            view.show(f"{title}: read failed ({exc}); retrying", [], set())
                        else:
                            if items is None:
                                break
                            items.sort(key=lambda item: item.lease_id)
                            changed = changed_rows(previous, items)
                            previous = tenures(items)
                            title += f", {len(items)} item(s), every {interval:g} s"
                            view.show(title, table_rows(items, time.time_ns()), changed)
                        shown += 1
                        if count is not None and shown >= count:
                            break
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), interval)
            finally:
                view.close()
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not interrupts.forced or current is None or current.cancelling() != 1:
            raise  # not (only) the second Ctrl-C's cancellation
        current.uncancel()
        return EXIT_INTERRUPTED
    return EXIT_OK


def add_arguments(command: Any) -> None:
    """``watch``'s own options."""
    command.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between refreshes (default: 1)",
    )
    command.add_argument(
        "--count", type=int, metavar="N", help="stop after N refreshes (default: until Ctrl-C)"
    )
    command.add_argument(
        "--plain",
        action="store_true",
        help="plain text even on a terminal (no rich live view)",
    )
