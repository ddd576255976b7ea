"""LeaseScope: ``async with locker.lease(request) as lease:``, a cancellation scope for a lease.

The same shape as ``asyncio.timeout()``, with "lease lost" in place of "deadline reached":
the loss only records itself and cancels the body; leaving the scope takes back exactly the
cancellations the scope made and raises :class:`LeaseLostError`. Deadlines are loop timers
on the keeper's monotonic clock (event-loop time).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._errors import LeaseLostError
from ._heartbeat import Heartbeats, Hold, HoldSource, Keeper, Kept, describe
from ._log import get_logger, lease_fields
from ._types import Lease, LeaseRequest, _as_seconds

if TYPE_CHECKING:
    from ._locker import Locker

__all__ = ["LeaseScope"]

# A body that caught the loss's cancellation and went on is cancelled again this often:
# min(this, the safety margin), so that it stops by the expiry the margin protects, and not
# more often than _MIN_RECANCEL, so that a margin near zero cannot flood the log.
_MAX_RECANCEL = 1.0
_MIN_RECANCEL = 0.05


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

    Under a session (``session.lease()``) the session's one heartbeat keeps the lease
    instead, and the scope's deadline is the session's.

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
        if lease_id is not None:
            _check_lease_id(lease_id)
        # The scope is the locker's own context manager: it obtains through the locker's
        # takeover rule and holds through its keeper, and touches nothing else of it.
        keeper: Keeper = locker._keeper
        obtain = functools.partial(
            locker._obtain,
            request,
            lease_id,
            _as_seconds("wait_period", wait_period),
            None if timeout is None else _as_seconds("timeout", timeout),
        )
        period = keeper.check_period(request, heartbeat_period, stacklevel=_stacklevel)
        self._setup(keeper, obtain, Heartbeats(keeper, period))

    @classmethod
    def _held_by(
        cls, keeper: Keeper, obtain: Callable[[], Awaitable[Lease]], source: HoldSource
    ) -> LeaseScope:
        """A scope that obtains with ``obtain`` and keeps its hold through ``source``."""
        scope = cls.__new__(cls)
        scope._setup(keeper, obtain, source)
        return scope

    def _setup(
        self, keeper: Keeper, obtain: Callable[[], Awaitable[Lease]], source: HoldSource
    ) -> None:
        self._obtain = obtain
        self._keeper = keeper
        self._source = source
        self._state = _State.CREATED
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0  # the task's cancelling() on entry
        self._cancels = 0  # cancel() requests this scope made, each taken back on exit
        self._hold: Hold | None = None
        self._kept: Kept | None = None
        # The deadline backstop while the lease lives; the repeated cancellation once lost.
        self._timer: asyncio.TimerHandle | None = None
        self._lost: LeaseLostError | None = None
        self._lost_at = 0.0
        self._recancels = 0  # repeated cancellations of a body that went on after the loss

    def __repr__(self) -> str:
        held = f" {describe(self._hold.lease)}" if self._hold else ""
        return f"<LeaseScope {self._state.value}{held}>"

    @property
    def lost(self) -> bool:
        """Whether the lease was lost: while the body ran, at its exit, or before entry."""
        return self._lost is not None

    @property
    def lease(self) -> Lease:
        """The current lease: the one the latest renewal returned (``as lease`` is the first).

        Its ``until`` moves with each renewal; its ``fencing_token`` never changes within the
        scope. ``RuntimeError`` before the scope has obtained a lease.
        """
        if self._hold is None:
            raise RuntimeError("the lease scope has not obtained a lease yet")
        return self._hold.lease

    @property
    def until(self) -> datetime:
        """The stored expiry of the current lease (UTC), as others judge it; see :attr:`lease`.

        For "may I still work?" use :meth:`time_left`, which counts on the local clock and
        ends a safety margin earlier.
        """
        return self.lease.until

    def time_left(self) -> float:
        """Seconds until the body would be cancelled if no renewal succeeds (0 once lost/exited).

        Check it before a step that must finish under the lease (and fence the step's writes
        with the fencing token anyway).
        """
        if self._state is not _State.ENTERED or self._hold is None:
            return 0.0
        return max(0.0, self._hold.deadline - self._keeper.clock.monotonic())

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
            lease = await self._obtain()
        except BaseException:
            self._state = _State.EXITED
            raise
        loop = asyncio.get_running_loop()
        self._hold = self._source.hold(lease)
        late = self._keeper.clock.monotonic() - self._hold.deadline
        if late >= 0:
            # Answered too late (a slow server, a stalled loop): by our own rule the work must
            # already have stopped, so it never starts. Free the row for the next worker.
            self._state = _State.EXITED
            self._lost = self._keeper.lost(
                lease,
                f"the acquisition was answered {late:.2f} s after its local deadline",
                "acquisition answered too late",
            )
            await asyncio.shield(self._keeper.tasks.spawn(self._source.release(lease)))
            raise self._lost
        self._timer = loop.call_at(self._hold.deadline, self._on_deadline)
        self._state = _State.ENTERED
        # Last: a source may report a loss at once (a session lost meanwhile).
        self._kept = self._source.keep(self._hold, self._on_renewed, self._lose)
        return lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if self._state is not _State.ENTERED and self._state is not _State.LOST:
            raise RuntimeError(f"lease scope exited while {self._state.value}")
        assert self._task is not None and self._hold is not None and self._kept is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lost is None:
            self._lost = self._loss_at_exit()
        self._state = _State.EXITED
        # First, so that on 3.13 a cancellation of ours that a TaskGroup in the body re-armed
        # is cleared with the count (uncancel() to zero clears it there).
        outer = self._uncancel()
        finish = self._keeper.tasks.spawn(self._kept.finish())
        released = await self._wait_for(finish)
        if released is False and self._lost is None:
            # Nobody but another holder (or an operator) takes our row while we hold it: the
            # lease was lost while the body ran, even if no heartbeat came to see it.
            self._lost = self._keeper.lost(
                self._hold.lease,
                "it was taken or freed by another before the release",
                "taken or freed by another",
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
        assert self._hold is not None and self._kept is not None
        lost = self._kept.loss()
        if lost is not None:
            return lost
        over = self._keeper.clock.monotonic() - self._hold.deadline
        if over >= 0:
            return self._keeper.lost(
                self._hold.lease,
                f"the body ran {over:.2f} s past the local deadline without awaiting, "
                "so nothing could stop it",
                "overrun",
            )
        return None

    # Callbacks, run by the event loop: they only record the loss and cancel the body.

    def _on_renewed(self, hold: Hold) -> None:
        if self._state is _State.ENTERED:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(hold.deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        # The heartbeat reports a loss before the deadline; this is the backstop for when it
        # did not report in time (a renewal in flight, a slow loop), so that the body never
        # outlives the deadline.
        if self._state is _State.ENTERED and self._hold is not None:
            self._lose(
                self._keeper.lost(
                    self._hold.lease,
                    "its local deadline passed before a renewal succeeded",
                    "local deadline passed",
                )
            )

    def _lose(self, exc: LeaseLostError) -> None:
        if self._state is not _State.ENTERED:
            return
        self._state = _State.LOST
        self._lost = exc
        self._lost_at = self._keeper.clock.monotonic()
        self._cancel_body()

    def _cancel_body(self) -> None:
        assert self._task is not None and self._hold is not None
        if self._timer is not None:
            self._timer.cancel()
        if self._task.cancel(msg="aiolease: lease lost"):
            self._cancels += 1
        margin = self._keeper.margin(self._hold.lease.request.duration)
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
            describe(lease),
            self._keeper.clock.monotonic() - self._lost_at,
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


def _check_lease_id(lease_id: object) -> None:
    if not isinstance(lease_id, str):
        raise TypeError(f"lease_id must be a str or None, not {type(lease_id).__name__}")
