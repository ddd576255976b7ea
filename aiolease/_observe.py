"""Observed-expiry takeover: take a lease only after seeing its row unchanged for a duration.

The clock rule compares the stored wall-clock ``LeaseUntil`` with the local wall clock, so
it is only as safe as ``max_clock_skew``. Here a waiter instead remembers, per row, when it
first saw the row's current state (lessee, fencing token, ``LeaseUntil``) and takes the row
only once that state has stayed unchanged for the holder's stored lease duration on the
waiter's own monotonic clock, with a write conditioned on exactly that state.

Why that is safe: every renewal writes a new ``LeaseUntil`` (unique per row, and conditioned
to move only forward within a tenure, so a late request cannot write an older one back) and
every change of holder a new lessee or token, so a state never comes back. The holder
stops its work by ``sent + duration - margin`` on its own clock, where ``sent`` precedes its
last write, which precedes the read that showed the state, which returned before the waiter
started counting (PITFALLS #4). If the conditional write lands, the state was still there,
so that deadline has passed. Rows without a valid stored duration (written by the Go
package) fall back to the clock rule.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections import OrderedDict
from contextlib import aclosing
from typing import TYPE_CHECKING, NamedTuple

from ._errors import LeaseNotObtainedError
from ._types import Lease, LeaseItem, LeaseRequest

if TYPE_CHECKING:
    from ._store import LockStore

__all__ = ["Observations", "Verdict", "obtain_any", "obtain_named"]

# Observations kept per locker; beyond this the least recently seen are dropped. Dropping
# one only costs time (the row is watched afresh), never safety.
MAX_OBSERVATIONS = 100_000
# An observation not refreshed for this long is dropped: nobody is watching that row.
FORGET_AFTER = 600.0
# A pool scan stops reading pages once it has this many rows it may take.
ENOUGH_CANDIDATES = 64


class Verdict(enum.Enum):
    """What a waiter may do with a row it just read."""

    FREE = "free"  # no lessee: take it at once
    RIPE = "ripe"  # seen unchanged for the holder's whole duration: take it, conditioned
    CLOCK = "clock"  # no valid stored duration: the clock rule decides
    WAIT = "wait"  # held, and not yet seen unchanged for long enough


class _State(NamedTuple):
    lessee_id: str
    fencing_token: int
    until_ns: int


class _Sighting:
    __slots__ = ("first_seen", "last_seen", "ripe_at", "state")

    def __init__(self, state: _State, now: float, duration: float) -> None:
        self.state = state
        self.first_seen = now
        self.last_seen = now
        self.ripe_at = now + duration


class Observations:
    """Per row: the state (lessee, token, ``LeaseUntil``) last seen and since when.

    Times are event-loop times (``loop.time()``) taken after the read returned. Kept across
    calls, so a waiter that keeps trying takes a dead lease one duration after it first saw
    it, however many ``obtain_lease`` calls that spans. Bounded in size and age.
    """

    def __init__(
        self, *, max_entries: int = MAX_OBSERVATIONS, forget_after: float = FORGET_AFTER
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, not {max_entries!r}")
        self.max_entries = max_entries
        self.forget_after = forget_after
        # Ordered by last sighting, oldest first, so pruning pops from the front.
        self._seen: OrderedDict[str, _Sighting] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __repr__(self) -> str:
        return f"<Observations of {len(self._seen)} row(s)>"

    def judge(self, item: LeaseItem, now: float) -> Verdict:
        """Record a sighting of ``item`` read before ``now`` and say whether it may be taken."""
        if item.lessee_id is None:
            self._seen.pop(item.lease_id, None)
            return Verdict.FREE
        if item.duration is None:
            self._seen.pop(item.lease_id, None)
            return Verdict.CLOCK
        state = _State(item.lessee_id, item.fencing_token, item.until_ns)
        sighting = self._seen.get(item.lease_id)
        if sighting is None or sighting.state != state:
            sighting = _Sighting(state, now, item.duration)
            self._seen[item.lease_id] = sighting
            if len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)
        else:
            sighting.last_seen = max(sighting.last_seen, now)
            self._seen.move_to_end(item.lease_id)
        return Verdict.RIPE if now >= sighting.ripe_at else Verdict.WAIT

    def ripens_in(self, now: float) -> float | None:
        """Seconds until the first watched state has been seen for its whole duration (if any).

        A waiter sleeps no longer than this, so that it takes a dead lease about one
        duration after first seeing it rather than up to a wait period later.
        """
        pending = [s.ripe_at for s in self._seen.values() if s.ripe_at > now]
        return min(pending) - now if pending else None

    def unchanged_for(self, item: LeaseItem, now: float) -> float:
        """Seconds ``item``'s current state has been seen unchanged (0 if not being watched)."""
        sighting = self._seen.get(item.lease_id)
        if sighting is None or item.lessee_id is None:
            return 0.0
        if sighting.state != (item.lessee_id, item.fencing_token, item.until_ns):
            return 0.0
        return max(0.0, now - sighting.first_seen)

    def forget(self, lease_id: str) -> None:
        """Drop what is known of ``lease_id`` (we took it, or it changed hands)."""
        self._seen.pop(lease_id, None)

    def prune(self, seen_before: float) -> int:
        """Drop rows last seen before ``seen_before``; returns how many were dropped."""
        dropped = 0
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if oldest.last_seen >= seen_before:
                break
            self._seen.popitem(last=False)
            dropped += 1
        return dropped


async def obtain_any(
    store: LockStore,
    observations: Observations,
    request: LeaseRequest,
    max_clock_skew: float,
) -> Lease:
    """Take a free row, or one seen unchanged for its holder's duration; else NotObtained.

    Reads the table with ``ConsistentRead`` (a stale read would date a state too early).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    chosen: dict[Verdict, list[LeaseItem]] = {Verdict.FREE: [], Verdict.RIPE: [], Verdict.CLOCK: []}
    found = 0
    complete = True
    scan = store.scan(consistent_read=True, projection_only=True, leasable_only=True)
    async with aclosing(scan) as items:
        async for item in items:
            verdict = observations.judge(item, loop.time())
            if verdict is Verdict.CLOCK and not store.expired(item, max_clock_skew):
                continue
            if verdict is not Verdict.WAIT:
                chosen[verdict].append(item)
                found += 1
                if found >= ENOUGH_CANDIDATES:
                    complete = False
                    break
    # Rows a complete pass did not see are gone from the table.
    observations.prune(started if complete else loop.time() - observations.forget_after)
    for verdict in (Verdict.FREE, Verdict.RIPE, Verdict.CLOCK):
        # Random order: workers starting together spread over the pool.
        random.shuffle(chosen[verdict])
        for item in chosen[verdict]:
            try:
                lease = await _take(store, request, item, verdict, max_clock_skew)
            except LeaseNotObtainedError:
                continue  # changed since the read: a renewal or another waiter won
            observations.forget(item.lease_id)
            return lease
    raise LeaseNotObtainedError(
        f"no item free or seen expired for {request.lessee_id!r} in table "
        f"{store.table_name!r} ({found} candidate(s) tried, {len(observations)} being watched)"
    )


async def obtain_named(
    store: LockStore,
    observations: Observations,
    request: LeaseRequest,
    lease_id: str,
    max_clock_skew: float,
) -> Lease:
    """Take ``lease_id`` if free or seen unchanged for its holder's duration; else NotObtained.

    ``LeaseNotObtainedError.item_exists`` is ``False`` when there is no such row.
    """
    loop = asyncio.get_running_loop()
    item = await store.get_item(lease_id, consistent_read=True, projection_only=True)
    now = loop.time()
    observations.prune(now - observations.forget_after)
    if item is None:
        raise LeaseNotObtainedError(
            f"no item {lease_id!r} in table {store.table_name!r}; register it with add_item()",
            lease_id=lease_id,
            item_exists=False,
        )
    verdict = observations.judge(item, now)
    if verdict is Verdict.CLOCK and not store.expired(item, max_clock_skew):
        verdict = Verdict.WAIT
    if verdict is Verdict.WAIT:
        if item.duration is None:
            progress = "no stored duration; it has not expired by the clock rule"
        else:
            seen = observations.unchanged_for(item, now)
            progress = f"seen unchanged for {seen:.1f} of {item.duration:.1f} s"
        raise LeaseNotObtainedError(
            f"{lease_id!r} is held by {item.lessee_id!r} ({progress})",
            lease_id=lease_id,
            holder=item.lessee_id,
        )
    lease = await _take(store, request, item, verdict, max_clock_skew)
    observations.forget(lease_id)
    return lease


async def _take(
    store: LockStore,
    request: LeaseRequest,
    item: LeaseItem,
    verdict: Verdict,
    max_clock_skew: float,
) -> Lease:
    """The acquiring write, conditioned on the row being free or still in the state read."""
    return await store.acquire(
        item.lease_id,
        request,
        expect=item,
        max_clock_skew=max_clock_skew if verdict is Verdict.CLOCK else None,
    )
