"""Locker: obtaining leases, heartbeating them, and cancelling work that may have lost one.

The locker speaks time and tasks; everything it knows of DynamoDB goes through the
store's public coroutines.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

from ._errors import (
    LeaseError,
    LeaseLostError,
    LeaseNotObtainedError,
    LeaseStoreError,
    LeaseUnavailableError,
)
from ._log import get_logger, lease_fields
from ._observe import Observations, obtain_any, obtain_named
from ._types import Lease, LeaseRequest, _as_seconds, check_clock_skew

if TYPE_CHECKING:
    from ._store import LockStore

__all__ = ["LeaseScope", "Locker"]

_T = TypeVar("_T")

# Renew three times per lease by default: one slow or failed call must not lose the lease.
_RENEWALS_PER_LEASE = 3
# The holder stops this long before its expiry (a tenth of the lease, at most 2 s): room for
# the cancelled work to unwind and for the holder's clock to run a little slow.
_MARGIN_FRACTION = 0.1
_MAX_MARGIN = 2.0
# Backoff between failed renewal attempts, capped by the heartbeat period.
_RETRY_BASE = 0.1
# Obtaining reads at most this many candidates to try (scan pages stop, queries are limited).
_ENOUGH_CANDIDATES = 64
# Releasing on exit never holds the caller up longer than this (the lease expires anyway).
_MAX_RELEASE_TIME = 5.0
# A cancelled heartbeat unwinds in milliseconds; one stuck in a call that ignores
# cancellation must not hold up the release.
_HEARTBEAT_STOP_TIME = 1.0
# aclose() waits this long for background work: longer than one release's own bounds
# (stopping the heartbeat, then the release call), so a release that can finish does.
_CLOSE_TIMEOUT = _HEARTBEAT_STOP_TIME + _MAX_RELEASE_TIME + 1.0
# What is still running then is cancelled and given this long to unwind.
_UNWIND_TIME = 0.5
# A body that caught the loss's cancellation and went on is cancelled again this often:
# min(this, the safety margin), so that it stops by the expiry the margin protects, and not
# more often than _MIN_RECANCEL, so that a margin near zero cannot flood the log.
_MAX_RECANCEL = 1.0
_MIN_RECANCEL = 0.05
# Observe mode wakes this long after a watched row ripens: loop timers may fire a hair early.
_RIPE_SLACK = 0.005


def _describe(lease: Lease) -> str:
    return f"{lease.lease_id!r} (lessee {lease.lessee_id!r}, token {lease.fencing_token})"


class _Hold:
    """One held lease: the latest Lease from the store and its local deadline (loop time)."""

    __slots__ = ("deadline", "lease")

    def __init__(self, lease: Lease, deadline: float) -> None:
        self.lease = lease
        self.deadline = deadline


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
    See docs/takeover-modes.md.
    """

    def __init__(
        self,
        store: LockStore,
        *,
        max_clock_skew: float = 1.0,
        takeover: Literal["clock", "observe"] = "clock",
        safety_margin: float | None = None,
    ) -> None:
        from ._store import LockStore

        if not isinstance(store, LockStore):
            raise TypeError(f"store must be a LockStore, not {type(store).__name__}")
        max_clock_skew = check_clock_skew(max_clock_skew)
        if takeover not in ("clock", "observe"):
            raise ValueError(f"takeover must be 'clock' or 'observe', not {takeover!r}")
        if safety_margin is not None:
            safety_margin = _as_seconds("safety_margin", safety_margin)
        self.store = store
        self.max_clock_skew = float(max_clock_skew)
        self.takeover = takeover
        self.safety_margin = safety_margin
        # What observe mode has seen of rows held by others, kept across calls.
        self._observations = Observations() if takeover == "observe" else None
        # Work that outlived its call (a release detached by a cancellation, a heartbeat that
        # would not stop): owned here and by the store, awaited by aclose().
        self._background: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return (
            f"Locker({self.store!r}, max_clock_skew={self.max_clock_skew}, "
            f"takeover={self.takeover!r})"
        )

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
        pending = set(self._background)
        if not pending:
            return
        _, pending = await asyncio.wait(pending, timeout=_CLOSE_TIMEOUT)
        if pending:
            get_logger().warning(
                "%d background release(s) or heartbeat(s) still running after %.1f s; "
                "cancelling them (their leases expire by themselves)",
                len(pending),
                _CLOSE_TIMEOUT,
            )
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=_UNWIND_TIME)

    # -- obtaining ----------------------------------------------------------------------

    async def obtain_lease(self, request: LeaseRequest) -> Lease:
        """Lease any available (free or expired) item; :class:`LeaseNotObtainedError` if none.

        Candidates come from the store (a filtered scan, or the indexed layout's query) and
        are tried in random order, so workers starting together spread over the pool
        instead of colliding on the first rows.
        """
        _check_request(request)
        if self._observations is not None:
            lease = await obtain_any(self.store, self._observations, request, self.max_clock_skew)
            self._log_acquired(lease)
            return lease
        available = await self.store.find_available(
            max_clock_skew=self.max_clock_skew, limit=_ENOUGH_CANDIDATES
        )
        candidates = list(available)
        random.shuffle(candidates)
        for item in candidates:
            try:
                # expect=item pins the state read (token too): a late duplicate of a
                # timed-out attempt can never re-take the row after someone else wrote it.
                lease = await self.store.acquire(
                    item.lease_id, request, max_clock_skew=self.max_clock_skew, expect=item
                )
            except LeaseNotObtainedError:
                continue  # taken since the scan: try the next one
            self._log_acquired(lease)
            return lease
        raise LeaseNotObtainedError(
            f"no free item for {request.lessee_id!r} in table {self.store.table_name!r} "
            f"({len(candidates)} candidate(s) tried)"
        )

    async def wait_until_lease_obtained(self, request: LeaseRequest, wait_period: float) -> Lease:
        """Retry :meth:`obtain_lease` every ``wait_period`` seconds until it succeeds.

        Transient DynamoDB errors are logged and retried; a store error (missing table,
        access denied) is raised.
        """
        _check_request(request)
        wait_period = _as_seconds("wait_period", wait_period)
        while True:
            try:
                return await self.obtain_lease(request)
            except LeaseNotObtainedError:
                pass
            except LeaseUnavailableError as exc:
                get_logger().warning("obtaining a lease for %s: %s", request.lessee_id, exc)
            await _pause(wait_period, self._ripens_in())

    async def _obtain(
        self,
        request: LeaseRequest,
        lease_id: str | None,
        wait_period: float,
        timeout: float | None,
    ) -> Lease:
        """Obtain any item, or the named one, waiting up to ``timeout`` (None: forever)."""
        try:
            async with asyncio.timeout(timeout):
                if lease_id is None:
                    return await self.wait_until_lease_obtained(request, wait_period)
                return await self._wait_for_named(request, lease_id, wait_period)
        except TimeoutError:
            what = "an item" if lease_id is None else repr(lease_id)
            raise LeaseNotObtainedError(
                f"{request.lessee_id!r} obtained no lease on {what} within {timeout} s",
                lease_id=lease_id,
            ) from None

    async def _wait_for_named(
        self, request: LeaseRequest, lease_id: str, wait_period: float
    ) -> Lease:
        while True:
            try:
                if self._observations is not None:
                    lease = await obtain_named(
                        self.store, self._observations, request, lease_id, self.max_clock_skew
                    )
                else:
                    lease = await self.store.acquire(
                        lease_id, request, max_clock_skew=self.max_clock_skew
                    )
            except LeaseNotObtainedError as exc:
                if not exc.item_exists:
                    raise  # waiting will not make the row appear
            except LeaseUnavailableError as exc:
                get_logger().warning("obtaining %r for %s: %s", lease_id, request.lessee_id, exc)
            else:
                self._log_acquired(lease)
                return lease
            await _pause(wait_period, self._ripens_in())

    # -- keeping alive ------------------------------------------------------------------

    async def heartbeat(self, lease: Lease, period: float) -> NoReturn:
        """Renew ``lease`` every ``period`` seconds, forever.

        Raises :class:`LeaseLostError` as soon as the lease is lost: taken over, released by
        someone else, or not renewed before its local deadline. Stops when cancelled, so it
        fits a ``TaskGroup``: ``tg.create_task(locker.heartbeat(lease, 10))``.
        """
        if not isinstance(lease, Lease):
            raise TypeError(f"lease must be a Lease, not {type(lease).__name__}")
        period = self._check_period(lease.request, period, stacklevel=3)
        await self._keep_alive(_Hold(lease, self._deadline(lease)), period, None)

    async def _keep_alive(
        self, hold: _Hold, period: float, on_renewed: Callable[[_Hold], None] | None
    ) -> NoReturn:
        loop = asyncio.get_running_loop()
        while True:
            # Jittered down, never up: heartbeats of leases taken in one burst drift apart
            # instead of renewing in lockstep, and no lease gets fewer renewals than asked.
            delay = hold.lease.sent_at + period * random.uniform(0.8, 1.0) - loop.time()
            if delay > 0:
                await asyncio.sleep(min(delay, hold.deadline - loop.time()))
            await self._renew(hold)
            if on_renewed is not None:
                on_renewed(hold)

    async def _renew(self, hold: _Hold) -> None:
        """Renew once, retrying transient failures until the local deadline."""
        loop = asyncio.get_running_loop()
        lease = hold.lease
        backoff = _RETRY_BASE
        attempt = 0
        while True:
            if loop.time() >= hold.deadline:
                raise self._lost(lease, "its local deadline passed before a renewal succeeded")
            attempt += 1
            try:
                async with asyncio.timeout_at(hold.deadline):
                    renewed = await self.store.renew(lease)
            except TimeoutError:
                raise self._lost(
                    lease, "a renewal was still unanswered at the local deadline"
                ) from None
            except LeaseLostError as exc:
                raise self._lost(lease, f"the item is {exc.reason}") from exc
            except LeaseStoreError as exc:
                raise self._lost(lease, f"the table cannot be written: {exc}") from exc
            except LeaseUnavailableError as exc:
                left = hold.deadline - loop.time()
                get_logger().warning(
                    "renewal attempt %d of %s failed (%s); retrying, %.2f s left",
                    attempt,
                    _describe(lease),
                    exc,
                    left,
                    extra=lease_fields(lease),
                )
                await asyncio.sleep(max(0.0, min(random.uniform(backoff / 2, backoff), left)))
                backoff = min(backoff * 2, lease.request.duration / _RENEWALS_PER_LEASE)
                continue
            if loop.time() >= hold.deadline:
                # The loop stalled, or the answer came too late: the work may already have
                # overrun, so a renewal after the deadline does not revive the lease.
                raise self._lost(lease, "the renewal was answered after the local deadline")
            hold.lease = renewed
            hold.deadline = self._deadline(renewed)
            get_logger().debug("renewed %s", _describe(renewed), extra=lease_fields(renewed))
            return

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

    async def _finish(self, hold: _Hold, heartbeat: asyncio.Task[None]) -> bool | None:
        """Stop the heartbeat (bounded), then release; see :meth:`_release`."""
        heartbeat.cancel()
        done, _ = await asyncio.wait([heartbeat], timeout=_HEARTBEAT_STOP_TIME)
        if not done:
            get_logger().warning(
                "the heartbeat of %s did not stop within %.1f s; releasing anyway",
                _describe(hold.lease),
                _HEARTBEAT_STOP_TIME,
                extra=lease_fields(hold.lease),
            )
            self._own(heartbeat)
        return await self._release(hold.lease)

    async def _release(self, lease: Lease) -> bool | None:
        """Release, bounded: True if freed, False if no longer ours, None if unknown.

        Never raises (but for its own cancellation): a failed release only leaves the row
        held until it expires.
        """
        limit = min(_MAX_RELEASE_TIME, lease.request.duration)
        try:
            async with asyncio.timeout(limit):
                released = await self.store.release(lease)
        except TimeoutError:
            why = f"timed out after {limit:g} s"
        except LeaseError as exc:
            why = str(exc)
        else:
            if released:
                get_logger().info("released %s", _describe(lease), extra=lease_fields(lease))
            else:
                get_logger().info(
                    "%s was no longer held at release", _describe(lease), extra=lease_fields(lease)
                )
            return released
        get_logger().warning(
            "could not release %s (%s); it expires at %s",
            _describe(lease),
            why,
            lease.until.isoformat(),
            extra=lease_fields(lease),
        )
        return None

    def _spawn(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        """Run ``coro`` in a task owned by this locker (and its store), for shielded cleanup."""
        task = asyncio.get_running_loop().create_task(coro)
        self._own(task)
        return task

    def _own(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        self.store._adopt(task)

    # -- helpers ------------------------------------------------------------------------

    def _margin(self, duration: float) -> float:
        if self.safety_margin is not None:
            return min(self.safety_margin, duration / 2)
        return min(duration * _MARGIN_FRACTION, _MAX_MARGIN)

    def _deadline(self, lease: Lease) -> float:
        """The loop time by which the holder must have stopped: sent + duration - margin."""
        duration = lease.request.duration
        if lease.sent_at > 0:
            return lease.sent_at + duration - self._margin(duration)
        # A Lease built by hand: trust the stored expiry, read on the store's (injectable)
        # wall clock, the one its expiries are written and judged by.
        left = (lease.until_ns - self.store._clock()) / 1e9
        return asyncio.get_running_loop().time() + left - self._margin(duration)

    @staticmethod
    def _check_period(request: LeaseRequest, period: float | None, *, stacklevel: int) -> float:
        """Validate a heartbeat period; ``stacklevel`` makes the warning name the user's call."""
        duration = request.duration
        if period is None:
            return duration / _RENEWALS_PER_LEASE
        period = _as_seconds("heartbeat_period", period)
        if period >= duration:
            raise ValueError(
                f"heartbeat_period ({period} s) must be shorter than the lease duration "
                f"({duration} s)"
            )
        if period > duration / _RENEWALS_PER_LEASE:
            warnings.warn(
                f"heartbeat_period {period} s leaves fewer than {_RENEWALS_PER_LEASE} renewal "
                f"attempts per {duration} s lease: one slow call may lose it",
                RuntimeWarning,
                stacklevel=stacklevel,
            )
        return period

    def _lost(self, lease: Lease, why: str) -> LeaseLostError:
        get_logger().info("lost %s: %s", _describe(lease), why, extra=lease_fields(lease))
        return LeaseLostError(
            f"lease on {_describe(lease)} lost: {why}", lease_id=lease.lease_id, reason=why
        )

    def _ripens_in(self) -> float | None:
        """Observe mode: seconds until a watched row may be taken (None: nothing pending)."""
        if self._observations is None:
            return None
        return self._observations.ripens_in(asyncio.get_running_loop().time())

    def _log_acquired(self, lease: Lease) -> None:
        get_logger().info(
            "acquired %s until %s",
            _describe(lease),
            lease.until.isoformat(),
            extra=lease_fields(lease),
        )


class _State(enum.Enum):
    CREATED = "created"
    ENTERING = "entering"  # obtaining the lease
    ENTERED = "entered"  # the body runs under a live lease
    LOST = "lost"  # the body was cancelled (and is cancelled again while it goes on)
    EXITED = "exited"


class LeaseScope:
    """``async with locker.lease(request) as lease:`` — hold a lease for the body's duration.

    On entry, obtains the lease (any item, or ``lease_id``), waiting up to ``timeout``
    seconds (then :class:`LeaseNotObtainedError`), and starts a heartbeat task. A lease whose
    acquisition was answered only after its local deadline is released at once and
    :class:`LeaseLostError` raised from the entry: the body is not entered.

    If the lease is lost (taken over, or not renewed before its local deadline) the body is
    cancelled, and cancelled again every second or so (at most the safety margin) for as long
    as it catches the cancellation and goes on. Leaving the scope after a loss raises
    :class:`LeaseLostError`, whatever the body raised (its own cancellation, another
    exception, a TaskGroup's ``ExceptionGroup``; chained as the cause), as
    ``asyncio.timeout()`` raises ``TimeoutError``. A body that blocked past the deadline
    without awaiting, and a release on exit that finds the item no longer ours, are losses
    too. A cancellation from outside, ``KeyboardInterrupt`` and ``SystemExit`` propagate
    unchanged; the task's ``cancelling()`` count after the scope is what it was on entry,
    plus any cancellation from outside.

    On exit the heartbeat stops and the lease is released, shielded: an outer cancellation
    propagates at once while the release goes on in a task that the locker owns
    (:meth:`Locker.aclose` waits for it).
    """

    def __init__(
        self,
        locker: Locker,
        request: LeaseRequest,
        lease_id: str | None,
        *,
        wait_period: float,
        timeout: float | None,
        heartbeat_period: float | None,
        _stacklevel: int = 3,
    ) -> None:
        _check_request(request)
        if lease_id is not None and not isinstance(lease_id, str):
            raise TypeError(f"lease_id must be a str or None, not {type(lease_id).__name__}")
        self._locker = locker
        self._request = request
        self._lease_id = lease_id
        self._wait_period = _as_seconds("wait_period", wait_period)
        self._timeout = None if timeout is None else _as_seconds("timeout", timeout)
        self._period = locker._check_period(request, heartbeat_period, stacklevel=_stacklevel)
        self._state = _State.CREATED
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0  # the task's cancelling() on entry
        self._cancels = 0  # cancel() requests this scope made, each taken back on exit
        self._hold: _Hold | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        # The deadline backstop while the lease lives; the repeated cancellation once lost.
        self._timer: asyncio.TimerHandle | None = None
        self._lost: LeaseLostError | None = None
        self._lost_at = 0.0
        self._recancels = 0  # repeated cancellations of a body that went on after the loss

    def __repr__(self) -> str:
        held = f" {_describe(self._hold.lease)}" if self._hold else ""
        return f"<LeaseScope {self._state.value}{held}>"

    @property
    def lost(self) -> bool:
        """Whether the lease was lost: while the body ran, at its exit, or before entry."""
        return self._lost is not None

    def time_left(self) -> float:
        """Seconds until the body would be cancelled if no renewal succeeds (0 once lost/exited).

        Check it before a step that must finish under the lease (and fence the step's writes
        with the fencing token anyway).
        """
        if self._state is not _State.ENTERED or self._hold is None:
            return 0.0
        return max(0.0, self._hold.deadline - asyncio.get_running_loop().time())

    async def __aenter__(self) -> Lease:
        if self._state is not _State.CREATED:
            raise RuntimeError("a lease scope can only be entered once")
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("locker.lease() must be used inside a task")
        self._state = _State.ENTERING
        self._task = task
        self._cancelling = task.cancelling()
        try:
            lease = await self._locker._obtain(
                self._request, self._lease_id, self._wait_period, self._timeout
            )
        except BaseException:
            self._state = _State.EXITED
            raise
        loop = asyncio.get_running_loop()
        self._hold = _Hold(lease, self._locker._deadline(lease))
        late = loop.time() - self._hold.deadline
        if late >= 0:
            # Answered too late (a slow server, a stalled loop): by our own rule the work must
            # already have stopped, so it never starts. Free the row for the next worker.
            self._state = _State.EXITED
            self._lost = self._locker._lost(
                lease, f"the acquisition was answered {late:.2f} s after its local deadline"
            )
            await asyncio.shield(self._locker._spawn(self._locker._release(lease)))
            raise self._lost
        self._timer = loop.call_at(self._hold.deadline, self._on_deadline)
        self._heartbeat = loop.create_task(
            self._locker._keep_alive(self._hold, self._period, self._on_renewed),
            name=f"aiolease heartbeat {lease.lease_id}",
        )
        self._heartbeat.add_done_callback(self._on_heartbeat_done)
        self._state = _State.ENTERED
        return lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if self._state is not _State.ENTERED and self._state is not _State.LOST:
            raise RuntimeError(f"lease scope exited while {self._state.value}")
        assert self._task is not None and self._hold is not None and self._heartbeat is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lost is None:
            self._lost = self._loss_at_exit()
        self._state = _State.EXITED
        # First, so that on 3.13 a cancellation of ours that a TaskGroup in the body re-armed
        # is cleared with the count (uncancel() to zero clears it there).
        outer = self._uncancel()
        finish = self._locker._spawn(self._locker._finish(self._hold, self._heartbeat))
        released = await self._wait_for(finish)
        if released is False and self._lost is None:
            # Nobody but another holder (or an operator) takes our row while we hold it: the
            # lease was lost while the body ran, even if no heartbeat came to see it.
            self._lost = self._locker._lost(
                self._hold.lease, "it was taken or freed by another before the release"
            )
        lost = self._lost
        if lost is None or isinstance(exc_val, _PROPAGATE) or _contains(exc_val, _PROPAGATE):
            return
        if outer:
            if exc_val is None:
                # The body swallowed a cancellation from outside as well as ours: it may not
                # report success, and the outer request still stands.
                raise asyncio.CancelledError
            return
        error = LeaseLostError(str(lost), lease_id=self._hold.lease.lease_id, reason=lost.reason)
        if exc_val is None or isinstance(exc_val, asyncio.CancelledError):
            raise error from lost
        raise error from exc_val

    def _uncancel(self) -> bool:
        """Take back every cancellation this scope requested; True if one from outside stays."""
        assert self._task is not None
        for _ in range(self._cancels):
            if self._task.cancelling() <= self._cancelling:
                break  # the body took ours back itself: never take back someone else's
            self._task.uncancel()
        self._cancels = 0
        # A body that settled a request pending on entry (uncancel()) lowers the count: from
        # here on, anything above what is left is a new cancellation from outside.
        self._cancelling = min(self._cancelling, self._task.cancelling())
        return self._task.cancelling() > self._cancelling

    async def _wait_for(self, finish: asyncio.Task[bool | None]) -> bool | None:
        """Wait for the release, shielded; a cancellation from outside propagates at once."""
        assert self._task is not None
        while True:
            try:
                return await asyncio.shield(finish)
            except asyncio.CancelledError:
                if self._task.cancelling() > self._cancelling:
                    raise  # from outside: the release goes on, owned by the locker
                # Requested by nobody outside: the remains of our own cancellation, which a
                # TaskGroup in the body re-armed (3.13) and uncancel() could not clear because
                # the task was already being cancelled on entry. Keep waiting.

    def _loss_at_exit(self) -> LeaseLostError | None:
        """A loss the callbacks had no chance to report: the heartbeat has just ended, or the
        body blocked past the deadline (then no callback could run before it returned)."""
        assert self._hold is not None and self._heartbeat is not None
        heartbeat = self._heartbeat
        if heartbeat.done() and not heartbeat.cancelled():
            return self._heartbeat_loss(heartbeat.exception())
        over = asyncio.get_running_loop().time() - self._hold.deadline
        if over >= 0:
            return self._locker._lost(
                self._hold.lease,
                f"the body ran {over:.2f} s past the local deadline without awaiting, "
                "so nothing could stop it",
            )
        return None

    # Callbacks, run by the event loop: they only record the loss and cancel the body.

    def _on_renewed(self, hold: _Hold) -> None:
        if self._state is _State.ENTERED:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(hold.deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        # The heartbeat should have reported the loss by now; this is the backstop for a
        # heartbeat that is stuck, so the body never outlives the deadline.
        if self._state is _State.ENTERED and self._hold is not None:
            self._lose(
                self._locker._lost(self._hold.lease, "its local deadline passed (heartbeat stuck)")
            )

    def _on_heartbeat_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()  # retrieved whatever the state: never "never retrieved"
        if self._state is _State.ENTERED:
            self._lose(self._heartbeat_loss(exc))

    def _heartbeat_loss(self, exc: BaseException | None) -> LeaseLostError:
        assert self._hold is not None
        if isinstance(exc, LeaseLostError):
            return exc
        # Never a silent death: an unexpected heartbeat failure ends the work too.
        get_logger().error(
            "heartbeat of %s failed: %r",
            _describe(self._hold.lease),
            exc,
            exc_info=exc,
            extra=lease_fields(self._hold.lease),
        )
        lost = LeaseLostError(
            f"lease on {_describe(self._hold.lease)} lost: its heartbeat failed ({exc!r})",
            lease_id=self._hold.lease.lease_id,
        )
        lost.__cause__ = exc
        return lost

    def _lose(self, exc: LeaseLostError) -> None:
        if self._state is not _State.ENTERED:
            return
        self._state = _State.LOST
        self._lost = exc
        self._lost_at = asyncio.get_running_loop().time()
        self._cancel_body()

    def _cancel_body(self) -> None:
        assert self._task is not None and self._hold is not None
        if self._timer is not None:
            self._timer.cancel()
        if self._task.cancel(msg="aiolease: lease lost"):
            self._cancels += 1
        margin = self._locker._margin(self._hold.lease.request.duration)
        self._timer = asyncio.get_running_loop().call_later(
            max(_MIN_RECANCEL, min(_MAX_RECANCEL, margin)), self._on_still_running
        )

    def _on_still_running(self) -> None:
        if self._state is not _State.LOST or self._hold is None:
            return
        lease = self._hold.lease
        self._recancels += 1
        # Once at ERROR: a body that is only slow to unwind (a TaskGroup waiting for its
        # children's cleanup) would otherwise flood the log at short leases.
        get_logger().log(
            logging.ERROR if self._recancels == 1 else logging.DEBUG,
            "the body under %s still runs %.1f s after the lease was lost; cancelling it "
            "again (%d time(s) so far)",
            _describe(lease),
            asyncio.get_running_loop().time() - self._lost_at,
            self._recancels,
            extra=lease_fields(lease),
        )
        self._cancel_body()


# Exceptions that leave a scope unchanged even after a loss: the process is stopping.
_PROPAGATE = (KeyboardInterrupt, SystemExit)


def _contains(exc: BaseException | None, types: tuple[type[BaseException], ...]) -> bool:
    return isinstance(exc, BaseExceptionGroup) and exc.subgroup(types) is not None


def _check_request(request: object) -> None:
    if not isinstance(request, LeaseRequest):
        raise TypeError(f"request must be a LeaseRequest, not {type(request).__name__}")


async def _pause(wait_period: float, ripens_in: float | None = None) -> None:
    # Jitter down, never up: a waiter retries within one wait period, and waiters that
    # started together drift apart. In observe mode, wake when a watched row ripens.
    delay = wait_period * random.uniform(0.5, 1.0)
    if ripens_in is not None:
        delay = min(delay, ripens_in + _RIPE_SLACK)
    await asyncio.sleep(delay)
