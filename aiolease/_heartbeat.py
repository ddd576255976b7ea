"""The holder's side of a lease: its local deadline, renewals until then, and its release.

Times are the clock's monotonic seconds (event-loop time). A holder's deadline counts from
the moment its last successful write was *sent*: ``sent + duration - margin``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from ._errors import LeaseError, LeaseLostError, LeaseStoreError, LeaseUnavailableError
from ._log import get_logger, lease_fields
from ._tasks import TaskOwner
from ._types import Lease, LeaseRequest, _as_seconds
from ._wire.calls import deadline_first

if TYPE_CHECKING:
    from ._clock import Clock
    from ._store import LockStore

__all__ = ["Hold", "Keeper", "describe"]

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

    def lost(self, lease: Lease, why: str, reason: str) -> LeaseLostError:
        """Log the loss of ``lease`` and return the error that reports it.

        ``why`` is the whole story (the message), ``reason`` a few words of it.
        """
        get_logger().info("lost %s: %s", describe(lease), why, extra=lease_fields(lease))
        return LeaseLostError(
            f"lease on {describe(lease)} lost: {why}", lease_id=lease.lease_id, reason=reason
        )

    # -- renewing -----------------------------------------------------------------------

    async def keep_alive(
        self, hold: Hold, period: float, on_renewed: Callable[[Hold], None] | None
    ) -> NoReturn:
        """Renew every ``period`` (jittered down) until a renewal fails: LeaseLostError."""
        while True:
            # Jittered down, never up: heartbeats of leases taken in one burst drift apart
            # instead of renewing in lockstep, and no lease gets fewer renewals than asked.
            delay = hold.lease._sent_at + period * random.uniform(0.8, 1.0) - self.clock.monotonic()
            if delay > 0:
                await asyncio.sleep(min(delay, hold.deadline - self.clock.monotonic()))
            await self.renew(hold)
            if on_renewed is not None:
                on_renewed(hold)

    async def renew(self, hold: Hold) -> None:
        """Renew once, retrying transient failures until the local deadline."""
        lease = hold.lease
        backoff = RETRY_BASE
        attempt = 0
        while True:
            if self.clock.monotonic() >= hold.deadline:
                raise self.lost(
                    lease,
                    "its local deadline passed before a renewal succeeded",
                    "local deadline passed",
                )
            attempt += 1
            try:
                # Past capacity, the store's request slots go to the earliest deadline.
                with deadline_first(hold.deadline):
                    async with asyncio.timeout_at(hold.deadline):
                        renewed = await self.store.renew(lease)
            except TimeoutError:
                raise self.lost(
                    lease,
                    "a renewal was still unanswered at the local deadline",
                    "local deadline passed",
                ) from None
            except LeaseLostError as exc:
                raise self.lost(lease, f"the item is {exc.detail}", exc.reason) from exc
            except LeaseStoreError as exc:
                raise self.lost(
                    lease, f"the table cannot be written: {exc}", "table error"
                ) from exc
            except LeaseUnavailableError as exc:
                left = hold.deadline - self.clock.monotonic()
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
                raise self.lost(
                    lease,
                    "the renewal was answered after the local deadline",
                    "local deadline passed",
                )
            hold.lease = renewed
            hold.deadline = self.deadline(renewed)
            logger = get_logger()
            if logger.isEnabledFor(logging.DEBUG):  # every renewal passes here: build nothing
                logger.debug("renewed %s", describe(renewed), extra=lease_fields(renewed))
            return

    # -- releasing ----------------------------------------------------------------------

    async def finish(self, hold: Hold, heartbeat: asyncio.Task[None]) -> bool | None:
        """Stop the heartbeat (bounded), then release; see :meth:`release`."""
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
        return await self.release(hold.lease)

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
