"""``aiolease demo``: worker processes share items under leases; one crashes, one stops.

The parent starts an embedded moto server (unless told to use another endpoint), registers
items, and runs worker processes (``python -m aiolease._demo worker ...``). Each worker
loops ``async with locker.lease(...)`` and appends every hold to its own JSONL file: the
start, progress ticks, each renewal (written *before* the renewal is sent, so the record is
never behind the table) and the end of the body. Midway the parent SIGKILLs one holder and
SIGTERMs another, shows a live table of the rows, and finally checks from those records that
no two holds of one item overlapped and that fencing tokens grew. A killed worker's last
hold counts until its lease's last possible expiry: its lease could not outlive that.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ._errors import LeaseError, LeaseLostError, LeaseUnavailableError
from ._locker import Locker
from ._store import LockStore
from ._types import Lease, LeaseItem, LeaseRequest, datetime_to_ns, ns_to_datetime

__all__ = ["add_demo_arguments", "check_exclusion", "run_demo"]

# Two more workers than items: standbys, so that a crashed worker's item is taken over as
# soon as its lease has expired, and a stopped worker's at once, which is what the demo is
# there to show (and after both, every item still has a worker).
DEFAULT_WORKERS = 6
DEFAULT_ITEMS = 4
DEFAULT_DURATION = 30.0
# Short enough for a failover to happen within seconds, long enough for visible renewals
# (the locker renews every third of it).
LEASE_SECONDS = 3.0
# All workers run on this machine and read one clock: a small skew allowance suffices.
CLOCK_SKEW = 0.5
# How often a waiting worker looks for a free or expired item.
WAIT_PERIOD = 0.5
# The fake work: this many steps of this many seconds per hold, then a short rest.
WORK_STEP = 0.5
WORK_STEPS = (4, 9)
REST = (0.2, 0.8)
# Below this there is no time for a crash, a lease expiry and a takeover.
MIN_DURATION = 10.0
# The crash, the graceful stop, as fractions of --duration.
# Each waits, up to a tenth of --duration more, for a standby that is looking for an item.
KILL_AT = 0.3
# The stop waits for the crashed worker's item to be taken over (the standby is needed).
STOP_AT = (0.5, 0.8)  # not before the first, not after the second
# A worker looking this long has found every item held: it will take the next one freed.
STANDBY_AFTER = 0.3
REFRESH = 0.25
STATUS_EVERY = 5.0  # plain (non-terminal) output: one status line this often
STOP_GRACE = 5.0
WORKER_START_TIMEOUT = 60.0  # a stopped worker releases and exits within this, or is killed
EXIT_STORE = 3


# -- the worker process -------------------------------------------------------------------


class _Recorder:
    """Appends JSON lines to the worker's record file, one ``write()`` per line."""

    def __init__(self, path: str, lessee: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.lessee = lessee

    def write(self, event: str, **fields: Any) -> None:
        record = {"ev": event, "w": self.lessee, "t": time.time(), **fields}
        os.write(self._fd, (json.dumps(record) + "\n").encode())

    def close(self) -> None:
        os.close(self._fd)


class _RecordingStore(LockStore):
    """A store that records each renewal's expiry before sending it, and its outcome."""

    recorder: _Recorder | None = None

    async def renew(self, lease: Lease, until: datetime | None = None) -> Lease:
        recorder = self.recorder
        if recorder is None:
            return await super().renew(lease, until)
        if until is None:
            until = ns_to_datetime(time.time_ns() + int(lease.request.duration * 1e9))
        where = {"item": lease.lease_id, "token": lease.fencing_token}
        recorder.write("renew-sent", until=datetime_to_ns(until) / 1e9, **where)
        try:
            renewed = await super().renew(lease, until)
        except LeaseLostError:
            recorder.write("renew-failed", **where)  # refused: the row was not written
            raise
        # Other errors leave the outcome unknown: the "renew-sent" expiry then stands.
        recorder.write("renew-ok", until=renewed.until_ns / 1e9, **where)
        return renewed


async def _work(locker: Locker, request: LeaseRequest, recorder: _Recorder) -> None:
    """Lease any item, work on it in steps, release, rest, forever."""
    rng = random.Random()
    while True:
        recorder.write("looking")
        scope = locker.lease(request, wait_period=WAIT_PERIOD)
        with suppress(LeaseLostError):  # recorded as the hold's end below; look for another
            async with scope as lease:
                where = {"item": lease.lease_id, "token": lease.fencing_token}
                recorder.write("start", until=lease.until_ns / 1e9, **where)
                why = "stopped"
                try:
                    steps = rng.randint(*WORK_STEPS)
                    for step in range(1, steps + 1):
                        await asyncio.sleep(WORK_STEP)
                        recorder.write("tick", step=step, of=steps, **where)
                    why = "released"
                finally:
                    # The body ends here, before the scope releases the lease.
                    recorder.write("end", why="lost" if scope.lost else why, **where)
        await asyncio.sleep(rng.uniform(*REST))


async def _worker_main(args: argparse.Namespace) -> int:
    """A worker: reads its endpoint on stdin, says "ready", waits for "go", works until told.

    Workers start before the server is up (their imports take as long as moto's), and all
    begin leasing together. SIGTERM, SIGINT or the end of stdin (the demo is gone) stop it
    gracefully: the body is cancelled, records its end, and the lease is released.
    """
    recorder = _Recorder(args.records, args.lessee)
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def stop() -> None:
        lines.put_nowait(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.strip())
        loop.call_soon_threadsafe(stop)

    threading.Thread(target=read_stdin, daemon=True).start()
    try:
        endpoint = await lines.get()
        if endpoint is None:
            return 0
        async with _RecordingStore.connect(
            args.table,
            args.hash_key,
            endpoint_url=endpoint if endpoint != "-" else None,
            region_name=args.region,
        ) as store:
            assert isinstance(store, _RecordingStore)
            store.recorder = recorder
            locker = Locker(store, max_clock_skew=args.clock_skew)
            request = LeaseRequest(args.lessee, args.lease_duration)
            recorder.write("ready")
            if await lines.get() != "go":
                return 0
            work = asyncio.create_task(_work(locker, request, recorder))
            stopper = asyncio.create_task(_until_none(lines))
            await asyncio.wait([work, stopper], return_when=asyncio.FIRST_COMPLETED)
            work.cancel()
            stopper.cancel()
            with suppress(asyncio.CancelledError):
                await work
    except LeaseError as exc:
        print(f"{args.lessee}: {exc}", file=sys.stderr)
        return EXIT_STORE
    finally:
        recorder.close()
    return 0


async def _until_none(lines: asyncio.Queue[str | None]) -> None:
    while await lines.get() is not None:
        pass


def _worker_cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aiolease._demo worker")
    parser.add_argument("role", choices=["worker"])
    parser.add_argument("--lessee", required=True)
    parser.add_argument("--records", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--hash-key", default="LeaseID")
    parser.add_argument("--region")
    parser.add_argument("--lease-duration", type=float, default=LEASE_SECONDS)
    parser.add_argument("--clock-skew", type=float, default=CLOCK_SKEW)
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(_worker_main(args))


# -- the records, and the exclusion check -------------------------------------------------


@dataclass
class Hold:
    """One worker's hold of one item, from the workers' own records (wall-clock seconds).

    ``end`` is when the body exited, or for a worker that died holding the lease, the last
    expiry that lease may have had. ``until`` is the latest confirmed expiry; ``pending``
    the expiry of a renewal sent but not answered.
    """

    item: str
    lessee: str
    token: int
    start: float
    until: float
    end: float | None = None
    why: str = ""
    pending: float = 0.0
    died_at: float | None = None
    step: int = 0
    steps: int = 0

    @property
    def last_expiry(self) -> float:
        return max(self.until, self.pending)


class _History:
    """Reads the workers' record files as they grow, into holds and events."""

    def __init__(self) -> None:
        self.holds: dict[tuple[str, int], Hold] = {}
        self.renewals = 0
        self.ready: set[str] = set()
        #: When each worker that holds nothing started looking for an item.
        self.looking: dict[str, float] = {}
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}

    def poll(self, paths: list[Path], on_event: Callable[[str, Hold], None]) -> None:
        for path in paths:
            for record in self._read_new(path):
                self._apply(record, on_event)

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
        if event == "start":
            self.looking.pop(record["w"], None)
            hold = Hold(key[0], record["w"], key[1], record["t"], record["until"])
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
            hold.end = max(hold.last_expiry, at)
            hold.why = "holder died"
        return holds


def check_exclusion(holds: list[Hold]) -> list[str]:
    """Violations of mutual exclusion in ``holds``: overlaps, or tokens that did not grow.

    An empty list means the check passed. A hold with no end (its worker's fate unknown)
    is a violation too: it cannot be shown not to overlap.
    """
    problems: list[str] = []
    by_item: dict[str, list[Hold]] = collections.defaultdict(list)
    for hold in holds:
        if hold.end is None:
            problems.append(f"{hold.item}: {hold.lessee} (token {hold.token}) never ended")
            continue
        by_item[hold.item].append(hold)
    for item, item_holds in sorted(by_item.items()):
        item_holds.sort(key=lambda h: h.start)
        for before, after in itertools.pairwise(item_holds):
            assert before.end is not None
            if after.start < before.end:
                problems.append(
                    f"{item}: {after.lessee} (token {after.token}) started "
                    f"{before.end - after.start:.3f}s before {before.lessee} "
                    f"(token {before.token}) stopped holding it"
                )
            if after.token <= before.token:
                problems.append(
                    f"{item}: fencing token went from {before.token} ({before.lessee}) "
                    f"to {after.token} ({after.lessee})"
                )
    return problems


# -- the parent: orchestration ------------------------------------------------------------


@dataclass
class _Worker:
    name: str
    records: Path
    log: Path
    process: asyncio.subprocess.Process | None = None
    fate: str = ""  # "", "killed", "stopped", "crashed"
    signalled_at: float | None = None

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
class _Victim:
    worker: str
    how: str  # "SIGKILL" or "SIGTERM"
    at: float
    item: str
    token: int
    takeover: Hold | None = None


@dataclass
class _Demo:
    """Everything the view and the summary need to know."""

    args: argparse.Namespace
    items: list[str]
    workers: list[_Worker]
    endpoint: str | None = None
    history: _History = field(default_factory=_History)
    victims: list[_Victim] = field(default_factory=list)
    rows: list[LeaseItem] = field(default_factory=list)
    events: collections.deque[tuple[float, str, bool]] = field(
        default_factory=lambda: collections.deque(maxlen=9)
    )
    t0: float = 0.0

    events_total: int = 0

    def event(self, text: str, *, notable: bool = False, at: float | None = None) -> None:
        self.events.append(((at or time.time()) - self.t0, text, notable))
        self.events_total += 1


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's own options (the connection options come from the CLI)."""
    parser.add_argument(
        "--duration",
        type=float,
        default=DEFAULT_DURATION,
        help=f"seconds to run the workers (default: {DEFAULT_DURATION:.0f}, "
        f"at least {MIN_DURATION:.0f})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"worker processes (default: {DEFAULT_WORKERS}, at least 3)",
    )
    parser.add_argument(
        "--items", type=int, default=DEFAULT_ITEMS, help=f"work items (default: {DEFAULT_ITEMS})"
    )
    parser.add_argument(
        "--timeline",
        metavar="FILE",
        help="write a picture of who held what when (.svg or .png; needs matplotlib)",
    )
    parser.add_argument(
        "--aws",
        action="store_true",
        help="use AWS's own endpoint (credentials and region from the environment) "
        "instead of an embedded server",
    )
    parser.set_defaults(run=run_demo)


def _usage(message: str) -> int:
    print(f"aiolease demo: error: {message}", file=sys.stderr)
    return 2


async def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit code (0 only if the exclusion check passed)."""
    if not args.duration >= MIN_DURATION:
        return _usage(f"--duration must be at least {MIN_DURATION:.0f} seconds")
    if args.workers < 3 or args.workers > 20:
        return _usage("--workers must be between 3 and 20 (one crashes, one stops)")
    if args.items < 1 or args.items > 100:
        return _usage("--items must be between 1 and 100")
    if args.timeline:
        if Path(args.timeline).suffix.lower() not in (".svg", ".png"):
            return _usage("--timeline must name a .svg or .png file")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return _usage('--timeline needs matplotlib: pip install "aiolease[timeline]"')
    endpoint = (
        args.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    embedded = endpoint is None and not args.aws
    env = dict(os.environ)
    from ._cli import _has_credentials, _is_loopback, make_session
    from .testing import FAKE_CREDENTIALS, MotoServer

    if embedded:
        try:
            import moto  # noqa: F401
        except ImportError:
            return _usage('the embedded server needs moto: pip install -e ".[server]"')
    if embedded or (not args.profile and _is_loopback(endpoint) and not _has_credentials()):
        # A local server accepts any credentials: give everyone throwaway ones.
        env.update(
            AWS_ACCESS_KEY_ID=FAKE_CREDENTIALS["aws_access_key_id"],
            AWS_SECRET_ACCESS_KEY=FAKE_CREDENTIALS["aws_secret_access_key"],
            AWS_DEFAULT_REGION=FAKE_CREDENTIALS["region_name"],
        )
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            env.pop(name, None)
        args.profile = None
    elif args.profile:
        env["AWS_PROFILE"] = args.profile
    args.endpoint_url = endpoint
    session = None if embedded else make_session(args)
    async with AsyncExitStack() as stack:
        records = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aiolease-demo-")))
        demo = _Demo(
            args,
            [f"item-{i}" for i in range(1, args.items + 1)],
            [
                _Worker(f"worker-{i}", records / f"worker-{i}.jsonl", records / f"worker-{i}.log")
                for i in range(1, args.workers + 1)
            ],
        )
        stack.push_async_callback(_kill_all, demo)
        # The workers' imports take as long as the server's start: do both at once.
        await _spawn_workers(demo, env)
        if embedded:
            server = MotoServer()
            endpoint = await asyncio.to_thread(server.start)
            stack.callback(server.stop)
            from .testing import fake_session

            session = fake_session()
        demo.endpoint = endpoint
        store = await stack.enter_async_context(
            LockStore.connect(
                args.table,
                args.hash_key,
                endpoint_url=endpoint,
                region_name=args.region,
                session=session,
            )
        )
        await store.create_table()
        for item in demo.items:
            await store.add_item(item, {"demo": True})
        strangers = sorted(set(await store.list_lease_ids()) - set(demo.items))
        if strangers:
            print(
                f"aiolease demo: error: table {args.table!r} holds items the demo did not "
                f"create ({', '.join(strangers[:3])}...); pick another --table",
                file=sys.stderr,
            )
            return 1
        _print_header(demo, embedded)
        if not await _start_workers(demo):
            return 1
        interrupted = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
        stack.callback(loop.remove_signal_handler, signal.SIGINT)
        view = _make_view(demo)
        try:
            await _orchestrate(demo, store, view, interrupted)
            await _stop_all(demo, store, view, interrupted=interrupted.is_set())
        finally:
            view.close()
        return _summarize(demo, interrupted.is_set())
    raise AssertionError("unreachable")  # pragma: no cover


async def _spawn_workers(demo: _Demo, env: dict[str, str]) -> None:
    """Start the worker processes; each waits on stdin for the endpoint, then for "go"."""
    args = demo.args
    for worker in demo.workers:
        command = [
            sys.executable,
            "-m",
            "aiolease._demo",
            "worker",
            f"--lessee={worker.name}",
            f"--records={worker.records}",
            f"--table={args.table}",
            f"--hash-key={args.hash_key}",
            f"--lease-duration={LEASE_SECONDS}",
            f"--clock-skew={CLOCK_SKEW}",
        ]
        if args.region:
            command.append(f"--region={args.region}")
        with worker.log.open("wb") as log:
            worker.process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
                env=env,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops them in order
            )


def _tell(worker: _Worker, line: str) -> None:
    assert worker.process is not None and worker.process.stdin is not None
    with suppress(OSError):  # a worker that died is noticed by _poll
        worker.process.stdin.write(f"{line}\n".encode())


async def _start_workers(demo: _Demo) -> bool:
    """Give the workers the endpoint, wait until all are connected, then start them at once."""
    for worker in demo.workers:
        _tell(worker, demo.endpoint or "-")
    deadline = time.time() + WORKER_START_TIMEOUT
    names = {w.name for w in demo.workers}
    while not names <= demo.history.ready:
        demo.history.poll([w.records for w in demo.workers], lambda kind, hold: None)
        dead = [
            w for w in demo.workers if w.process is not None and w.process.returncode is not None
        ]
        if dead or time.time() > deadline:
            what = f"{dead[0].name} exited" if dead else "the workers did not start in time"
            tail = dead[0].log.read_text(errors="replace").strip().splitlines()[-1:] if dead else []
            print(
                f"aiolease demo: error: {what}" + (f": {tail[0]}" if tail else ""), file=sys.stderr
            )
            return False
        await asyncio.sleep(0.05)
    for worker in demo.workers:
        _tell(worker, "go")
    demo.t0 = time.time()
    return True


def _on_record(demo: _Demo) -> Callable[[str, Hold], None]:
    def on_event(kind: str, hold: Hold) -> None:
        if kind == "start":
            demo.event(f"{hold.lessee} took {hold.item} (fencing token {hold.token})")
            for victim in demo.victims:
                if (
                    victim.takeover is None
                    and victim.item == hold.item
                    and hold.token > victim.token
                    and hold.start > victim.at
                ):
                    victim.takeover = hold
                    demo.event(
                        f"FAILOVER: {hold.lessee} took over {hold.item} from {victim.worker}, "
                        f"{hold.start - victim.at:.1f}s after the {victim.how}",
                        notable=True,
                    )
        elif hold.why == "lost":
            demo.event(f"{hold.lessee} LOST {hold.item}: its work was cancelled", notable=True)
        elif hold.why == "stopped":
            demo.event(f"{hold.lessee} stopped; releasing {hold.item}")
        else:
            demo.event(f"{hold.lessee} released {hold.item}")

    return on_event


def _poll(demo: _Demo) -> None:
    demo.history.poll([w.records for w in demo.workers], _on_record(demo))
    for worker in demo.workers:
        process = worker.process
        if process is not None and process.returncode is not None and not worker.fate:
            worker.fate = "crashed"
            demo.history.died(worker.name, time.time())
            demo.event(
                f"{worker.name} exited by itself (code {process.returncode}){worker.last_words}",
                notable=True,
            )


async def _refresh_rows(demo: _Demo, store: LockStore) -> None:
    with suppress(LeaseUnavailableError):  # a missed refresh is fine; the next one will do
        demo.rows = sorted(
            [item async for item in store.scan(consistent_read=True)],
            key=lambda item: item.lease_id,
        )


def _has_standby(demo: _Demo) -> bool:
    """Whether a live worker has been looking for an item long enough to be waiting."""
    now = time.time()
    return any(
        not w.fate and now - demo.history.looking.get(w.name, now) >= STANDBY_AFTER
        for w in demo.workers
    )


def _pick_holder(demo: _Demo, exclude: set[str]) -> tuple[_Worker, Hold] | None:
    """A live worker holding an item (the one that has held it longest), if any."""
    candidates = [
        (w, h)
        for w in demo.workers
        if not w.fate and w.name not in exclude
        for h in demo.history.open_holds(w.name)
    ]
    return min(candidates, key=lambda c: c[1].start) if candidates else None


async def _signal(demo: _Demo, how: str, exclude: set[str]) -> _Victim | None:
    picked = _pick_holder(demo, exclude)
    if picked is None:
        return None
    worker, hold = picked
    assert worker.process is not None
    victim = _Victim(worker.name, how, time.time(), hold.item, hold.token)
    worker.signalled_at = victim.at
    if how == "SIGKILL":
        worker.fate = "killed"
        worker.process.send_signal(signal.SIGKILL)
        await worker.process.wait()
        # Nothing more will be recorded: read what was, then its hold lasts until expiry.
        demo.history.poll([worker.records], _on_record(demo))
        demo.history.died(worker.name, victim.at)
        demo.event(
            f"SIGKILL {worker.name} while it holds {hold.item}: no release, its lease "
            f"must expire first",
            notable=True,
            at=victim.at,
        )
    else:
        worker.fate = "stopped"
        worker.process.send_signal(signal.SIGTERM)
        demo.event(
            f"SIGTERM {worker.name} while it holds {hold.item}: it stops its work and releases",
            notable=True,
            at=victim.at,
        )
    demo.victims.append(victim)
    return victim


async def _orchestrate(
    demo: _Demo, store: LockStore, view: _View, interrupted: asyncio.Event
) -> None:
    duration = demo.args.duration
    end = demo.t0 + duration
    killed: _Victim | None = None
    stopped: _Victim | None = None
    while time.time() < end and not interrupted.is_set():
        _poll(demo)
        elapsed = time.time() - demo.t0
        standby = _has_standby(demo)
        if (
            killed is None
            and elapsed >= KILL_AT * duration
            and (standby or elapsed >= (KILL_AT + 0.1) * duration)
        ):
            killed = await _signal(demo, "SIGKILL", set())
        if (
            killed is not None
            and stopped is None
            and elapsed >= STOP_AT[0] * duration
            and ((killed.takeover is not None and standby) or elapsed >= STOP_AT[1] * duration)
        ):
            stopped = await _signal(demo, "SIGTERM", {killed.worker})
        await _refresh_rows(demo, store)
        view.update()
        with suppress(TimeoutError):
            await asyncio.wait_for(interrupted.wait(), REFRESH)


async def _stop_all(demo: _Demo, store: LockStore, view: _View, *, interrupted: bool) -> None:
    """SIGTERM every live worker (each releases its item), then wait for them."""
    why = "interrupted" if interrupted else f"{demo.args.duration:.0f}s are up"
    demo.event(f"{why}: stopping every worker", notable=True)
    live = [w for w in demo.workers if w.process is not None and w.process.returncode is None]
    for worker in live:
        if worker.fate != "killed":
            assert worker.process is not None
            worker.process.send_signal(signal.SIGTERM)
            worker.fate = worker.fate or "stopped"
    deadline = time.time() + STOP_GRACE
    while time.time() < deadline and any(w.process.returncode is None for w in live if w.process):
        _poll(demo)
        view.update()
        await asyncio.sleep(REFRESH)
    for worker in live:
        assert worker.process is not None
        if worker.process.returncode is None:
            worker.process.kill()
            await worker.process.wait()
            worker.fate = "killed (did not stop)"
            demo.history.poll([worker.records], _on_record(demo))
            demo.history.died(worker.name, time.time())
    _poll(demo)
    await _refresh_rows(demo, store)
    view.update()


async def _kill_all(demo: _Demo) -> None:
    """Never leave a worker behind, whatever happened."""
    for worker in demo.workers:
        process = worker.process
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        if process is not None and process.stdin is not None:
            process.stdin.close()


# -- output -------------------------------------------------------------------------------


def _print_header(demo: _Demo, embedded: bool) -> None:
    args = demo.args
    where = f"embedded DynamoDB (moto) at {demo.endpoint}" if embedded else demo.endpoint or "AWS"
    print(
        f"aiolease demo: {args.workers} worker processes, {len(demo.items)} items, "
        f"{LEASE_SECONDS:.0f}s leases, {args.duration:.0f}s; {where}, table {args.table!r}"
    )
    ls = f"python -m aiolease ls --table {args.table}"
    if demo.endpoint:
        ls += f" --endpoint-url {demo.endpoint}"
    print(f"watch the table from another shell: {ls}", flush=True)


class _View:
    """Plain output for logs and CI: notable events, and a status line now and then."""

    def __init__(self, demo: _Demo) -> None:
        self.demo = demo
        self._seen = 0  # events already considered for printing
        self._last_status = 0.0

    def update(self) -> None:
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
        pass


_COLORS = ["cyan", "magenta", "green", "yellow", "bright_blue", "bright_red", "white"]


class _RichView(_View):
    """A live table in a terminal: item, holder, fencing token, expires in, work done."""

    def __init__(self, demo: _Demo) -> None:
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


def _make_view(demo: _Demo) -> _View:
    if sys.stdout.isatty():
        try:
            return _RichView(demo)
        except ImportError:
            print('(pip install rich for a live table: pip install -e ".[server]")')
    return _View(demo)


def _summarize(demo: _Demo, interrupted: bool) -> int:
    holds = sorted(demo.history.holds.values(), key=lambda h: h.start)
    problems = check_exclusion(holds)
    crashed = [w.name for w in demo.workers if w.fate == "crashed"]
    lost = sum(h.why == "lost" for h in holds)
    handovers = _count_handovers(holds)
    elapsed = time.time() - demo.t0
    print()
    print(f"Summary ({elapsed:.0f}s, {len(demo.workers)} workers, {len(demo.items)} items)")
    print(
        f"  leases obtained: {len(holds)}   renewals: {demo.history.renewals}   "
        f"handovers: {handovers}   leases lost: {lost}"
    )
    print("  failovers:")
    for victim in demo.victims:
        verb = "killed" if victim.how == "SIGKILL" else "stopped"
        line = f"    {victim.item}: {victim.worker} ({victim.how}) -> "
        if victim.takeover is None:
            line += "nobody before the demo ended"
        else:
            seconds = victim.takeover.start - victim.at
            line += f"{victim.takeover.lessee} in {seconds:.1f}s"
            if victim.how == "SIGKILL":
                dead = demo.history.holds.get((victim.item, victim.token))
                if dead is not None and dead.end is not None:
                    line += (
                        f" (its lease ran {dead.end - victim.at:.1f}s more after the kill; "
                        f"then + {CLOCK_SKEW}s clock-skew allowance)"
                    )
            else:
                line += " (released on exit: no expiry to wait for)"
        print(f"{line}   [{verb} at {victim.at - demo.t0:.1f}s]")
    if not demo.victims:
        print("    none (no worker held a lease when it was time to kill one)")
    for name in crashed:
        print(f"  {name} exited by itself: see its log above")
    ok = not problems and bool(holds) and not crashed
    if problems:
        print(f"  exclusion check: FAILED, {len(problems)} violation(s):")
        for problem in problems[:20]:
            print(f"    {problem}")
    elif not holds:
        print("  exclusion check: nothing to check, no lease was obtained")
    else:
        print(
            f"  exclusion check: passed: {len(holds)} holds of {len(demo.items)} items, "
            "no two holds of one item overlap, fencing tokens strictly increase per item"
        )
    if demo.args.timeline:
        try:
            write_timeline(Path(demo.args.timeline), demo, holds)
            print(f"  timeline: {demo.args.timeline}")
        except (OSError, ValueError) as exc:
            print(f"  timeline: not written ({exc})")
            ok = False
    if interrupted:
        print("  (interrupted before the end)")
        return 130
    return 0 if ok else 1


def _count_handovers(holds: list[Hold]) -> int:
    by_item: dict[str, list[Hold]] = collections.defaultdict(list)
    for hold in holds:
        by_item[hold.item].append(hold)
    return sum(
        before.lessee != after.lessee
        for item_holds in by_item.values()
        for before, after in itertools.pairwise(item_holds)
    )


def write_timeline(path: Path, demo: _Demo, holds: list[Hold]) -> None:
    """A picture of who held what when: a bar per hold, one row per item, color per worker."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    palette = colormaps["tab10"]
    names = [w.name for w in demo.workers]
    color = {name: palette(i % 10) for i, name in enumerate(names)}
    figure = Figure(figsize=(11, 1.2 + 0.55 * len(demo.items)), layout="constrained")
    axes = figure.add_subplot()
    rows = {item: i for i, item in enumerate(demo.items)}
    for hold in holds:
        if hold.item not in rows or hold.end is None:
            continue
        y = rows[hold.item]
        body_end = hold.died_at if hold.died_at is not None else hold.end
        axes.broken_barh(
            [(hold.start - demo.t0, body_end - hold.start)],
            (y - 0.35, 0.7),
            facecolors=color[hold.lessee],
        )
        if hold.died_at is not None:  # the dead holder's lease, still valid until expiry
            axes.broken_barh(
                [(body_end - demo.t0, hold.end - body_end)],
                (y - 0.35, 0.7),
                facecolors="none",
                edgecolors=color[hold.lessee],
                hatch="///",
            )
        if body_end - hold.start > 0.8:
            axes.text(
                (hold.start + body_end) / 2 - demo.t0,
                y,
                str(hold.token),
                ha="center",
                va="center",
                fontsize=7,
                color="white",
            )
    for victim in demo.victims:
        x = victim.at - demo.t0
        axes.axvline(x, color="black", linestyle="--", linewidth=1)
        axes.text(x, -0.6, f" {victim.how} {victim.worker}", fontsize=8, va="bottom")
    axes.set_yticks(range(len(demo.items)), demo.items)
    axes.set_ylim(len(demo.items) - 0.5, -0.9)
    axes.set_xlabel("seconds since the workers started (numbers: fencing tokens)")
    axes.set_title("aiolease demo: who held which item when (hatched: a dead holder's lease)")
    handles = [Patch(facecolor=color[name], label=name) for name in names]
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    figure.savefig(path)


if __name__ == "__main__":
    sys.exit(_worker_cli())
