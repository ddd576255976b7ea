"""What the demo shows while it runs: plain lines for logs and CI, or a live rich table."""

from __future__ import annotations

import sys
import time

from ._config import LEASE_SECONDS, STATUS_EVERY
from ._state import Demo

__all__ = [
    "BalancePlainView",
    "BalanceRichView",
    "PlainView",
    "RichView",
    "make_view",
    "print_header",
]


def print_header(demo: Demo, embedded: bool) -> None:
    """The first two lines: what runs where, and how to watch the table meanwhile."""
    args = demo.args
    where = f"embedded DynamoDB (moto) at {demo.endpoint}" if embedded else demo.endpoint or "AWS"
    if args.balance:
        what = (
            f"aiolease demo --balance: {args.workers} worker processes serving "
            f"{len(demo.items)} items (2 join later), {LEASE_SECONDS:.0f}s sessions"
        )
    else:
        what = (
            f"aiolease demo: {args.workers} worker processes, {len(demo.items)} items, "
            f"{LEASE_SECONDS:.0f}s leases"
        )
    print(f"{what}, {args.duration:.0f}s; {where}, table {args.table!r}")
    ls = f"python -m aiolease ls --table {args.table}"
    if demo.endpoint:
        ls += f" --endpoint-url {demo.endpoint}"
    print(f"watch the table from another shell: {ls}", flush=True)


class PlainView:
    """Plain output for logs and CI: notable events, and a status line now and then."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        self._seen = 0  # events already considered for printing
        self._last_status = 0.0

    def update(self) -> None:
        """Show what happened since the last call."""
        new = min(self.demo.events_total - self._seen, len(self.demo.events))
        self._seen = self.demo.events_total
        for at, text, notable in list(self.demo.events)[len(self.demo.events) - new :]:
            if notable:
                print(f"[{at:5.1f}s] {text}", flush=True)
        elapsed = time.time() - self.demo.t0
        if elapsed - self._last_status >= STATUS_EVERY:
            self._last_status = elapsed
            held = [f"{r.lease_id}={r.lessee_id}" for r in self.demo.rows if r.lessee_id]
            print(
                f"[{elapsed:5.1f}s] {len(self.demo.history.holds)} leases obtained so far; "
                f"held: {', '.join(held) or 'none'}",
                flush=True,
            )

    def close(self) -> None:
        """Stop showing (nothing to do for plain output)."""


_COLORS = ["cyan", "magenta", "green", "yellow", "bright_blue", "bright_red", "white"]


class RichView(PlainView):
    """A live table in a terminal: item, holder, fencing token, expires in, work done."""

    def __init__(self, demo: Demo) -> None:
        super().__init__(demo)
        from rich.console import Console
        from rich.live import Live

        self._live = Live(console=Console(), refresh_per_second=8, transient=False)
        self._live.start()

    def _color(self, lessee: str | None) -> str:
        names = [w.name for w in self.demo.workers]
        return _COLORS[names.index(lessee) % len(_COLORS)] if lessee in names else "white"

    def update(self) -> None:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        demo = self.demo
        now = time.time()
        table = Table(
            title=f"aiolease demo  {now - demo.t0:4.1f}s of {demo.args.duration:.0f}s",
            title_justify="left",
        )
        for column in ("item", "holder", "token", "expires in", "work"):
            table.add_column(column, justify="right" if column == "token" else "left")
        fates = {w.name: w.fate for w in demo.workers}
        for row in demo.rows:
            holder = Text(row.lessee_id or "-", style=self._color(row.lessee_id))
            if row.lessee_id and fates.get(row.lessee_id) == "killed":
                holder.append("  (killed)", style="bold red")
            left = (row.until_ns / 1e9 - now) if row.lessee_id else None
            if left is None:
                expires = Text("free", style="dim")
            elif left < 0:
                expires = Text(f"expired {-left:.1f}s ago", style="bold red")
            else:
                expires = Text(f"{left:4.1f}s " + "█" * round(left * 2), style="green")
            hold = demo.history.holds.get((row.lease_id, row.fencing_token))
            work = Text("")
            if row.lessee_id and hold is not None and hold.end is None and hold.steps:
                work = Text("■" * hold.step + "□" * (hold.steps - hold.step), style="blue")
            table.add_row(row.lease_id, holder, str(row.fencing_token), expires, work)
        workers = Text("workers: ")
        holding = {h.lessee: h.item for h in demo.history.open_holds()}
        for worker in demo.workers:
            state = worker.fate or (
                f"holds {holding[worker.name]}" if worker.name in holding else "waiting"
            )
            workers.append(f"{worker.name} ", style=self._color(worker.name))
            workers.append(f"{state}   ", style="dim" if state == "waiting" else "")
        log = Text()
        for at, text, notable in demo.events:
            log.append(f"{at:5.1f}s  {text}\n", style="bold" if notable else "dim")
        self._live.update(Group(table, workers, Text(""), log))

    def close(self) -> None:
        self._live.stop()


def held_per_worker(demo: Demo) -> dict[str, list[str]]:
    """--balance: the items each started worker holds, as the table's rows say."""
    held: dict[str, list[str]] = {w.name: [] for w in demo.workers if w.joined_at is not None}
    for row in demo.rows:
        if row.lessee_id is not None:
            held.setdefault(row.lessee_id, []).append(row.lease_id)
    return held


def member_spread(demo: Demo, held: dict[str, list[str]]) -> tuple[int, int]:
    """Max-min items per running worker, and how many items no running worker holds."""
    members = [w.name for w in demo.workers if w.joined_at is not None and not w.fate]
    counts = [len(held.get(name, [])) for name in members]
    spread = max(counts) - min(counts) if counts else 0
    return spread, len(demo.items) - sum(counts)


class BalancePlainView(PlainView):
    """--balance, plain: notable events, and now and then the items per worker."""

    def update(self) -> None:
        new = min(self.demo.events_total - self._seen, len(self.demo.events))
        self._seen = self.demo.events_total
        for at, text, notable in list(self.demo.events)[len(self.demo.events) - new :]:
            if notable:
                print(f"[{at:5.1f}s] {text}", flush=True)
        elapsed = time.time() - self.demo.t0
        if elapsed - self._last_status >= STATUS_EVERY:
            self._last_status = elapsed
            held = held_per_worker(self.demo)
            spread, elsewhere = member_spread(self.demo, held)
            fates = {w.name: w.fate for w in self.demo.workers}
            counts = ", ".join(
                f"{name} {len(items)}" + (f" ({fates[name]})" if fates.get(name) else "")
                for name, items in held.items()
            )
            print(
                f"[{elapsed:5.1f}s] items per worker: {counts}; spread {spread}, "
                f"{elsewhere} not held by a running worker",
                flush=True,
            )


class BalanceRichView(RichView):
    """--balance on a terminal: one row per worker, its items and a bar, and the spread."""

    def update(self) -> None:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        demo = self.demo
        held = held_per_worker(demo)
        spread, elsewhere = member_spread(demo, held)
        state = "balanced" if spread <= 1 and elsewhere == 0 else f"{elsewhere} items in transit"
        status = Text(f"spread (max-min items per running worker) {spread}, {state}")
        table = Table(
            title=f"aiolease demo --balance  {time.time() - demo.t0:4.1f}s of "
            f"{demo.args.duration:.0f}s",
            title_justify="left",
        )
        for column in ("worker", "state", "items", "held"):
            table.add_column(column, justify="right" if column == "items" else "left")
        for worker in demo.workers:
            items = held.get(worker.name)
            if items is None:
                table.add_row(Text(worker.name, style="dim"), Text("waiting to join", "dim"))
                continue
            bar = Text("█" * len(items) + "  ", style=self._color(worker.name))
            bar.append(" ".join(i.removeprefix("item-") for i in sorted(items)), style="dim")
            table.add_row(
                Text(worker.name, style=self._color(worker.name)),
                Text(worker.fate or "serving", "bold red" if worker.fate == "killed" else ""),
                str(len(items)),
                bar,
            )
        log = Text()
        for at, text, notable in demo.events:
            log.append(f"{at:5.1f}s  {text}\n", style="bold" if notable else "dim")
        self._live.update(Group(table, status, Text(""), log))


def make_view(demo: Demo) -> PlainView:
    """A live table on a terminal (if rich is installed), plain lines otherwise."""
    if sys.stdout.isatty():
        try:
            return BalanceRichView(demo) if demo.args.balance else RichView(demo)
        except ImportError:
            print('(pip install rich for a live table: pip install -e ".[server]")')
    return BalancePlainView(demo) if demo.args.balance else PlainView(demo)
