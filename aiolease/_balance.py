"""Fair-share serving on a session: ``session.serve(work)`` (docs/balancing.md).

Each wait period the balancer reads the pool (one scan of the items, one of the session
rows), computes this worker's share (the items divided by the live sessions, the first
``items % n`` sessions by ID getting one more, capped by ``max_leases``) and moves towards
it: below its share it takes free, expired and dead sessions' items, preferring those a
deterministic plan gives it (so that workers racing over a fresh pool seldom collide);
above its share it drains and releases the extra items for the others to take. Still
short once nothing free is left, it asks a member above its share for an item by a handoff
request, and it answers the requests on its own items from the same read (``_handoff``).
It never takes a live lease: only what the takeover rule finds takeable, by one
conditional write.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from ._errors import LeaseLostError, LeaseNotObtainedError, LeaseUnavailableError
from ._handoff import WITHDRAW_TIMEOUT, Handoffs, Pool
from ._log import get_logger
from ._scope import LeaseScope
from ._shares import fair_share, plan, preference
from ._types import MAX_NS, Lease, LeaseItem

if TYPE_CHECKING:
    from ._session import LeaseSession

__all__ = ["Balancer", "draining", "fair_share", "plan", "preference", "serve"]

# On a change of membership, read again this long (a fraction of the wait period) later,
# up to this many times, until two reads agree.
SETTLE_FRACTION = 0.2
SETTLE_READS = 3
# Below its share with nothing to take, a worker looks again after this fraction of the
# wait period (its items are on their way: workers above their share are draining them).
SHORT_FRACTION = 0.25
# After its work failed, an item is left alone for a wait period, doubling up to this.
MAX_FAILURE_PAUSE = 60.0

_DRAINING: contextvars.ContextVar[asyncio.Event] = contextvars.ContextVar("aiolease_draining")


def draining() -> asyncio.Event:
    """The event ``session.serve()`` sets when it wants the current item back.

    Read it in ``work`` (or any task it starts): once set, finish the batch in hand and
    return within the drain grace, after which ``work`` is cancelled. ``RuntimeError``
    outside a ``work`` run by ``serve()``.
    """
    try:
        return _DRAINING.get()
    except LookupError:
        raise RuntimeError("aiolease.draining() is only known inside work run by serve()") from None


async def serve(
    self: LeaseSession,
    work: Callable[[Lease], Awaitable[object]],
    *,
    max_leases: int | None = None,
    wait_period: float = 1.0,
    drain_grace: float | None = None,
) -> NoReturn:
    """Hold this worker's fair share of the pool, running ``await work(lease)`` for each
    item in a task of its own, until cancelled (docs/balancing.md).

    The share is the table's items divided by the live sessions (counts differ by at most
    one), capped by ``max_leases``, recomputed every ``wait_period``. Items above the share
    are drained and released: ``aiolease.draining()`` is set for their ``work``, which is
    cancelled after ``drain_grace`` (default: a third of the session's duration).
    Cancelling ``serve()`` drains and releases every item before the cancellation
    propagates. Only free, expired and dead sessions' items are taken, never live ones;
    short of its share with nothing free, it asks a worker above its share for an item (a
    handoff request, answered by that worker's next look).
    """
    await Balancer(
        self, work, max_leases=max_leases, wait_period=wait_period, drain_grace=drain_grace
    ).serve()


@dataclass
class _Slot:
    """One item this worker holds (or is taking): its task and its drain signal."""

    item_id: str
    drain: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    cutoff: asyncio.TimerHandle | None = None


View = Pool  # one wait period's reading of the pool (items, live sessions, requests)


class Balancer:
    """The loop behind ``session.serve()``; one per call."""

    def __init__(
        self,
        session: LeaseSession,
        work: Callable[[Lease], Awaitable[Any]],
        *,
        max_leases: int | None,
        wait_period: float,
        drain_grace: float | None,
    ) -> None:
        if not callable(work):
            raise TypeError(f"work must be a coroutine function, not {type(work).__name__}")
        if max_leases is not None and (
            isinstance(max_leases, bool) or not isinstance(max_leases, int) or max_leases < 0
        ):
            raise ValueError(f"max_leases must be None or an int >= 0, not {max_leases!r}")
        for name, value in (("wait_period", wait_period), ("drain_grace", drain_grace)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
            ):
                raise ValueError(f"{name} must be a number of seconds > 0, not {value!r}")
        self._session = session
        self._work = work
        self._max = max_leases
        self._wait = float(wait_period)
        # Default: a third of the session's duration (its default heartbeat period).
        duration = session.request.duration
        self._grace = duration / 3 if drain_grace is None else float(drain_grace)
        self._slots: dict[str, _Slot] = {}
        self._skew = session._locker.max_clock_skew
        self._members: list[str] | None = None  # the live sessions as last read
        # Items whose work failed: how often in a row, and when they may be taken again.
        self._failures: dict[str, int] = {}
        self._not_before: dict[str, float] = {}
        self._handoffs = Handoffs(session, self._wait, self._grace)
        self._short_since: float | None = None  # loop time since when short with nothing free

    @property
    def held(self) -> list[str]:
        """The items held or being taken now, not counting those draining."""
        return [s.item_id for s in self._slots.values() if not s.drain.is_set()]

    async def serve(self) -> NoReturn:
        """Keep the fair share until cancelled; on cancellation drain and release everything."""
        async with asyncio.TaskGroup() as tg:
            try:
                while True:
                    short = False
                    try:
                        short = await self.step(tg)
                    except LeaseUnavailableError as exc:
                        get_logger().warning("balancing %s: %s", self._session.lessee_id, exc)
                    # Short of its share with nothing to take: items are being handed over
                    # (drained by workers above their share), so look again sooner.
                    pause = self._wait * (SHORT_FRACTION if short else 1.0)
                    # Jitter down: workers that started together drift apart.
                    await asyncio.sleep(pause * random.uniform(0.8, 1.0))
            except asyncio.CancelledError:
                # Our unanswered requests go while the items drain (shielded, bounded: the
                # holders would otherwise withdraw them once our session is over).
                withdrawing = asyncio.ensure_future(
                    asyncio.wait_for(self._handoffs.withdraw_all("stopped"), WITHDRAW_TIMEOUT)
                )
                try:
                    await self._drain_all()
                finally:
                    await _shielded(withdrawing, lambda: self._session.lost)
                raise

    async def read(self) -> View:
        """The pool and the live sessions (clock rule), from one consistent scan."""
        store = self._session._store
        items, sessions, handoffs = await store.read_pool()
        cutoff = store.clock.wall_ns() - int(self._skew * 1e9)
        live = sorted(r.session_id for r in sessions if not r.ended and r.until_ns >= cutoff)
        return View(items, live, handoffs)

    def target(self, view: View) -> int:
        """This worker's share of the pool now, capped by ``max_leases``."""
        share = fair_share(len(view.items), view.live, self._session.session_id)
        return share if self._max is None else min(share, self._max)

    async def step(self, tg: asyncio.TaskGroup) -> bool:
        """One wait period's move towards the share: take or drain the difference.

        True if this worker is below its share and found too few items to take.
        """
        view = await self.read()
        # Membership seen changing (a start, a join, a leave): read again until two reads a
        # moment apart agree, so that workers starting together do not each take (and
        # then give back) a share computed from the few sessions that had started yet.
        for _ in range(SETTLE_READS):
            if view.live == self._members:
                break
            self._members = view.live
            await asyncio.sleep(self._wait * SETTLE_FRACTION)
            view = await self.read()
        me = self._session.session_id
        target = self.target(view)
        members = sorted(set(view.live) | {me})
        planned = plan((i.lease_id for i in view.items), members)
        # Requests on our items first (accepted ones are the first extras to go).
        for item_id in await self._handoffs.answer(view, self.held, target):
            self.drain(item_id)
        held = self.held
        if len(held) > target:
            # Release first what the plan gives to others, then what we like least.
            order = sorted(held, key=lambda i: (planned.get(i) == me, preference(me, i)))
            for item_id in order[: len(held) - target]:
                self.drain(item_id)
        if len(held) >= target:
            self._short_since = None
            await self._handoffs.ask(view, target, len(held), planned, self._slots)
            return False
        live = set(members)
        now = self._session._store.clock.wall_ns()
        candidates = [
            i
            for i in view.items
            if i.lease_id not in self._slots
            and not self._backed_off(i.lease_id)
            and self._takeable(i, live)
            and not self._handoffs.reserved_for_other(view, i.lease_id, live, now)
        ]
        # What was handed to us first, then what the plan gives us, then our own order.
        candidates.sort(
            key=lambda i: (
                not self._handoffs.reserved_for_me(view, i.lease_id),
                planned.get(i.lease_id) != me,
                -preference(me, i.lease_id),
            )
        )
        # Free items first, all we are short of: requests still out do not hold them back
        # (that made a joiner wait for its requests while the items it needed lay free);
        # the requests made surplus are withdrawn below, before the holders answer them.
        wanted = target - len(held)
        room = wanted
        for item in candidates[:room]:
            slot = _Slot(item.lease_id)
            self._slots[item.lease_id] = slot
            slot.task = tg.create_task(self._hold(slot), name=f"aiolease-serve:{item.lease_id}")
        short = len(candidates) < wanted
        # Still short once the free items are taken: ask those above their share for the
        # rest (or withdraw the requests that more held than needed made surplus). Only
        # once short for a wait period: a joiner finds the others above their share, and
        # they drain their extras by themselves at their next look; asking at once would
        # only add writes racing those drains.
        clock = asyncio.get_running_loop().time()
        if not short:
            self._short_since = None
        elif self._short_since is None:
            self._short_since = clock
        may_ask = self._short_since is not None and clock - self._short_since >= self._wait
        await self._handoffs.ask(
            view, target, len(self.held), planned, self._slots, may_ask=may_ask
        )
        return short or bool(self._handoffs.asked)

    def _takeable(self, item: LeaseItem, live: set[str]) -> bool:
        """Whether the takeover rule may let us take ``item`` (only a hint: the write decides)."""
        if item.lessee_id is None:
            return True
        if item.session is not None:
            return item.session not in live  # a dead or expired session's item
        if item.until_ns == MAX_NS:
            return False  # an index row of a session-held item: judged when free
        return self._session._store.expired(item, self._skew)

    def _failed(self, item_id: str) -> float:
        """Back ``item_id`` off after its work failed: a wait period, doubling, at most 60 s."""
        failures = self._failures.get(item_id, 0) + 1
        self._failures[item_id] = failures
        pause = min(self._wait * 2.0 ** (failures - 1), MAX_FAILURE_PAUSE)
        self._not_before[item_id] = asyncio.get_running_loop().time() + pause
        return pause

    def _backed_off(self, item_id: str) -> bool:
        until = self._not_before.get(item_id)
        if until is None:
            return False
        if asyncio.get_running_loop().time() >= until:
            del self._not_before[item_id]
            return False
        return True

    def drain(self, item_id: str) -> None:
        """Ask ``item_id``'s work to finish (``draining()`` is set); cancel it after the grace."""
        slot = self._slots.get(item_id)
        if slot is None or slot.drain.is_set():
            return
        slot.drain.set()
        if slot.task is not None:
            slot.cutoff = asyncio.get_running_loop().call_later(self._grace, slot.task.cancel)

    async def _drain_all(self) -> None:
        """Drain every item and wait for their releases (each bounded by the grace)."""
        for item_id in list(self._slots):
            self.drain(item_id)
        tasks = [s.task for s in self._slots.values() if s.task is not None]
        if tasks:
            await asyncio.wait(tasks)

    async def _take(self, item_id: str) -> Lease:
        """One try at ``item_id`` under the session, by the locker's takeover rule."""
        session = self._session
        row = session._live_row()
        locker = session._locker
        started = locker._keeper.clock.monotonic()
        lease = await locker._rule.obtain_named(locker.store, session.request, item_id, session=row)
        locker._log_acquired(lease, started)
        return lease

    async def _hold(self, slot: _Slot) -> None:
        """Take the slot's item and run ``work`` on it until it returns, drains or is lost."""
        _DRAINING.set(slot.drain)
        session = self._session
        scope = LeaseScope._held_by(
            session._keeper, functools.partial(self._take, slot.item_id), session._item_source
        )
        try:
            async with scope as lease:
                self._handoffs.taken(lease)
                try:
                    await self._work(lease)
                except Exception:
                    # The work's own failure (lease errors it raised included): never the
                    # other items' business. Logged; the item is released by the scope and
                    # left alone for a while, so a failing item cannot spin.
                    pause = self._failed(slot.item_id)
                    get_logger().exception(
                        "serving %r: work failed; released, not taken again by %s for %.1f s",
                        slot.item_id,
                        session.lessee_id,
                        pause,
                        extra={"lease_id": slot.item_id, "lessee_id": session.lessee_id},
                    )
                else:
                    self._failures.pop(slot.item_id, None)
        except LeaseNotObtainedError:
            pass  # another worker was first: the next period looks again
        except LeaseUnavailableError as exc:
            get_logger().warning("taking %r: %s", slot.item_id, exc)
        except LeaseLostError as exc:
            get_logger().info("serving %r: %s", slot.item_id, exc)
        finally:
            if slot.cutoff is not None:
                slot.cutoff.cancel()
            self._slots.pop(slot.item_id, None)


async def _shielded(task: asyncio.Future[None], give_up: Callable[[], bool]) -> None:
    """Wait for ``task`` (itself bounded) through further cancellations, unless
    ``give_up()`` says it is pointless by then (the session was lost); log its error."""
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if give_up():
                # Pointless now, but nothing may outlive serve(): the withdrawal answers
                # its cancellation at once (bounded all the same).
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([task], timeout=WITHDRAW_TIMEOUT)
                return
            # Otherwise the cancellation being handled already propagates after this.
        except Exception:
            break
    if not task.cancelled() and (exc := task.exception()) is not None:
        get_logger().warning("withdrawing handoff requests on stop: %r", exc)
