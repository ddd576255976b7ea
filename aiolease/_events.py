"""Lifecycle events: typed, frozen values, and the hub that hands them to subscribers.

The keeper, the scope and the locker each call one method of :class:`Events` where
something happens. With nobody listening and no metrics, a call costs two attribute
tests: no event object is built. Plain listeners run soon after (``loop.call_soon``),
never inline in the renewal path; async listeners and streams only append to a bounded
buffer (see ``_listeners``).
"""

from __future__ import annotations

import asyncio
import inspect
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from ._listeners import AsyncRegistration, Registration, Spawn
from ._log import get_logger
from ._types import SESSION_PREFIX, Lease, ns_to_datetime

if TYPE_CHECKING:
    from ._clock import Clock
    from ._metrics import Metrics

__all__ = [
    "EventStream",
    "Events",
    "LeaseAcquired",
    "LeaseAtRisk",
    "LeaseEvent",
    "LeaseLost",
    "LeaseReleased",
    "LeaseRenewed",
    "LeaseTakenOver",
    "RenewalFailed",
    "SessionEnded",
    "SessionEvent",
    "SessionLost",
    "SessionRenewed",
    "SessionStarted",
]

# A stream holds this many undelivered events by default; then it drops the oldest.
DEFAULT_MAX_BUFFER = 1000
# A lease counts as lost once: the heartbeat and the deadline timer may both report it.
_REMEMBERED_LOSSES = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseEvent:
    """What every event says: when (wall clock, UTC), which table, item, lessee and tenure."""

    time: datetime
    """When it happened, by the store's wall clock (UTC)."""
    table: str
    """The lease table's name."""
    lease_id: str
    """The item's ID (for a session event, the session's row)."""
    lessee_id: str
    """The lessee of this locker that holds (or held, or tried to hold) the lease."""
    token: int
    """The fencing token of the tenure concerned."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseAcquired(LeaseEvent):
    """A lease was obtained (a new tenure, new token); see :class:`LeaseTakenOver`."""

    until: datetime
    """The stored expiry written by the acquisition (UTC)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseTakenOver(LeaseAcquired):
    """A lease was obtained from another holder whose lease had expired (or been watched out).

    A subclass of :class:`LeaseAcquired`: one acquisition is one event, of either type.
    """

    previous_holder: str
    """The lessee whose expired lease was replaced."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseRenewed(LeaseEvent):
    """A renewal succeeded; the local deadline moved."""

    until: datetime
    """The new stored expiry (UTC)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RenewalFailed(LeaseEvent):
    """A renewal attempt failed transiently (throttling, 5xx, timeout); it is retried."""

    attempt: int
    """The attempt's number within this renewal, from 1."""
    time_left: float
    """Seconds until the local deadline, when the work would be cancelled."""
    error: str
    """What went wrong, in a line."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseAtRisk(LeaseEvent):
    """Renewals keep failing and the next attempt may be sent with less than one heartbeat
    period left before the local deadline (after the longest wait before it). Once per
    renewal."""

    time_left: float
    """Seconds until the local deadline."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseLost(LeaseEvent):
    """The lease is lost (its work is being cancelled); sent once per tenure."""

    reason: str
    """Why, in a few words: ``LeaseLostError.reason``."""
    new_holder: str | None
    """The lessee that holds the item now, when the refusal showed it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseReleased(LeaseEvent):
    """The lease was released and the item freed by this locker."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEvent(LeaseEvent):
    """Base of the session events; ``lease_id`` is the session's row."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStarted(SessionEvent):
    """A session was started (its row written)."""

    until: datetime
    """The session's new stored expiry (UTC), as takers judge it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRenewed(SessionEvent):
    """A session's heartbeat renewed it."""

    until: datetime
    """The session's new stored expiry (UTC), as takers judge it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionLost(SessionEvent):
    """A session was lost: every lease under it is lost too."""

    reason: str
    """Why, in a few words."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEnded(SessionEvent):
    """A session was ended by its owner (its scope was left)."""


_E = TypeVar("_E", bound=LeaseEvent)


def _is_session_row(lease: Lease) -> bool:
    """Whether ``lease`` is a session's own row (its events are the Session* ones)."""
    return lease._session is None and lease.lease_id.startswith(SESSION_PREFIX)


# A plain function, or a coroutine function (its coroutine is what it returns).
Listener = Callable[[LeaseEvent], object]


class Events:
    """The lifecycle of one locker's leases: events to listeners and streams, and metrics.

    Each method is one point of the lifecycle; it records metrics (when instrumented) and
    builds the event only when someone listens.
    """

    def __init__(self, table: str, clock: Clock, spawn: Spawn | None = None) -> None:
        self.table = table
        self.clock = clock
        self.metrics: Metrics | None = None
        # Runs an async listener's task (the locker's task owner; else a bare task).
        self.spawn = spawn
        # Tuples, replaced on (un)subscribing: a delivery queued keeps the ones of its time.
        self._listeners: tuple[Registration | AsyncRegistration, ...] = ()
        self._sync: tuple[Registration, ...] = ()
        self._async: tuple[AsyncRegistration, ...] = ()
        # Held weakly: a stream its consumer dropped (``break`` without close) unsubscribes.
        # A tuple replaced on change (a dead stream's callback too), never mutated while
        # _send iterates it; cheaper to iterate and test than a WeakSet.
        self._streams: tuple[weakref.ref[EventStream], ...] = ()
        # ...but strongly while a consumer awaits one: that keeps the consumer's task alive
        # (the loop itself holds no reference to a task waiting on a future).
        self._waiting: set[EventStream] = set()
        self._lost: dict[tuple[str, int], None] = {}

    @property
    def listened(self) -> bool:
        """Whether an event built now would reach anyone."""
        return bool(self._listeners or self._streams)

    # -- subscribing --------------------------------------------------------------------

    def add_listener(self, callback: Listener) -> Callable[[], None]:
        """Deliver each event to ``callback``; returns the function that removes it.

        A plain function is called on the loop (``call_soon``) and must be quick; a
        coroutine function runs in a task, one event at a time, over a bounded buffer.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        registration: Registration | AsyncRegistration
        if inspect.iscoroutinefunction(callback):
            registration = AsyncRegistration(callback, self.spawn)
        else:
            registration = Registration(callback)
        self._subscribe(registration, +1)

        def remove() -> None:
            if registration.active:
                registration.remove()
                self._subscribe(registration, -1)

        return remove

    def _subscribe(self, registration: Registration | AsyncRegistration, change: int) -> None:
        listeners = [r for r in self._listeners if r is not registration]
        if change > 0:
            listeners.append(registration)
        self._listeners = tuple(listeners)
        self._sync = tuple(r for r in listeners if isinstance(r, Registration))
        self._async = tuple(r for r in listeners if isinstance(r, AsyncRegistration))

    def stream(self, max_buffer: int) -> EventStream:
        """A new subscription: an async iterator over the events from now on."""
        return EventStream(self, max_buffer)

    def _add_stream(self, stream: EventStream) -> weakref.ref[EventStream]:
        ref = weakref.ref(stream, self._drop_stream)
        self._streams = (*self._streams, ref)
        return ref

    def _drop_stream(self, ref: weakref.ref[EventStream]) -> None:
        self._streams = tuple(r for r in self._streams if r is not ref)

    # -- the lifecycle points -----------------------------------------------------------

    def acquired(self, lease: Lease, started: float) -> None:
        """``lease`` was obtained by a call that started (monotonic) at ``started``."""
        previous = lease._taken_from
        if self.metrics is not None:
            self.metrics.acquired(lease, previous is not None, self.clock.monotonic() - started)
        if self._listeners or self._streams:
            if previous is None:
                self._send(self._build(LeaseAcquired, lease, until=lease.until))
            else:
                event = self._build(
                    LeaseTakenOver, lease, until=lease.until, previous_holder=previous
                )
                self._send(event)

    def holding(self, lease: Lease, change: int) -> None:
        """A hold of ``lease`` started (+1) or ended (-1): a heartbeat, or an item of a session.

        A session's own row is not a lease held: its items are counted instead.
        """
        if self.metrics is not None and not _is_session_row(lease):
            self.metrics.holding(lease, change)

    def woke(self, lease: Lease, lag: float) -> None:
        """The heartbeat of ``lease`` woke ``lag`` seconds after it asked to."""
        if self.metrics is not None:
            self.metrics.woke(lease, lag)

    def renewed(self, lease: Lease, seconds: float) -> None:
        """A renewal call answered after ``seconds``; ``lease`` is the renewed lease."""
        if self.metrics is not None:
            self.metrics.renewal(lease, "renewed", seconds)
        if self._listeners or self._streams:
            kind = SessionRenewed if _is_session_row(lease) else LeaseRenewed
            self._send(self._build(kind, lease, until=lease.until))

    def renewal_failed(
        self, lease: Lease, attempt: int, seconds: float, left: float, error: BaseException
    ) -> None:
        """A renewal attempt failed transiently after ``seconds``; ``left`` s to the deadline."""
        if self.metrics is not None:
            self.metrics.renewal(lease, "failed", seconds)
        if self._listeners or self._streams:
            self._send(
                self._build(RenewalFailed, lease, attempt=attempt, time_left=left, error=str(error))
            )

    def renewal_refused(self, lease: Lease, seconds: float) -> None:
        """A renewal attempt was refused (or unanswered at the deadline): the lease is lost."""
        if self.metrics is not None:
            self.metrics.renewal(lease, "lost", seconds)

    def at_risk(self, lease: Lease, left: float, threshold: float) -> bool:
        """Report the lease at risk if ``left`` is under ``threshold`` s; True if so."""
        if left >= threshold:
            return False
        if self._listeners or self._streams:
            self._send(self._build(LeaseAtRisk, lease, time_left=left))
        return True

    def lost(self, lease: Lease, reason: str, new_holder: str | None = None) -> None:
        """``lease`` is lost; the first report of a tenure counts, later ones are ignored."""
        key = (lease.lease_id, lease.fencing_token)
        if key in self._lost:
            return
        self._lost[key] = None
        if len(self._lost) > _REMEMBERED_LOSSES:
            del self._lost[next(iter(self._lost))]
        if _is_session_row(lease):
            # Its items' losses are reported (and counted) one by one.
            if self._listeners or self._streams:
                self._send(self._build(SessionLost, lease, reason=reason))
            return
        if self.metrics is not None:
            self.metrics.lost(lease, reason)
        if self._listeners or self._streams:
            self._send(self._build(LeaseLost, lease, reason=reason, new_holder=new_holder))

    def released(self, lease: Lease) -> None:
        """``lease`` was released: the item is free."""
        if self._listeners or self._streams:
            self._send(self._build(LeaseReleased, lease))

    def emit(self, kind: type[_E], lease: Lease, /, **fields: Any) -> None:
        """Send a ``kind`` event about ``lease`` (e.g. the session events), if anyone listens."""
        if self._listeners or self._streams:
            self._send(self._build(kind, lease, **fields))

    def emit_item(
        self,
        kind: type[_E],
        lease_id: str,
        lessee_id: str,
        token: int,
        fields: Callable[[], Mapping[str, Any]],
        /,
    ) -> None:
        """Send a ``kind`` event about an item this locker may not hold (the handoff
        events), if anyone listens: only then is ``fields()`` called for its own values."""
        if self._listeners or self._streams:
            event = kind(
                time=ns_to_datetime(self.clock.wall_ns()),
                table=self.table,
                lease_id=lease_id,
                lessee_id=lessee_id,
                token=token,
                **fields(),
            )
            self._send(event)

    # -- delivery -----------------------------------------------------------------------

    def _build(self, kind: type[_E], lease: Lease, **fields: Any) -> _E:
        return kind(
            time=ns_to_datetime(self.clock.wall_ns()),
            table=self.table,
            lease_id=lease.lease_id,
            lessee_id=lease.lessee_id,
            token=lease.fencing_token,
            **fields,
        )

    def _send(self, event: LeaseEvent) -> None:
        for ref in self._streams:
            stream = ref()
            if stream is not None:
                stream._put(event)
        for registration in self._async:
            registration.put(event)
        if self._sync:
            # One callback for all plain listeners, in emission order; each checks at
            # delivery that it was not removed meanwhile.
            asyncio.get_running_loop().call_soon(self._deliver, self._sync, event)

    @staticmethod
    def _deliver(registrations: tuple[Registration, ...], event: LeaseEvent) -> None:
        for registration in registrations:
            registration.deliver(event)


class EventStream:
    """``async for event in locker.events():`` — the events from its creation on.

    Also an async context manager that unsubscribes on exit (``close()`` does too; the
    iteration then ends); a stream nobody references any more unsubscribes too. The buffer
    holds ``max_buffer`` events; when a slow consumer lets it fill, the oldest are dropped,
    counted in :attr:`dropped` and logged. One consumer at a time: a second task awaiting
    the next event while another waits raises ``RuntimeError``.
    """

    def __init__(self, events: Events, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        if isinstance(max_buffer, bool) or not isinstance(max_buffer, int):
            raise TypeError(f"max_buffer must be an int, not {type(max_buffer).__name__}")
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be at least 1, not {max_buffer}")
        self._events = events
        self._buffer: deque[LeaseEvent] = deque(maxlen=max_buffer)
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._dropping = False
        self.dropped = 0
        """How many events were dropped because the buffer was full."""
        self._ref = events._add_stream(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._buffer)} buffered"
        return f"<EventStream {state}, {self.dropped} dropped>"

    @property
    def closed(self) -> bool:
        """Whether the stream was closed (it receives nothing more)."""
        return self._closed

    def close(self) -> None:
        """Unsubscribe; the events buffered so far are still yielded, then iteration ends."""
        if self._closed:
            return
        self._closed = True
        self._events._drop_stream(self._ref)
        self._wake()
        if self.dropped:
            get_logger().warning(
                "event stream closed; it dropped %d event(s) its consumer did not keep up with",
                self.dropped,
            )

    async def aclose(self) -> None:
        """:meth:`close`, for ``contextlib.aclosing()``."""
        self.close()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> LeaseEvent:
        if self._waiter is not None:
            raise RuntimeError(
                "this event stream is already being iterated by another task; "
                "give each consumer its own locker.events()"
            )
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            self._events._waiting.add(self)
            try:
                await self._waiter
            finally:
                self._waiter = None
                self._events._waiting.discard(self)
        event = self._buffer.popleft()
        if not self._buffer:
            self._dropping = False  # caught up: the next overflow is logged again
        return event

    def _put(self, event: LeaseEvent) -> None:
        buffer = self._buffer
        if len(buffer) == buffer.maxlen:
            self.dropped += 1  # the deque drops the oldest as we append
            if not self._dropping:
                self._dropping = True
                get_logger().warning(
                    "an event stream's buffer is full (%d); dropping the oldest events "
                    "until its consumer catches up",
                    buffer.maxlen,
                )
        buffer.append(event)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
