"""Event listeners: plain callbacks run on the loop (and timed), async ones in a task each.

A plain callback runs on the event loop's thread (``loop.call_soon``): while it runs,
nothing else does, renewals included, and no library can prevent that. It must be quick;
one that takes over :data:`SLOW_LISTENER` seconds is logged. An async callback runs in one
task of its own at a time (owned by the locker); events that arrive while it is busy wait
in a bounded buffer that drops the oldest, so a slow one never delays a renewal.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ._log import get_logger

if TYPE_CHECKING:
    from ._events import LeaseEvent

__all__ = ["AsyncRegistration", "Registration", "Spawn"]

# A plain listener that blocks the loop this long (seconds) already delays every
# heartbeat of the process by as much: worth a warning.
SLOW_LISTENER = 0.1
# An async listener that is busy keeps this many events waiting, then drops the oldest.
ASYNC_LISTENER_BUFFER = 1000

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


class Registration:
    """One plain listener: called on the loop, timed, its first failure logged."""

    __slots__ = ("active", "callback", "failures", "slow")

    def __init__(self, callback: Callable[[LeaseEvent], object]) -> None:
        self.callback = callback
        self.active = True
        self.failures = 0
        self.slow = False

    def remove(self) -> None:
        """No call starts after this returns (a delivery already queued checks it)."""
        self.active = False

    def deliver(self, event: LeaseEvent) -> None:
        """Call the listener with ``event`` unless it was removed; log a failure or a stall."""
        if not self.active:
            return
        started = time.perf_counter()
        try:
            self.callback(event)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # CancelledError too: the next listener still runs
            self.failures += 1
            if self.failures == 1:
                _log_failure(self.callback, event, exc)
        took = time.perf_counter() - started
        if took > SLOW_LISTENER and not self.slow:
            self.slow = True
            get_logger().warning(
                "event listener %r took %.2f s on %s, blocking the event loop and with it "
                "every renewal; do slow work in an async listener or a locker.events() "
                "consumer (logged once)",
                self.callback,
                took,
                type(event).__name__,
            )


class AsyncRegistration:
    """One async listener: at most one task at a time runs it, over a drop-oldest buffer."""

    __slots__ = (
        "_dropping",
        "active",
        "buffer",
        "callback",
        "dropped",
        "failures",
        "spawn",
        "task",
    )

    def __init__(
        self, callback: Callable[[LeaseEvent], Awaitable[object]], spawn: Spawn | None
    ) -> None:
        self.callback = callback
        self.spawn = spawn
        self.active = True
        self.failures = 0
        self.buffer: deque[LeaseEvent] = deque(maxlen=ASYNC_LISTENER_BUFFER)
        self.dropped = 0
        self._dropping = False
        self.task: asyncio.Task[None] | None = None

    def remove(self) -> None:
        """No call starts after this returns; the events still waiting are discarded."""
        self.active = False
        self.buffer.clear()
        if self.dropped:
            get_logger().warning(
                "async event listener %r removed; it dropped %d event(s) it did not keep up with",
                self.callback,
                self.dropped,
            )

    def put(self, event: LeaseEvent) -> None:
        """Queue ``event``; start the listener's task unless it is running."""
        if not self.active:
            return
        buffer = self.buffer
        if len(buffer) == buffer.maxlen:
            self.dropped += 1  # the deque drops the oldest as we append
            if not self._dropping:
                self._dropping = True
                get_logger().warning(
                    "async event listener %r is %d events behind; dropping the oldest "
                    "until it catches up",
                    self.callback,
                    buffer.maxlen,
                )
        buffer.append(event)
        if self.task is None or self.task.done():  # done: cancelled before it started
            run = self._run()
            if self.spawn is None:
                self.task = asyncio.get_running_loop().create_task(run)
            else:
                self.task = self.spawn(run)

    async def _run(self) -> None:
        try:
            while self.active and self.buffer:
                event = self.buffer.popleft()
                if not self.buffer:
                    self._dropping = False  # caught up: the next overflow is logged again
                try:
                    await self.callback(event)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise  # the task itself is cancelled (the locker closing)
                    self.failures += 1
                    if self.failures == 1:
                        _log_failure(self.callback, event, exc)
        finally:
            self.task = None


def _log_failure(callback: object, event: LeaseEvent, exc: BaseException) -> None:
    get_logger().error(
        "event listener %r raised on %s (logged once; it stays registered)",
        callback,
        type(event).__name__,
        exc_info=exc,
    )
