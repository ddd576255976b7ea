"""Locker: obtaining leases by its takeover rule, heartbeating them, owning their cleanup.

The locker speaks time and tasks; everything it knows of DynamoDB goes through the
store's public coroutines (directly, or through its takeover rule).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

from ._errors import LeaseNotObtainedError, LeaseUnavailableError
from ._events import DEFAULT_MAX_BUFFER, EventStream, Listener
from ._heartbeat import HEARTBEAT_STOP_TIME, MAX_RELEASE_TIME, Keeper, describe
from ._log import get_logger, lease_fields
from ._scope import LeaseScope, _check_lease_id, _check_request
from ._session import LeaseSession
from ._takeover import Takeover, takeover_rule
from ._tasks import TaskOwner
from ._types import (
    Holder,
    Lease,
    LeaseRequest,
    _as_seconds,
    check_clock_skew,
    refuse_session_row,
)

if TYPE_CHECKING:
    from ._store import LockStore

__all__ = ["LeaseScope", "LeaseSession", "Locker"]

_T = TypeVar("_T")

# aclose() waits this long for background work: longer than one release's own bounds
# (stopping the heartbeat, then the release call), so a release that can finish does.
_CLOSE_TIMEOUT = HEARTBEAT_STOP_TIME + MAX_RELEASE_TIME + 1.0
# What is still running then is cancelled and given this long to unwind.
_UNWIND_TIME = 0.5
# Observe mode wakes this long after a watched row ripens: loop timers may fire a hair early.
_RIPE_SLACK = 0.005


class Locker:
    """Obtains leases from a :class:`LockStore` and keeps them alive.

    ``max_clock_skew`` (seconds) bounds how far hosts' wall clocks may disagree: another
    lessee's lease counts as expired only once ``LeaseUntil + max_clock_skew`` has passed
    here. ``safety_margin`` (default: a tenth of the lease, at most 2 s) is how long before
    its expiry a holder cancels its own work.

    ``takeover`` chooses how another lessee's lease is judged expired: ``"clock"`` by the
    stored ``LeaseUntil`` against the local wall clock (plus ``max_clock_skew``), as the Go
    package does; ``"observe"`` only once this locker has itself seen the row unchanged for
    the holder's stored lease duration on its own monotonic clock, which needs no agreement
    between clocks (rows without a stored duration, such as Go's, still use the clock rule).
    A takeover rule object (with ``obtain_any``, ``obtain_named`` and ``ripens_in``) may be
    given instead; it then brings its own ``max_clock_skew``. See docs/takeover-modes.md.

    ``meter_provider`` (an OpenTelemetry ``MeterProvider``; needs ``aiolease[otel]``) turns
    on the locker's metrics, attributed by table (and by lessee with
    ``metrics_lessee_id=True``); see docs/observability.md. Events: :meth:`add_listener`,
    :meth:`events`.
    """

    def __init__(
        self,
        store: LockStore,
        *,
        max_clock_skew: float = 1.0,
        takeover: Literal["clock", "observe"] | Takeover = "clock",
        safety_margin: float | None = None,
        meter_provider: Any = None,
        metrics_lessee_id: bool = False,
    ) -> None:
        from ._store import LockStore

        if not isinstance(store, LockStore):
            raise TypeError(f"store must be a LockStore, not {type(store).__name__}")
        max_clock_skew = check_clock_skew(max_clock_skew)
        self._rule = takeover_rule(takeover, max_clock_skew)
        if safety_margin is not None:
            safety_margin = _as_seconds("safety_margin", safety_margin)
        self._store = store
        # Work that outlived its call (a release detached by a cancellation, a heartbeat that
        # would not stop): owned here and by the store, awaited by aclose().
        self._tasks = TaskOwner(
            "background release(s) or heartbeat(s)",
            "their leases expire by themselves",
            parent=store.tasks,
        )
        self._keeper = Keeper(store, store.clock, safety_margin, self._tasks)
        if meter_provider is not None:
            from ._metrics import Metrics

            self._keeper.events.metrics = Metrics(
                meter_provider, store.table_name, lessee_id=metrics_lessee_id
            )

    def __repr__(self) -> str:
        return (
            f"Locker({self._store!r}, max_clock_skew={self.max_clock_skew}, "
            f"takeover={self.takeover!r})"
        )

    @property
    def store(self) -> LockStore:
        """The store this locker obtains leases from."""
        return self._store

    @property
    def max_clock_skew(self) -> float:
        """The assumed bound between hosts' wall clocks, in seconds."""
        return self._rule.max_clock_skew

    @property
    def takeover(self) -> str:
        """The takeover rule's name: ``"clock"``, ``"observe"``, or a custom rule's."""
        return self._rule.name

    @property
    def safety_margin(self) -> float | None:
        """The configured safety margin in seconds (None: a tenth of the lease, at most 2 s)."""
        return self._keeper.safety_margin

    async def __aenter__(self) -> Locker:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Wait for the locker's background work, at most 7 seconds (``_CLOSE_TIMEOUT``).

        That work is releases that a second cancellation detached from their scope and
        heartbeats that would not stop; what is still running after the wait is cancelled.
        Call it (or leave ``async with Locker(...)``) before closing the store's client;
        ``LockStore.connect()`` waits for it on exit too. The locker stays usable.
        """
        await self._tasks.aclose(_CLOSE_TIMEOUT, _UNWIND_TIME)

    # -- obtaining ----------------------------------------------------------------------

    async def obtain_lease(self, request: LeaseRequest) -> Lease:
        """Lease any available (free or expired) item; :class:`LeaseNotObtainedError` if none.

        Candidates come from the store (a filtered scan, or the indexed layout's query) and
        are tried in random order, so workers starting together spread over the pool
        instead of colliding on the first rows.
        """
        _check_request(request)
        return await self._obtain_any(request, self._keeper.clock.monotonic(), None)

    async def _obtain_any(
        self, request: LeaseRequest, started: float, session: Lease | None
    ) -> Lease:
        # A rule of one's own may not know sessions: the keyword only when there is one.
        if session is None:
            lease = await self._rule.obtain_any(self._store, request)
        else:
            lease = await self._rule.obtain_any(self._store, request, session=session)
        self._log_acquired(lease, started)
        return lease

    async def wait_until_lease_obtained(
        self, request: LeaseRequest, wait_period: float = 1.0, *, lease_id: str | None = None
    ) -> Lease:
        """Retry :meth:`obtain_lease` every ``wait_period`` seconds until it succeeds.

        With ``lease_id``, wait for that item instead (by this locker's takeover rule); a
        ``lease_id`` with no row raises :class:`LeaseNotObtainedError` at once, as
        :meth:`lease` does. Transient DynamoDB errors are logged and retried; a store error
        (missing table, access denied) is raised. Pair it with :meth:`heartbeat`.
        """
        _check_request(request)
        wait_period = _as_seconds("wait_period", wait_period)
        if lease_id is not None:
            _check_lease_id(lease_id)
            return await self._wait_for_named(request, lease_id, wait_period, [])
        return await self._wait_for_any(request, wait_period, None)

    async def _wait_for_any(
        self, request: LeaseRequest, wait_period: float, session: Lease | None
    ) -> Lease:
        started = self._keeper.clock.monotonic()
        while True:
            try:
                return await self._obtain_any(request, started, session)
            except LeaseNotObtainedError:
                pass
            except LeaseUnavailableError as exc:
                get_logger().warning("obtaining a lease for %s: %s", request.lessee_id, exc)
            await self._pause(wait_period)

    async def _obtain(
        self,
        request: LeaseRequest,
        lease_id: str | None,
        wait_period: float,
        timeout: float | None,
        *,
        session: Lease | None = None,
    ) -> Lease:
        """Obtain any item, or the named one, waiting up to ``timeout`` (None: forever).

        With ``session`` (a session row's lease), the item is taken under that session.
        """
        refusals: list[LeaseNotObtainedError] = []
        try:
            async with asyncio.timeout(timeout):
                if lease_id is None:
                    return await self._wait_for_any(request, wait_period, session)
                return await self._wait_for_named(request, lease_id, wait_period, refusals, session)
        except TimeoutError:
            what = "an item" if lease_id is None else repr(lease_id)
            # The last refusal says who held the item: the timeout reports it too.
            last = refusals[-1] if refusals else None
            why = f" (the last attempt found: {last})" if last is not None else ""
            raise LeaseNotObtainedError(
                f"{request.lessee_id!r} obtained no lease on {what} within {timeout} s{why}",
                lease_id=lease_id,
                holder=None if last is None else last.holder,
            ) from None

    async def _wait_for_named(
        self,
        request: LeaseRequest,
        lease_id: str,
        wait_period: float,
        refusals: list[LeaseNotObtainedError],
        session: Lease | None = None,
    ) -> Lease:
        """Obtain ``lease_id``, retrying; each refusal is kept (last) in ``refusals``."""
        started = self._keeper.clock.monotonic()
        while True:
            try:
                if session is None:
                    lease = await self._rule.obtain_named(self._store, request, lease_id)
                else:
                    lease = await self._rule.obtain_named(
                        self._store, request, lease_id, session=session
                    )
            except LeaseNotObtainedError as exc:
                if not exc.item_exists:
                    raise  # waiting will not make the row appear
                refusals[:] = [exc]
            except LeaseUnavailableError as exc:
                get_logger().warning("obtaining %r for %s: %s", lease_id, request.lessee_id, exc)
            else:
                self._log_acquired(lease, started)
                return lease
            await self._pause(wait_period)

    async def _pause(self, wait_period: float) -> None:
        # Jitter down, never up: a waiter retries within one wait period, and waiters that
        # started together drift apart. In observe mode, wake when a watched row ripens.
        delay = wait_period * random.uniform(0.5, 1.0)
        ripens_in = self._rule.ripens_in(self._keeper.clock.monotonic())
        if ripens_in is not None:
            delay = min(delay, ripens_in + _RIPE_SLACK)
        await asyncio.sleep(delay)

    # -- keeping alive ------------------------------------------------------------------

    async def heartbeat(self, lease: Lease, period: float | None = None) -> NoReturn:
        """Renew ``lease`` every ``period`` seconds (default: a third of its duration), forever.

        ``period`` is validated like :meth:`lease`'s ``heartbeat_period``: shorter than the
        duration (``ValueError``), a warning above a third of it.

        Raises :class:`LeaseLostError` as soon as the lease is lost: taken over, released by
        someone else, or not renewed before its local deadline. Stops when cancelled, so it
        fits a ``TaskGroup``: ``tg.create_task(locker.heartbeat(lease, 10))``.
        """
        if not isinstance(lease, Lease):
            raise TypeError(f"lease must be a Lease, not {type(lease).__name__}")
        if lease._session is None:
            refuse_session_row(lease.lease_id, "a session keeps itself alive in locker.session()")
        period = self._keeper.check_period(lease.request, period, stacklevel=3)
        await self._keeper.keep_alive(self._keeper.hold(lease), period, None)

    # -- who holds an item ---------------------------------------------------------------

    async def holder(self, lease_id: str) -> Holder | None:
        """Who holds ``lease_id`` now: a :class:`Holder`, or ``None`` if it is free or expired.

        Expired means by the clock rule with this locker's ``max_clock_skew`` (the moment a
        clock-mode locker may take it over; an observe-mode locker waits longer). One
        strongly consistent read; :class:`LeaseNotObtainedError` (``item_exists`` False) if
        there is no such item. For leader election: "who leads?".
        """
        _check_lease_id(lease_id)
        item = await self._store.get_item(lease_id, consistent_read=True)
        if item is None:
            raise LeaseNotObtainedError(
                f"no item {lease_id!r} in table {self._store.table_name!r}; "
                "register it with add_item()",
                lease_id=lease_id,
                item_exists=False,
            )
        if self._store.expired(item, self.max_clock_skew) or item.lessee_id is None:
            return None
        return Holder(item.lease_id, item.lessee_id, item.fencing_token, item)

    async def watch_holder(
        self, lease_id: str, *, poll: float = 1.0
    ) -> AsyncGenerator[Holder | None, None]:
        """Yield the holder of ``lease_id`` (as :meth:`holder`) now and at each change.

        Reads the row every ``poll`` seconds and yields when the holder (lessee and token)
        changes: a renewal is no change, ``None`` means free or expired. A read that fails
        transiently is logged and retried at the next poll. No task runs in the
        background: stop by breaking out of the loop (best inside
        ``contextlib.aclosing()``) or by cancelling the task that iterates.
        """
        _check_lease_id(lease_id)
        poll = _as_seconds("poll", poll)
        last: tuple[str, int] | bool | None = False  # False: nothing yielded yet
        while True:
            try:
                holder = await self.holder(lease_id)
            except LeaseUnavailableError as exc:
                get_logger().warning("reading the holder of %r: %s", lease_id, exc)
            else:
                key = None if holder is None else (holder.lessee_id, holder.fencing_token)
                if key != last:
                    last = key
                    yield holder
            await asyncio.sleep(poll)

    # -- scopes -------------------------------------------------------------------------

    def lease(
        self,
        request: LeaseRequest,
        lease_id: str | None = None,
        *,
        wait_period: float = 1.0,
        timeout: float | None = None,
        heartbeat_period: float | None = None,
    ) -> LeaseScope:
        """Hold a lease for the body of an ``async with``; see :class:`LeaseScope`."""
        return LeaseScope(
            self,
            request,
            lease_id,
            wait_period=wait_period,
            timeout=timeout,
            heartbeat_period=heartbeat_period,
            _stacklevel=4,
        )

    def session(
        self, request: LeaseRequest, *, heartbeat_period: float | None = None
    ) -> LeaseSession:
        """Hold many items under one session for the body of an ``async with``.

        See :class:`LeaseSession`: one heartbeat renews the session, whatever the number of
        items held under it with ``session.lease()`` and ``session.run()``.
        """
        return LeaseSession(self, request, heartbeat_period=heartbeat_period, _stacklevel=4)

    async def run(
        self,
        request: LeaseRequest,
        work: Callable[[Lease], Awaitable[_T]],
        lease_id: str | None = None,
        *,
        wait_period: float = 1.0,
        timeout: float | None = None,
        heartbeat_period: float | None = None,
    ) -> _T:
        """Run ``await work(lease)`` under a lease and return its result.

        If the lease is lost, ``work`` is cancelled and :class:`LeaseLostError` raised; the
        result of a ``work`` that ran past the lease's deadline is never returned.
        """
        if not callable(work):
            raise TypeError(f"work must be a coroutine function, not {type(work).__name__}")
        scope = LeaseScope(
            self,
            request,
            lease_id,
            wait_period=wait_period,
            timeout=timeout,
            heartbeat_period=heartbeat_period,
            _stacklevel=4,
        )
        async with scope as lease:
            return await work(lease)

    def _log_acquired(self, lease: Lease, started: float) -> None:
        get_logger().info(
            "acquired %s until %s",
            describe(lease),
            lease.until.isoformat(),
            extra=lease_fields(lease),
        )
        self._keeper.events.acquired(lease, started)

    # -- events -------------------------------------------------------------------------

    def add_listener(self, callback: Listener) -> Callable[[], None]:
        """Deliver each lifecycle event of this locker's leases to ``callback``.

        Returns a function that removes the listener; no call starts after it returns.
        A plain function is called on the event loop soon after the event (``call_soon``,
        never inside the renewal path) and must be quick: a callback that blocks the loop
        blocks renewals too; do slow work in an async callback or a ``locker.events()``
        consumer. One that takes over 0.1 s is logged once. A coroutine function runs in
        a task the locker owns, one event at a time; events that arrive while it is busy
        wait in a buffer of 1000 that drops the oldest (logged), so it never delays a
        renewal. A listener that raises (anything but ``KeyboardInterrupt`` and
        ``SystemExit``) is logged once and stays registered. Events are
        :class:`LeaseEvent` values (see docs/observability.md).
        """
        return self._keeper.events.add_listener(callback)

    def events(self, *, max_buffer: int = DEFAULT_MAX_BUFFER) -> EventStream:
        """The lifecycle events from now on: ``async with locker.events() as stream:``.

        An async iterator (and an async context manager that unsubscribes on exit; a
        stream nobody references any more unsubscribes too). It keeps at most
        ``max_buffer`` undelivered events: a consumer that falls behind loses the oldest,
        counted in ``stream.dropped`` and logged; it never delays a renewal. One consumer
        at a time: a second task awaiting the next event meanwhile gets ``RuntimeError``.
        """
        return self._keeper.events.stream(max_buffer)
