"""The holder's side of a lease: its local deadline, renewals until then, and its release.

Times are the clock's monotonic seconds (event-loop time). A holder's deadline counts from
the moment its last successful write was *sent*: ``sent + duration - margin``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import warnings
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NoReturn, Protocol

from ._errors import LeaseError, LeaseLostError, LeaseStoreError, LeaseUnavailableError
from ._events import Events
from ._log import get_logger, lease_fields
from ._tasks import TaskOwner
from ._types import Lease, LeaseRequest, _as_seconds
from ._wire.calls import deadline_first

if TYPE_CHECKING:
    from ._clock import Clock
    from ._store import LockStore

__all__ = ["Heartbeat", "Heartbeats", "Hold", "HoldSource", "Keeper", "Kept", "describe"]

# Renew three times per lease by default: one slow or failed call must not lose the lease.
RENEWALS_PER_LEASE = 3
# The holder stops this long before its expiry (a tenth of the lease, at most 2 s): room for
# the cancelled work to unwind and for the holder's clock to run a little slow.
MARGIN_FRACTION = 0.1
MAX_MARGIN = 2.0
# Backoff between failed renewal attempts, capped by the heartbeat period.
RETRY_BASE = 0.1
# Releasing on exit never holds the caller up longer than this (the lease expires anyway).
MAX_RELEASE_TIME = 5.0
# A cancelled heartbeat unwinds in milliseconds; one stuck in a call that ignores
# cancellation must not hold up the release.
HEARTBEAT_STOP_TIME = 1.0


Renew = Callable[[Lease], Awaitable[Lease]]
Release = Callable[[Lease], Awaitable["bool | None"]]


def describe(lease: Lease) -> str:
    return f"{lease.lease_id!r} (lessee {lease.lessee_id!r}, token {lease.fencing_token})"


class Hold:
    """One held lease: the latest Lease from the store and its local deadline (monotonic)."""

    __slots__ = ("deadline", "lease")

    def __init__(self, lease: Lease, deadline: float) -> None:
        self.lease = lease
        self.deadline = deadline


class Keeper:
    """Keeps leases of one store alive: deadlines, renewals, release; work owned by ``tasks``.

    Renewals and releases go through the store's public ``renew`` and ``release_outcome``
    (the form of ``release`` that tells an undecidable outcome apart), so a store subclass
    that overrides them is honoured.
    """

    def __init__(
        self, store: LockStore, clock: Clock, safety_margin: float | None, tasks: TaskOwner
    ) -> None:
        self.store = store
        self.clock = clock
        self.safety_margin = safety_margin
        self.tasks = tasks
        self.events = Events(store.table_name, clock, tasks.spawn)

    def margin(self, duration: float) -> float:
        """How long before its expiry a holder of a ``duration`` lease stops its work."""
        if self.safety_margin is not None:
            return min(self.safety_margin, duration / 2)
        return min(duration * MARGIN_FRACTION, MAX_MARGIN)

    def deadline(self, lease: Lease) -> float:
        """The monotonic time by which the holder must have stopped: sent + duration - margin."""
        duration = lease.request.duration
        if lease._sent_at > 0:
            return lease._sent_at + duration - self.margin(duration)
        # A Lease built by hand: trust the stored expiry, read on the store's (injectable)
        # wall clock, the one its expiries are written and judged by.
        left = (lease.until_ns - self.clock.wall_ns()) / 1e9
        return self.clock.monotonic() + left - self.margin(duration)

    def hold(self, lease: Lease) -> Hold:
        """A fresh hold of ``lease``, with its local deadline."""
        return Hold(lease, self.deadline(lease))

    @staticmethod
    def check_period(request: LeaseRequest, period: float | None, *, stacklevel: int) -> float:
        """Validate a heartbeat period; ``stacklevel`` makes the warning name the user's call."""
        duration = request.duration
        if period is None:
            return duration / RENEWALS_PER_LEASE
        period = _as_seconds("heartbeat_period", period)
        if period >= duration:
            raise ValueError(
                f"heartbeat_period ({period} s) must be shorter than the lease duration "
                f"({duration} s)"
            )
        if period > duration / RENEWALS_PER_LEASE:
            warnings.warn(
                f"heartbeat_period {period} s leaves fewer than {RENEWALS_PER_LEASE} renewal "
                f"attempts per {duration} s lease: one slow call may lose it",
                RuntimeWarning,
                stacklevel=stacklevel,
            )
        return period

    def lost(
        self, lease: Lease, why: str, reason: str, holder: str | None = None
    ) -> LeaseLostError:
        """Log the loss of ``lease`` and return the error that reports it.

        ``why`` is the whole story (the message), ``reason`` a few words of it, ``holder``
        the new holder when known.
        """
        get_logger().info("lost %s: %s", describe(lease), why, extra=lease_fields(lease))
        self.events.lost(lease, reason, holder)
        return LeaseLostError(
            f"lease on {describe(lease)} lost: {why}", lease_id=lease.lease_id, reason=reason
        )

    # -- renewing -----------------------------------------------------------------------

    async def keep_alive(
        self,
        hold: Hold,
        period: float,
        on_renewed: Callable[[Hold], None] | None,
        renew: Renew | None = None,
    ) -> NoReturn:
        """Renew every ``period`` (jittered down) until a renewal fails: LeaseLostError.

        ``renew`` is the renewing write (default: the store's ``renew``; a session's own).
        """
        self.events.holding(hold.lease, +1)
        try:
            await self._renew_every(hold, period, on_renewed, renew)
        finally:
            self.events.holding(hold.lease, -1)

    async def _renew_every(
        self,
        hold: Hold,
        period: float,
        on_renewed: Callable[[Hold], None] | None,
        renew: Renew | None,
    ) -> NoReturn:
        while True:
            # Jittered down, never up: heartbeats of leases taken in one burst drift apart
            # instead of renewing in lockstep, and no lease gets fewer renewals than asked.
            due = hold.lease._sent_at + period * random.uniform(0.8, 1.0)
            if due > self.clock.monotonic():
                wake = min(due, hold.deadline)
                await asyncio.sleep(wake - self.clock.monotonic())
                self.events.woke(hold.lease, self.clock.monotonic() - wake)
            await self.renew(hold, period, renew)
            if on_renewed is not None:
                on_renewed(hold)

    async def renew(
        self, hold: Hold, period: float | None = None, renew: Renew | None = None
    ) -> None:
        """Renew once, retrying transient failures until the local deadline.

        ``period`` (default: a third of the lease) is the heartbeat's: when a failed attempt
        may leave less than that to go once the wait for the next attempt is over (at its
        longest), the lease is reported at risk. ``renew`` is the renewing write (default:
        the store's).
        """
        lease = hold.lease
        renew = self.store.renew if renew is None else renew
        backoff = RETRY_BASE
        attempt = 0
        at_risk = False
        while True:
            if self.clock.monotonic() >= hold.deadline:
                raise self.lost(
                    lease,
                    "its local deadline passed before a renewal succeeded",
                    "local deadline passed",
                )
            attempt += 1
            started = self.clock.monotonic()
            try:
                # Past capacity, the store's request slots go to the earliest deadline.
                with deadline_first(hold.deadline):
                    async with asyncio.timeout_at(hold.deadline):
                        renewed = await renew(lease)
            except TimeoutError:
                self.events.renewal_refused(lease, self.clock.monotonic() - started)
                raise self.lost(
                    lease,
                    "a renewal was still unanswered at the local deadline",
                    "local deadline passed",
                ) from None
            except LeaseLostError as exc:
                self.events.renewal_refused(lease, self.clock.monotonic() - started)
                raise self.lost(lease, f"the item is {exc.detail}", exc.reason, exc.holder) from exc
            except LeaseStoreError as exc:
                self.events.renewal_refused(lease, self.clock.monotonic() - started)
                raise self.lost(
                    lease, f"the table cannot be written: {exc}", "table error"
                ) from exc
            except LeaseUnavailableError as exc:
                left = hold.deadline - self.clock.monotonic()
                self.events.renewal_failed(
                    lease, attempt, hold.deadline - left - started, left, exc
                )
                # At risk: after the longest wait (the sleep below is jittered, from half of
                # it), the next attempt would be sent with less than one heartbeat period to
                # go. (Less than the wait alone is too late: a slow next attempt, a store
                # retrying inside it, or a late wakeup can then run into the deadline, and
                # the lease is lost without ever having been reported at risk.)
                every = period or lease.request.duration / RENEWALS_PER_LEASE
                at_risk = at_risk or self.events.at_risk(lease, left, every + backoff)
                get_logger().warning(
                    "renewal attempt %d of %s failed (%s); retrying, %.2f s left",
                    attempt,
                    describe(lease),
                    exc,
                    left,
                    extra=lease_fields(lease),
                )
                await asyncio.sleep(max(0.0, min(random.uniform(backoff / 2, backoff), left)))
                backoff = min(backoff * 2, lease.request.duration / RENEWALS_PER_LEASE)
                continue
            if self.clock.monotonic() >= hold.deadline:
                # The loop stalled, or the answer came too late: the work may already have
                # overrun, so a renewal after the deadline does not revive the lease.
                self.events.renewal_refused(lease, self.clock.monotonic() - started)
                raise self.lost(
                    lease,
                    "the renewal was answered after the local deadline",
                    "local deadline passed",
                )
            hold.lease = renewed
            hold.deadline = self.deadline(renewed)
            self.events.renewed(renewed, self.clock.monotonic() - started)
            logger = get_logger()
            if logger.isEnabledFor(logging.DEBUG):  # every renewal passes here: build nothing
                logger.debug("renewed %s", describe(renewed), extra=lease_fields(renewed))
            return

    # -- releasing ----------------------------------------------------------------------

    async def finish(
        self, hold: Hold, heartbeat: asyncio.Task[None], release: Release | None = None
    ) -> bool | None:
        """Stop the heartbeat (bounded), then release (default :meth:`release`)."""
        heartbeat.cancel()
        done, _ = await asyncio.wait([heartbeat], timeout=HEARTBEAT_STOP_TIME)
        if not done:
            get_logger().warning(
                "the heartbeat of %s did not stop within %.1f s; releasing anyway",
                describe(hold.lease),
                HEARTBEAT_STOP_TIME,
                extra=lease_fields(hold.lease),
            )
            self.tasks.own(heartbeat)
        return await (self.release if release is None else release)(hold.lease)

    async def release(self, lease: Lease) -> bool | None:
        """Release, bounded: True if freed, False if no longer ours, None if unknown.

        Never raises (but for its own cancellation): a failed release only leaves the row
        held until it expires.
        """
        limit = min(MAX_RELEASE_TIME, lease.request.duration)
        try:
            async with asyncio.timeout(limit):
                released = await self.store.release_outcome(lease)
        except TimeoutError:
            why = f"timed out after {limit:g} s"
        except LeaseError as exc:
            why = str(exc)
        else:
            if released is None:
                get_logger().warning(
                    "releasing %s: an answer was lost and the item has a newer holder since; "
                    "whether it took the item after this release or before cannot be known",
                    describe(lease),
                    extra=lease_fields(lease),
                )
                return None
            if released:
                get_logger().info("released %s", describe(lease), extra=lease_fields(lease))
                self.events.released(lease)
            else:
                get_logger().info(
                    "%s was no longer held at release", describe(lease), extra=lease_fields(lease)
                )
            return released
        get_logger().warning(
            "could not release %s (%s); it expires at %s",
            describe(lease),
            why,
            lease.until.isoformat(),
            extra=lease_fields(lease),
        )
        return None


# -- how a scope's hold is kept ---------------------------------------------------------


class Kept(Protocol):
    """A hold being kept alive for a scope, by its own heartbeat or by a session's."""

    def loss(self) -> LeaseLostError | None:
        """The loss that ended the keeping, if any (even if its callback has not run yet)."""
        ...

    async def finish(self) -> bool | None:
        """Stop keeping and release: True if freed, False if no longer ours, None if unknown."""
        ...


class HoldSource(Protocol):
    """What a scope holds its lease through: deadlines, keeping alive, releasing.

    A single lease is kept by its own heartbeat (:class:`Heartbeats`); an item under a
    session by the session's one heartbeat. The scope's state machine does not know which.
    """

    def hold(self, lease: Lease) -> Hold:
        """A fresh hold of ``lease`` just obtained, with its local deadline."""
        ...

    def keep(
        self,
        hold: Hold,
        on_renewed: Callable[[Hold], None],
        on_lost: Callable[[LeaseLostError], None],
    ) -> Kept:
        """Keep ``hold`` alive; ``on_renewed`` after each renewal, ``on_lost`` once on a loss.

        Both callbacks run on the event loop and must only record and cancel.
        """
        ...

    async def release(self, lease: Lease) -> bool | None:
        """Release a lease that is not kept (its acquisition was answered too late)."""
        ...


class Heartbeat:
    """One lease kept by its own heartbeat task."""

    def __init__(
        self,
        keeper: Keeper,
        hold: Hold,
        period: float,
        on_renewed: Callable[[Hold], None],
        on_lost: Callable[[LeaseLostError], None],
        renew: Renew | None = None,
        release: Release | None = None,
    ) -> None:
        self._keeper = keeper
        self._hold = hold
        self._on_lost = on_lost
        self._release = release
        self._loss: LeaseLostError | None = None
        self.task = asyncio.get_running_loop().create_task(
            keeper.keep_alive(hold, period, on_renewed, renew),
            name=f"aiolease heartbeat {hold.lease.lease_id}",
        )
        self.task.add_done_callback(self._on_done)

    def loss(self) -> LeaseLostError | None:
        task = self.task
        if self._loss is None and task.done() and not task.cancelled():
            self._loss = self._heartbeat_loss(task.exception())
        return self._loss

    async def finish(self) -> bool | None:
        return await self._keeper.finish(self._hold, self.task, self._release)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        # Retrieved whatever the state: never "exception was never retrieved".
        lost = self.loss()
        if lost is not None:
            self._on_lost(lost)

    def _heartbeat_loss(self, exc: BaseException | None) -> LeaseLostError:
        if isinstance(exc, LeaseLostError):
            return exc
        lease = self._hold.lease
        # Never a silent death: an unexpected heartbeat failure ends the work too.
        get_logger().error(
            "heartbeat of %s failed: %r",
            describe(lease),
            exc,
            exc_info=exc,
            extra=lease_fields(lease),
        )
        lost = LeaseLostError(
            f"lease on {describe(lease)} lost: its heartbeat failed ({exc!r})",
            lease_id=lease.lease_id,
            reason="heartbeat failed",
        )
        lost.__cause__ = exc
        self._keeper.events.lost(lease, lost.reason)
        return lost


class Heartbeats:
    """The hold source of single leases: each kept by its own heartbeat every ``period``."""

    def __init__(
        self,
        keeper: Keeper,
        period: float,
        *,
        renew: Renew | None = None,
        release: Release | None = None,
    ) -> None:
        self.keeper = keeper
        self.period = period
        self._renew = renew
        self._release = keeper.release if release is None else release

    def hold(self, lease: Lease) -> Hold:
        return self.keeper.hold(lease)

    def keep(
        self,
        hold: Hold,
        on_renewed: Callable[[Hold], None],
        on_lost: Callable[[LeaseLostError], None],
    ) -> Heartbeat:
        return Heartbeat(
            self.keeper, hold, self.period, on_renewed, on_lost, self._renew, self._release
        )

    async def release(self, lease: Lease) -> bool | None:
        return await self._release(lease)
