"""The demo's parent: spawns the workers, starts them together, kills one, stops another.

It follows the workers through their record files (:class:`History`) and the table's
rows, and notes each failover: who took over a killed or stopped worker's item, and when.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from contextlib import suppress

from aiolease import LeaseUnavailableError, LockStore
from aiolease.testing.history import Hold

from ._config import (
    CLOCK_SKEW,
    KILL_AT,
    LEASE_SECONDS,
    REFRESH,
    STANDBY_AFTER,
    STOP_AT,
    STOP_GRACE,
    WORKER_START_TIMEOUT,
)
from ._state import Demo, Victim, Worker
from ._views import PlainView

__all__ = [
    "kill_all",
    "orchestrate",
    "poll",
    "refresh_rows",
    "spawn_workers",
    "start_worker",
    "start_workers",
    "stop_all",
]

#: The module each worker process runs (``python -m``).
WORKER_MODULE = "aiolease.demo._worker"


async def spawn_workers(demo: Demo, env: dict[str, str]) -> None:
    """Start the worker processes; each waits on stdin for the endpoint, then for "go"."""
    args = demo.args
    for worker in demo.workers:
        command = [
            sys.executable,
            "-m",
            WORKER_MODULE,
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
        if args.balance:
            command.append("--balance")
        with worker.log.open("wb") as log:
            worker.process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
                env=env,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops them in order
            )


def _tell(worker: Worker, line: str) -> None:
    assert worker.process is not None and worker.process.stdin is not None
    with suppress(OSError):  # a worker that died is noticed by poll
        worker.process.stdin.write(f"{line}\n".encode())


async def start_workers(demo: Demo, first: int | None = None) -> bool:
    """Give the workers the endpoint, wait until all are connected, then start them at once.

    With ``first``, only that many start; the others wait for :func:`start_worker`.
    """
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
    demo.t0 = time.time()
    for worker in demo.workers[:first]:
        start_worker(worker, demo.t0)
    return True


def start_worker(worker: Worker, at: float) -> None:
    """Tell a connected worker to begin."""
    _tell(worker, "go")
    worker.joined_at = at


def _on_record(demo: Demo) -> Callable[[str, Hold], None]:
    def on_event(kind: str, hold: Hold) -> None:
        if demo.args.balance:
            _on_balance_record(demo, kind, hold)
        elif kind == "start":
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


def _on_balance_record(demo: Demo, kind: str, hold: Hold) -> None:
    """--balance: log an item passing from one worker to another (24 starts are noise)."""
    if kind != "start":
        return
    before = max(
        (
            h
            for h in demo.history.holds.values()
            if h.item == hold.item and h.token < hold.token and h.end is not None
        ),
        key=lambda h: h.token,
        default=None,
    )
    if before is not None and before.end is not None and before.lessee != hold.lessee:
        seconds = hold.start - before.end
        if before.died_at is not None:
            how, after = "takeover", f"{seconds:.1f}s after its session expired"
        else:
            how, after = "handoff", f"{seconds:.1f}s after it was {before.why}"
        demo.event(f"{how} {hold.item}: {before.lessee} -> {hold.lessee} ({after})")


def poll(demo: Demo) -> None:
    """Read the workers' new records; note a worker that exited by itself."""
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


async def refresh_rows(demo: Demo, store: LockStore) -> None:
    """Read the table's rows for the view."""
    with suppress(LeaseUnavailableError):  # a missed refresh is fine; the next one will do
        demo.rows = sorted(
            [item async for item in store.scan(consistent_read=True)],
            key=lambda item: item.lease_id,
        )


def _has_standby(demo: Demo) -> bool:
    """Whether a live worker has been looking for an item long enough to be waiting."""
    now = time.time()
    return any(
        not w.fate and now - demo.history.looking.get(w.name, now) >= STANDBY_AFTER
        for w in demo.workers
    )


def _pick_holder(demo: Demo, exclude: set[str]) -> tuple[Worker, Hold] | None:
    """A live worker holding an item (the one that has held it longest), if any."""
    candidates = [
        (w, h)
        for w in demo.workers
        if not w.fate and w.name not in exclude
        for h in demo.history.open_holds(w.name)
    ]
    return min(candidates, key=lambda c: c[1].start) if candidates else None


async def _signal(demo: Demo, how: str, exclude: set[str]) -> Victim | None:
    picked = _pick_holder(demo, exclude)
    if picked is None:
        return None
    worker, hold = picked
    assert worker.process is not None
    victim = Victim(worker.name, how, time.time(), hold.item, hold.token)
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


async def orchestrate(
    demo: Demo, store: LockStore, view: PlainView, interrupted: asyncio.Event
) -> None:
    """Run for --duration: SIGKILL one holder, later SIGTERM another, refresh the view."""
    duration = demo.args.duration
    end = demo.t0 + duration
    killed: Victim | None = None
    stopped: Victim | None = None
    while time.time() < end and not interrupted.is_set():
        poll(demo)
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
        await refresh_rows(demo, store)
        view.update()
        with suppress(TimeoutError):
            await asyncio.wait_for(interrupted.wait(), REFRESH)


async def stop_all(demo: Demo, store: LockStore, view: PlainView, *, interrupted: bool) -> None:
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
        poll(demo)
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
    poll(demo)
    await refresh_rows(demo, store)
    view.update()


async def kill_all(demo: Demo) -> None:
    """Never leave a worker behind, whatever happened."""
    for worker in demo.workers:
        process = worker.process
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        if process is not None and process.stdin is not None:
            process.stdin.close()
