"""A demo worker process: leases any item, works on it, releases; records every step.

``python -m aiolease.demo._worker worker --lessee=NAME --records=FILE --table=TABLE``
loops ``async with locker.lease(...)`` and appends every hold to its own JSONL file (see
:mod:`aiolease.testing.history`): the start, progress ticks, each renewal (recorded *before*
the renewal is sent, so the record is never behind the table) and the end of the body.

With ``--balance`` it serves its fair share of the pool instead, ``session.serve(work)``
under ``locker.session(...)``: ``work`` processes its item in steps until
``aiolease.draining()`` is set. The session's renewals are recorded as renewals of every
item it holds, since the items' leases live as long as the session: those held when the
renewal is sent (with an upper bound of the expiry it may write) and when it is answered
(with the exact expiry), and an item taken while one is in flight gets its bound too.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import threading
import time
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import aiolease
from aiolease import Lease, LeaseError, LeaseLostError, LeaseRequest, Locker, LockStore
from aiolease.testing.history import RecordWriter

from ._config import (
    BALANCE_STEP,
    CLOCK_SKEW,
    EXIT_STORE,
    LEASE_SECONDS,
    REST,
    WAIT_PERIOD,
    WORK_STEP,
    WORK_STEPS,
)

if TYPE_CHECKING:
    from aiolease._types import SessionRow

__all__ = ["worker_cli"]

_EPOCH = datetime.fromtimestamp(0, UTC)


def _to_datetime(ns: int) -> datetime:
    """Unix epoch nanoseconds as an aware UTC datetime (microseconds, as the store keeps)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _to_seconds(value: datetime) -> float:
    """An aware datetime as Unix epoch seconds (microsecond precision)."""
    return (value - _EPOCH) // timedelta(microseconds=1) * 1000 / 1e9


class _RecordingStore(LockStore):
    """A store that records each renewal's expiry before sending it, and its outcome."""

    recorder: RecordWriter | None = None
    #: --balance: the items held under the session now, and their fencing tokens.
    held: dict[str, int]
    #: --balance: the key of this worker's session (its items' records name it).
    session_key: str | None = None
    #: --balance: set once the worker is stopping (its items drain because of that).
    stopping = False
    #: --balance: the latest expiry a session renewal returned (one session per worker).
    _renewed_until = 0.0
    #: --balance: the upper bounds recorded for the session renewals in flight.
    _in_flight: tuple[float, ...] = ()

    def hold_started(self, lease: Lease) -> None:
        """Record an item taken under the session: it lives as long as the session does.

        serve() stamps the item with its session's expiry as it was when taken: a renewal
        answered since moves it too, and so may the renewal in flight now, if any (whose
        answer is then recorded for this item as well).
        """
        recorder = self.recorder
        assert recorder is not None
        where = {"item": lease.lease_id, "token": lease.fencing_token}
        self.held[lease.lease_id] = lease.fencing_token
        recorder.write(
            "start",
            until=max(lease.until_ns / 1e9, self._renewed_until),
            session=self.session_key,
            **where,
        )
        if self._in_flight:
            recorder.write("renew-sent", until=max(self._in_flight), **where)

    async def start_session(self, request: LeaseRequest) -> Lease:
        session = await super().start_session(request)
        self.session_key = session.lease_id
        return session

    async def renew_session(self, session: Lease) -> Lease:
        """Record the renewal for every item the session holds: their leases move with it."""
        recorder = self.recorder
        if recorder is None:
            return await super().renew_session(session)
        # An upper bound of the expiry this renewal may write, should the worker die before
        # its answer: the library stamps it (now + duration) only once the call holds a
        # request slot, and may stamp it again, so "now" here is no bound. But the locker
        # gives up on the call at the session's local deadline (the keeper's timeout_at:
        # the previous write's send time + duration - safety margin), and that send time is
        # read before the wall clock, so the deadline falls before the previous expiry,
        # session.until: every stamp is taken before it. (Not bounded: an event loop stalled
        # for the whole safety margin just at the deadline, where the slot's wakeup can run
        # before the timeout's.) The answer carries the exact expiry: "renew-ok" below.
        bound = max(time.time(), session.until_ns / 1e9) + session.request.duration
        sent = dict(self.held)
        for item, token in sent.items():
            recorder.write("renew-sent", until=bound, item=item, token=token)
        self._in_flight += (bound,)
        try:
            renewed = await super().renew_session(session)
        except LeaseLostError:
            # Refused, the row not written; also for the items taken while it was in flight.
            for item, token in {**sent, **self.held}.items():
                recorder.write("renew-failed", item=item, token=token)
            raise
        finally:
            # Other errors leave the outcome unknown: the "renew-sent" bound then stands.
            index = self._in_flight.index(bound)
            self._in_flight = self._in_flight[:index] + self._in_flight[index + 1 :]
        until = renewed.until_ns / 1e9
        self._renewed_until = max(self._renewed_until, until)
        # The items held now include those taken while it was in flight (hold_started).
        for item, token in {**sent, **self.held}.items():
            recorder.write("renew-ok", until=until, item=item, token=token)
        return renewed

    async def end_expired_session(self, row: SessionRow) -> bool:
        """Record a session this worker ended as a taker, with the expiry the end is pinned
        to: the dead holder's leases lasted exactly that long (see History.died)."""
        ended = await super().end_expired_session(row)
        if ended and self.recorder is not None and row.lessee_id is not None:
            self.recorder.write(
                "session-ended",
                lessee=row.lessee_id,
                session=row.session_id,
                until=row.until_ns / 1e9,
            )
        return ended

    async def renew(self, lease: Lease, until: datetime | None = None) -> Lease:
        recorder = self.recorder
        if recorder is None:
            return await super().renew(lease, until)
        if until is None:
            until = _to_datetime(time.time_ns() + int(lease.request.duration * 1e9))
        where = {"item": lease.lease_id, "token": lease.fencing_token}
        recorder.write("renew-sent", until=_to_seconds(until), **where)
        try:
            renewed = await super().renew(lease, until)
        except LeaseLostError:
            recorder.write("renew-failed", **where)  # refused: the row was not written
            raise
        # Other errors leave the outcome unknown: the "renew-sent" expiry then stands.
        recorder.write("renew-ok", until=renewed.until_ns / 1e9, **where)
        return renewed


async def _work(locker: Locker, request: LeaseRequest, recorder: RecordWriter) -> None:
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


async def _process(store: _RecordingStore, recorder: RecordWriter, lease: Lease) -> None:
    """--balance's work: one step after another on the item, until it is to be handed back."""
    where = {"item": lease.lease_id, "token": lease.fencing_token}
    store.hold_started(lease)
    drain = aiolease.draining()
    why = "cancelled"  # by the drain grace, or because the session was lost
    step = 0
    try:
        while not drain.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(drain.wait(), BALANCE_STEP)
            if not drain.is_set():
                step += 1
                recorder.write("tick", step=step, of=step, **where)
        why = "stopped" if store.stopping else "drained"
    finally:
        # The work ends here, before serve() releases the item.
        del store.held[lease.lease_id]
        recorder.write("end", why=why, **where)


async def _serve(locker: Locker, request: LeaseRequest, recorder: RecordWriter) -> None:
    """--balance: hold this worker's fair share of the pool until cancelled."""
    store = locker.store
    assert isinstance(store, _RecordingStore)
    async with locker.session(request) as session:
        await session.serve(lambda lease: _process(store, recorder, lease), wait_period=WAIT_PERIOD)


async def _worker_main(args: argparse.Namespace) -> int:
    """A worker: reads its endpoint on stdin, says "ready", waits for "go", works until told.

    Workers start before the server is up (their imports take as long as moto's), and all
    begin leasing together. SIGTERM, SIGINT or the end of stdin (the demo is gone) stop it
    gracefully: the body is cancelled, records its end, and the lease is released.
    """
    recorder = RecordWriter(args.records, args.lessee)
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
            store.held = {}
            locker = Locker(store, max_clock_skew=args.clock_skew)
            request = LeaseRequest(args.lessee, args.lease_duration)
            recorder.write("ready")
            if await lines.get() != "go":
                return 0
            job = _serve if args.balance else _work
            work = asyncio.create_task(job(locker, request, recorder))
            stopper = asyncio.create_task(_until_none(lines))
            await asyncio.wait([work, stopper], return_when=asyncio.FIRST_COMPLETED)
            store.stopping = True
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


def worker_cli(argv: list[str] | None = None) -> int:
    """The worker's command line (the demo starts it; not meant to be run by hand)."""
    parser = argparse.ArgumentParser(prog="python -m aiolease.demo._worker")
    parser.add_argument("role", choices=["worker"])
    parser.add_argument("--lessee", required=True)
    parser.add_argument("--records", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--hash-key", default="LeaseID")
    parser.add_argument("--region")
    parser.add_argument("--lease-duration", type=float, default=LEASE_SECONDS)
    parser.add_argument("--clock-skew", type=float, default=CLOCK_SKEW)
    parser.add_argument("--balance", action="store_true", help="serve a fair share of the pool")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(_worker_main(args))


if __name__ == "__main__":
    sys.exit(worker_cli())
