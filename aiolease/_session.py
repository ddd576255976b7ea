"""LeaseSession: many items held under one session row, kept alive by one heartbeat.

The session row is held like a single lease (a :class:`LeaseScope` over the row, renewed by
its own heartbeat, "released" by the tombstone write). Each item scope is a
:class:`LeaseScope` too, whose hold source is the session: its deadline is the session's,
moved by each session renewal, and the session's loss is its loss. So an item scope has
exactly the cancellation, overrun and fencing semantics of ``locker.lease()``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import math
from collections.abc import Awaitable, Callable
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from ._balance import serve as _serve
from ._errors import LeaseError, LeaseLostError
from ._events import SessionEnded, SessionStarted
from ._heartbeat import MAX_RELEASE_TIME, Heartbeat, Heartbeats, Hold, Keeper, describe
from ._log import get_logger, lease_fields
from ._scope import LeaseScope, _check_lease_id, _check_request
from ._types import Lease, LeaseRequest, _as_seconds

if TYPE_CHECKING:
    from ._locker import Locker

__all__ = ["LeaseSession"]

_T = TypeVar("_T")

# Leaving the session waits this long for item scopes still open in other tasks to unwind
# after their cancellation (milliseconds, normally); then it releases their items itself.
DRAIN_TIME = 1.0


class _State(enum.Enum):
    CREATED = "created"
    ENTERED = "entered"  # items may be taken under the session
    CLOSING = "closing"  # the scope is being left: items are cancelled and released
    EXITED = "exited"


class LeaseSession:
    """``async with locker.session(request) as session:`` — hold many items, one heartbeat.

    On entry, starts a session for ``request.lessee_id`` (a row of its own whose expiry is
    ``request.duration`` ahead) and one heartbeat task that renews it every
    ``heartbeat_period`` (default: a third of the duration): one write per period, however
    many items are held under it. ``session.lease()`` and ``session.run()`` take items under
    the session; an item needs no writes while held, and leaving its scope releases it.

    Losing the session (a renewal refused because a taker ended it, or not renewed before
    its local deadline) cancels every body under it, item scopes and the session's own
    body, with :class:`LeaseLostError`, exactly as ``locker.lease()`` does for one lease.
    Leaving the session scope cancels the item scopes still open in other tasks (their
    bodies see :class:`LeaseLostError`), waits for them a moment, releases their items, ends
    the session (a tombstone write that any later renewal fails on) and stops the heartbeat.
    """

    def __init__(
        self,
        locker: Locker,
        request: LeaseRequest,
        *,
        heartbeat_period: float | None = None,
        _stacklevel: int = 3,
    ) -> None:
        _check_request(request)
        keeper: Keeper = locker._keeper
        period = keeper.check_period(request, heartbeat_period, stacklevel=_stacklevel)
        store = locker.store
        self._request = request
        self._keeper = keeper
        self._store = store
        self._locker = locker
        self._obtain_item = locker._obtain
        self._rows = Heartbeats(keeper, period, renew=self._renew, release=self._end)
        self._item_source = _SessionItems(self)
        self._scope = LeaseScope._held_by(
            keeper, functools.partial(store.start_session, request), _SessionRow(self)
        )
        self._state = _State.CREATED
        self._hold: Hold | None = None  # the session row's, once kept
        self._kept: _RowKept | None = None  # the session row's heartbeat, once kept
        self._items: dict[_Item, None] = {}  # item scopes entered and not yet released
        self._obtaining: set[asyncio.Task[Lease]] = set()
        self._loss: LeaseLostError | None = None
        self._dead_at = math.inf  # monotonic time of the loss, or of leaving the scope

    def __repr__(self) -> str:
        held = f" {describe(self._hold.lease)}" if self._hold is not None else ""
        return f"<LeaseSession {self._state.value}{held}, {len(self._items)} item(s)>"

    # -- what a user reads ------------------------------------------------------------------

    @property
    def request(self) -> LeaseRequest:
        """The request the session was started with: its lessee and time to live."""
        return self._request

    @property
    def lessee_id(self) -> str:
        """The lessee that owns the session and every item held under it."""
        return self._request.lessee_id

    @property
    def session_id(self) -> str:
        """The session row's key (unique per session); ``RuntimeError`` before entry."""
        return self._row().lease_id

    @property
    def leases(self) -> list[Lease]:
        """The leases held under the session now, each with the session's current ``until``."""
        return [item.hold.lease for item in self._items if item.loss() is None]

    @property
    def until(self) -> datetime:
        """The session's stored expiry (UTC), as takers judge it; moves with each renewal."""
        return self._row().until

    @property
    def lost(self) -> bool:
        """Whether the session was lost (refused renewal, local deadline, overrun)."""
        return self._loss is not None or self._scope.lost

    def time_left(self) -> float:
        """Seconds until every body under the session would be cancelled if no renewal succeeds.

        0 before entry, once lost and once the scope is being left.
        """
        if self._state is not _State.ENTERED or self.lost:
            return 0.0
        return self._scope.time_left()

    # -- items -------------------------------------------------------------------------------

    def lease(
        self, lease_id: str | None = None, *, wait_period: float = 1.0, timeout: float | None = None
    ) -> LeaseScope:
        """Hold an item (any available one, or ``lease_id``) under the session.

        The scope behaves as ``locker.lease()``'s: it waits up to ``timeout`` for the item
        (then :class:`LeaseNotObtainedError`), cancels its body with :class:`LeaseLostError`
        when the session is lost, and releases the item on exit. Entering it once the session
        is lost or being left raises :class:`LeaseLostError`.
        """
        if lease_id is not None:
            _check_lease_id(lease_id)
        obtain = functools.partial(
            self._obtain,
            lease_id,
            _as_seconds("wait_period", wait_period),
            None if timeout is None else _as_seconds("timeout", timeout),
        )
        return LeaseScope._held_by(self._keeper, obtain, self._item_source)

    async def run(
        self,
        work: Callable[[Lease], Awaitable[_T]],
        lease_id: str | None = None,
        *,
        wait_period: float = 1.0,
        timeout: float | None = None,
    ) -> _T:
        """Run ``await work(lease)`` under an item of the session and return its result.

        As ``locker.run()``: the result of a ``work`` that outlived the session is never
        returned (:class:`LeaseLostError`).
        """
        if not callable(work):
            raise TypeError(f"work must be a coroutine function, not {type(work).__name__}")
        async with self.lease(lease_id, wait_period=wait_period, timeout=timeout) as lease:
            return await work(lease)

    serve = _serve  # session.serve(work): the fair share of the pool (docs/balancing.md)

    async def _obtain(
        self, lease_id: str | None, wait_period: float, timeout: float | None
    ) -> Lease:
        """Take an item under the session; the session's loss or exit stops the wait."""
        row = self._live_row()
        task = asyncio.current_task()
        assert task is not None  # LeaseScope checked
        cancelling = task.cancelling()
        # In a task of its own, so that the session can stop it without cancelling the
        # caller's task; store.acquire undoes an acquisition that landed before it returns.
        waiter = asyncio.ensure_future(
            self._obtain_item(self._request, lease_id, wait_period, timeout, session=row)
        )
        self._obtaining.add(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Obtained just as the caller was cancelled: give the item back first.
                await self._keeper.tasks.run_shielded(
                    self._give_back(waiter.result()), MAX_RELEASE_TIME, self._keeper.clock
                )
            if task.cancelling() > cancelling or not waiter.cancelled():
                raise  # a cancellation of the caller's: propagate it
            raise self._refusal() from None
        finally:
            self._obtaining.discard(waiter)

    async def _give_back(self, lease: Lease) -> None:
        await self._keeper.release(lease)

    def _live_row(self) -> Lease:
        if self._state is _State.CREATED or self._hold is None:
            raise RuntimeError("session.lease() needs the session scope entered first")
        if self._state is _State.EXITED:
            raise RuntimeError("session.lease() after the session scope was left")
        if self._state is _State.CLOSING or self.lost:
            raise self._refusal()
        return self._hold.lease

    def _refusal(self) -> LeaseLostError:
        row = self._row()
        why = "was lost" if self.lost else "is being ended"
        return LeaseLostError(
            f"no item taken: the session {describe(row)} {why}",
            reason="session lost" if self.lost else "session ended",
        )

    def _row(self) -> Lease:
        if self._hold is None:
            raise RuntimeError("the session has not started yet")
        return self._hold.lease

    # -- the session row's callbacks ---------------------------------------------------------

    def _on_renewed(self, row: Hold) -> None:
        for item in list(self._items):
            hold = item.hold
            hold.lease = dataclasses.replace(
                hold.lease, until=row.lease.until, until_ns=row.lease.until_ns
            )
            hold.deadline = row.deadline
            item.on_renewed(hold)

    def _on_lost(self, exc: LeaseLostError) -> None:
        if self._loss is not None:
            return
        self._loss = exc
        self._dead_at = min(self._dead_at, self._keeper.clock.monotonic())
        for waiter in self._obtaining:
            waiter.cancel()
        if self._items:
            get_logger().info(
                "%d item(s) lost with their session %s",
                len(self._items),
                describe(self._row()),
                extra=lease_fields(self._row()),
            )
        for item in list(self._items):
            item.lose(f"its session was lost: {exc}", exc.reason)
            self._keeper.events.lost(item.hold.lease, exc.reason)

    async def _drain(self) -> None:
        """Cancel the item scopes still open, wait for them (bounded), release what is left."""
        self._state = _State.CLOSING
        self._dead_at = min(self._dead_at, self._keeper.clock.monotonic())
        for waiter in self._obtaining:
            waiter.cancel()
        items = list(self._items)
        for item in items:
            item.lose("the session scope was left while it was held", "session ended")
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(i.done.wait()) for i in items]
        waits.extend(self._obtaining)
        if waits:
            _, pending = await asyncio.wait(waits, timeout=DRAIN_TIME)
            for wait in pending:
                if wait not in self._obtaining:
                    wait.cancel()
        # Those that began their own release are left to it (it is bounded too).
        left = [item for item in items if not item.done.is_set() and not item.finishing]
        if left:
            get_logger().warning(
                "%d item scope(s) under the session %s did not end within %.1f s of its "
                "exit; releasing their items anyway (fence their writes)",
                len(left),
                describe(self._row()),
                DRAIN_TIME,
                extra=lease_fields(self._row()),
            )
            await asyncio.gather(*(self._keeper.release(item.hold.lease) for item in left))

    async def _renew(self, row: Lease) -> Lease:
        try:
            return await self._store.renew_session(row)
        except LeaseLostError as exc:
            # Worded for the keeper's "the item is <detail>".
            raise LeaseLostError(
                str(exc),
                lease_id=exc.lease_id,
                reason=exc.reason,
                detail=f"no longer renewable ({exc.reason})",
            ) from exc

    async def _end(self, row: Lease) -> bool | None:
        """The tombstone write, bounded: True if ended, False if a taker had, None if unknown."""
        limit = min(MAX_RELEASE_TIME, row.request.duration)
        try:
            async with asyncio.timeout(limit):
                ended = await self._store.end_session(row)
        except TimeoutError:
            why = f"timed out after {limit:g} s"
        except LeaseError as exc:
            why = str(exc)
        else:
            if ended:
                get_logger().info("ended session %s", describe(row), extra=lease_fields(row))
                self._keeper.events.emit(SessionEnded, row)
            else:
                get_logger().info(
                    "session %s had already been ended by another",
                    describe(row),
                    extra=lease_fields(row),
                )
            return ended
        get_logger().warning(
            "could not end session %s (%s); it expires at %s",
            describe(row),
            why,
            row.until.isoformat(),
            extra=lease_fields(row),
        )
        return None

    # -- the scope ---------------------------------------------------------------------------

    async def __aenter__(self) -> LeaseSession:
        if self._state is not _State.CREATED:
            raise RuntimeError("a session scope can only be entered once")
        self._state = _State.ENTERED
        try:
            await self._scope.__aenter__()
        except BaseException:
            self._state = _State.EXITED
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if self._state is _State.CREATED or self._state is _State.EXITED:
            raise RuntimeError(f"session scope exited while {self._state.value}")
        try:
            await self._scope.__aexit__(exc_type, exc_val, exc_tb)
        finally:
            self._state = _State.EXITED


class _SessionRow:
    """The hold source of the session row: its own heartbeat, which also drives the items."""

    def __init__(self, session: LeaseSession) -> None:
        self._session = session

    def hold(self, lease: Lease) -> Hold:
        return self._session._rows.hold(lease)

    def keep(
        self,
        hold: Hold,
        on_renewed: Callable[[Hold], None],
        on_lost: Callable[[LeaseLostError], None],
    ) -> _RowKept:
        session = self._session
        session._hold = hold
        session._keeper.events.emit(SessionStarted, hold.lease, until=hold.lease.until)

        def renewed(row: Hold) -> None:
            session._on_renewed(row)
            on_renewed(row)

        def lost(exc: LeaseLostError) -> None:
            session._on_lost(exc)
            on_lost(exc)

        session._kept = _RowKept(session, session._rows.keep(hold, renewed, lost))
        return session._kept

    async def release(self, lease: Lease) -> bool | None:
        return await self._session._end(lease)


class _SessionItems:
    """The hold source of the items under a session: its deadline, its loss, no writes."""

    def __init__(self, session: LeaseSession) -> None:
        self._session = session

    def hold(self, lease: Lease) -> Hold:
        """An item just taken: the session's expiry and deadline (passed if it is dead)."""
        session = self._session
        row = session._row()
        lease = dataclasses.replace(lease, until=row.until, until_ns=row.until_ns)
        assert session._hold is not None
        return Hold(lease, min(session._hold.deadline, session._dead_at))

    def keep(
        self,
        hold: Hold,
        on_renewed: Callable[[Hold], None],
        on_lost: Callable[[LeaseLostError], None],
    ) -> _Item:
        item = _Item(self._session, hold, on_renewed, on_lost)
        self._session._items[item] = None
        self._session._keeper.events.holding(hold.lease, +1)
        return item

    async def release(self, lease: Lease) -> bool | None:
        return await self._session._keeper.release(lease)


class _RowKept:
    """The session row being kept: finishing drains the items first, then ends the row."""

    def __init__(self, session: LeaseSession, heartbeat: Heartbeat) -> None:
        self._session = session
        self._heartbeat = heartbeat

    def loss(self) -> LeaseLostError | None:
        lost = self._heartbeat.loss()
        if lost is not None:
            self._session._on_lost(lost)
        return lost

    async def finish(self) -> bool | None:
        # Items first, while the heartbeat still covers them; then the tombstone.
        try:
            await self._session._drain()
        except BaseException:
            # Cancelled (aclose() gave up on a detached exit) or failed: the heartbeat must
            # not go on renewing a session nobody holds; the row expires by itself.
            self._heartbeat.task.cancel()
            raise
        return await self._heartbeat.finish()


class _Item:
    """One item held under a session: kept by the session's heartbeat, released on finish."""

    __slots__ = ("_loss", "_on_lost", "_session", "done", "finishing", "hold", "on_renewed")

    def __init__(
        self,
        session: LeaseSession,
        hold: Hold,
        on_renewed: Callable[[Hold], None],
        on_lost: Callable[[LeaseLostError], None],
    ) -> None:
        self._session = session
        self.hold = hold
        self.on_renewed = on_renewed
        self._on_lost = on_lost
        self._loss: LeaseLostError | None = None
        self.done = asyncio.Event()
        self.finishing = False

    def loss(self) -> LeaseLostError | None:
        if self._loss is None and self._session._kept is not None:
            # The session's heartbeat may have ended with a loss whose callback has not run
            # yet (in this same loop iteration): ask it, as a single lease's scope does.
            self._session._kept.loss()
        return self._loss

    def lose(self, why: str, reason: str) -> None:
        if self._loss is not None:
            return
        lease = self.hold.lease
        self._loss = LeaseLostError(
            f"lease on {describe(lease)} lost: {why}", lease_id=lease.lease_id, reason=reason
        )
        self._on_lost(self._loss)

    async def finish(self) -> bool | None:
        self.finishing = True
        try:
            return await self._session._keeper.release(self.hold.lease)
        finally:
            if self._session._items.pop(self, "gone") is None:
                self._session._keeper.events.holding(self.hold.lease, -1)
            self.done.set()
