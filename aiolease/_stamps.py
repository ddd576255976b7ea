"""Send stamps: the monotonic send time and the ``LeaseUntil`` of a write about to be sent."""

from __future__ import annotations

from collections import OrderedDict

from ._clock import Clock

__all__ = ["Stamps"]

# Rows whose issued LeaseUntil values the store remembers: beyond this the least recently
# written are forgotten, which only costs uniqueness against a clock that repeats a value,
# never safety (renewals are conditioned on the stored expiry anyway).
MAX_FLOORS = 100_000
# Per row, at most this many unexpired values (writes that landed or may have: a refusal
# answered at the first attempt forgets its value at once; renewals add about one per period).
MAX_ISSUED = 16


class Stamps:
    """Per row, the unexpired ``LeaseUntil`` values this store issued for writes that landed
    or may have, and the stamps of new writes.

    A new write of the row never reuses one (it goes just above on an exact collision), so
    a lost-answer retry and an undo recognise their own write. Neither other rows nor other
    values of the row stretch it.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._issued: OrderedDict[str, list[int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._issued)

    def take(self, lease_id: str, duration: float, until_ns: int | None) -> tuple[float, int]:
        """``(sent_at, until_ns)`` for a write of ``lease_id`` about to be sent.

        ``sent_at`` (monotonic) is read before the wall clock, so the holder's local deadline
        (``sent_at + duration``) never ends after the expiry others see. An explicit expiry
        sooner than now + duration moves ``sent_at`` back by the difference, for the same
        reason. ``until_ns`` defaults to now + duration; it is made unique per row (never a
        value issued for that row that may be stored or in flight and has not expired: just
        above it on an exact collision).
        """
        sent_at = self._clock.monotonic()
        now = self._clock.wall_ns()
        natural = now + int(duration * 1e9)
        value = self.issue(lease_id, natural if until_ns is None else until_ns, now)
        return sent_at - max(0, natural - value) / 1e9, value

    def issue(self, lease_id: str, until_ns: int, now: int | None = None) -> int:
        """Issue ``until_ns`` (or just above, if issued already) for ``lease_id``; return it.

        Forgets the row's expired values, and a few rows whose values have all expired: an
        expired value cannot collide with a new now + duration.
        """
        now = self._clock.wall_ns() if now is None else now
        issued = [value for value in self._issued.pop(lease_id, ()) if value >= now]
        while until_ns in issued:
            until_ns += 1
        issued.append(until_ns)
        self._issued[lease_id] = issued[-MAX_ISSUED:]
        for _ in range(4):
            oldest, values = next(iter(self._issued.items()))
            if oldest == lease_id or any(value >= now for value in values):
                break
            self._issued.popitem(last=False)
        while len(self._issued) > MAX_FLOORS:
            self._issued.popitem(last=False)
        return until_ns

    def forget(self, lease_id: str, until_ns: int) -> None:
        """Forget an issued value whose write surely did not land and is not in flight."""
        issued = self._issued.get(lease_id)
        if issued is not None and until_ns in issued:
            issued.remove(until_ns)
