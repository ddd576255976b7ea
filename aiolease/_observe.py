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

This module keeps the sightings (pure bookkeeping, driven by the times it is given); the
takeover rule that reads the table and writes is ``_takeover.ObserveTakeover``.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import NamedTuple

from ._types import LeaseItem

__all__ = ["Observations", "Verdict"]

# Observations kept per locker; beyond this the least recently seen are dropped. Dropping
# one only costs time (the row is watched afresh), never safety.
MAX_OBSERVATIONS = 100_000
# An observation not refreshed for this long is dropped: nobody is watching that row.
FORGET_AFTER = 600.0


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

    Times are monotonic (the clock's ``monotonic()``, event-loop time) taken after the read
    returned. Kept across
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
