"""One owner for background work: every task is awaited (bounded) by someone's ``aclose()``.

Cleanups that must happen before a cancelled call returns run inside that call, shielded
and bounded (:meth:`TaskOwner.run_shielded`); what cannot finish in time goes on here, and
``aclose()`` waits for it before the client closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from ._clock import Clock
from ._log import get_logger

__all__ = ["TaskOwner"]

_T = TypeVar("_T")


class TaskOwner:
    """A set of tasks that outlived the call that started them, awaited by :meth:`aclose`.

    A task owned here is also owned by ``parent`` (a locker's work is its store's too, so
    that the store's client outlives it). ``what`` and ``then`` word the warning about the
    tasks still running when :meth:`aclose` gives up on them.
    """

    def __init__(self, what: str, then: str, *, parent: TaskOwner | None = None) -> None:
        self._what = what
        self._then = then
        self._parent = parent
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def __repr__(self) -> str:
        return f"<TaskOwner of {len(self._tasks)} {self._what}>"

    def spawn(self, coro: Coroutine[Any, Any, _T], *, name: str | None = None) -> asyncio.Task[_T]:
        """Run ``coro`` in a task owned here (and by the parent)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.own(task)
        return task

    def own(self, task: asyncio.Task[Any]) -> None:
        """Take ``task`` over: :meth:`aclose` (here and in the parent) waits for it."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._parent is not None:
            self._parent.own(task)

    async def run_shielded(self, cleanup: Awaitable[object], timeout: float, clock: Clock) -> bool:
        """Run ``cleanup`` to completion, at most ``timeout`` seconds, whatever cancels the caller.

        Returns whether the caller was cancelled meanwhile (the caller re-raises). What does
        not finish in time goes on in the background, owned here.
        """
        task = asyncio.ensure_future(cleanup)
        self.own(task)
        give_up = clock.monotonic() + timeout
        cancelled = False
        while not task.done() and clock.monotonic() < give_up:
            try:
                # asyncio.wait never cancels the task it waits for: a shield.
                await asyncio.wait({task}, timeout=give_up - clock.monotonic())
            except asyncio.CancelledError:
                cancelled = True
        return cancelled

    async def aclose(self, timeout: float, unwind: float) -> None:
        """Wait up to ``timeout`` for the owned tasks; cancel the rest, give them ``unwind``."""
        pending = set(self._tasks)
        if not pending:
            return
        _, pending = await asyncio.wait(pending, timeout=timeout)
        if pending:
            get_logger().warning(
                "%d %s still running after %.1f s; cancelling them (%s)",
                len(pending),
                self._what,
                timeout,
                self._then,
            )
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=unwind)
