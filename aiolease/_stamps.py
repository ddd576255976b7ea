"""Send stamps: the monotonic send time and the ``LeaseUntil`` of a write about to be sent."""

from __future__ import annotations

from collections import OrderedDict

from ._clock import Clock

__all__ = ["Stamps"]

# Rows whose last written LeaseUntil the store remembers: beyond this the least recently
# written are forgotten, which only costs uniqueness against a clock that repeats a value,
# never safety (renewals are conditioned on the stored expiry anyway).
MAX_FLOORS = 100_000


class Stamps:
    """Per row, the last ``LeaseUntil`` this store wrote (its floor), and the stamps above it.

    The next write of a row goes above its floor, so a lost-answer retry recognises its own
    write by its expiry; other rows never stretch it.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._floors: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._floors)

    def take(self, lease_id: str, duration: float, until_ns: int | None) -> tuple[float, int]:
        """``(sent_at, until_ns)`` for a write of ``lease_id`` about to be sent.

        ``sent_at`` (monotonic) is read before the wall clock, so the holder's local deadline
        (``sent_at + duration``) never ends after the expiry others see. An explicit expiry
        sooner than now + duration moves ``sent_at`` back by the difference, for the same
        reason. ``until_ns`` defaults to now + duration, made unique per row (above its floor).
        """
        sent_at = self._clock.monotonic()
        now = self._clock.wall_ns()
        natural = now + int(duration * 1e9)
        value = natural if until_ns is None else until_ns
        floor = self._floors.get(lease_id)
        if floor is not None and value <= floor:
            value = floor + 1
        self.note(lease_id, value, now)
        return sent_at - max(0, natural - value) / 1e9, value

    def note(self, lease_id: str, until_ns: int, now: int | None = None) -> None:
        """Remember the last ``LeaseUntil`` written to ``lease_id``; forget expired ones."""
        self._floors[lease_id] = until_ns
        self._floors.move_to_end(lease_id)
        now = self._clock.wall_ns() if now is None else now
        # A floor in the past cannot lift a new now + duration: drop the oldest such few.
        for _ in range(4):
            oldest, value = next(iter(self._floors.items()))
            if value >= now or oldest == lease_id:
                break
            self._floors.popitem(last=False)
        while len(self._floors) > MAX_FLOORS:
            self._floors.popitem(last=False)

    def forget(self, lease_id: str) -> None:
        """The row's last write was refused, undone or released: its expiry lifts nothing."""
        self._floors.pop(lease_id, None)
