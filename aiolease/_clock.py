"""The clocks: wall-clock nanoseconds for stored expiries, monotonic seconds for deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock", "as_clock"]


@runtime_checkable
class Clock(Protocol):
    """Where the library reads the time: inject one to drive time in tests.

    ``wall_ns`` writes and judges the stored ``LeaseUntil`` (Unix epoch nanoseconds);
    ``monotonic`` dates sends, sightings and local deadlines in seconds. Deadlines are
    scheduled as event-loop timers, so ``monotonic`` must run with the loop's own clock
    (``loop.time()``, the default); to drive it, drive the loop's clock.
    """

    def wall_ns(self) -> int: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The default clock: ``wall`` (``time.time_ns`` unless given) and the running loop's time."""

    __slots__ = ("_wall",)

    def __init__(self, wall: Callable[[], int] = time.time_ns) -> None:
        self._wall = wall

    def __repr__(self) -> str:
        return f"SystemClock(wall={self._wall!r})"

    def wall_ns(self) -> int:
        return self._wall()

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()


def as_clock(clock: Clock | Callable[[], int]) -> Clock:
    """A store's ``clock=``: a :class:`Clock`, or a callable returning epoch ns (the wall clock)."""
    if isinstance(clock, Clock):
        return clock
    if not callable(clock):
        raise TypeError(f"clock must be a callable returning epoch ns, not {clock!r}")
    return SystemClock(clock)
