"""The call engine: request slots, retries with backoff, send stamps, errors translated."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from .._errors import LeaseError, LeaseUnavailableError
from .._log import get_logger
from .codes import Expected, client_attempts, error_code, is_transient, short, store_error
from .schema import Schema

__all__ = ["Calls", "Retried", "Slots", "deadline_first"]

Request = dict[str, Any]

# Backoff between the store's own attempts: short, because the locker's deadline bounds the
# total, and jittered so that many renewals failing together do not retry together.
BACKOFF_BASE = 0.05
BACKOFF_CAP = 1.0
# A request slot waiter without a deadline is served as if due this long after it queued.
NO_DEADLINE_WAIT = 1.0


# The local deadline (loop time) of the lease the current task's calls keep alive, if any.
_deadline: ContextVar[float | None] = ContextVar("aiolease_call_deadline", default=None)


@contextmanager
def deadline_first(deadline: float | None) -> Iterator[None]:
    """Calls made inside wait for a request slot in order of ``deadline`` (loop time).

    The heartbeat wraps each renewal in it with the lease's local deadline, so that past
    capacity the lease closest to being lost is renewed first. ``None``: in order of arrival.
    """
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


class Slots:
    """At most ``size`` holders at once; waiters served earliest deadline first.

    A waiter without a deadline (acquisitions, releases, undos, reads, renewals called
    directly) is served as if its deadline were :data:`NO_DEADLINE_WAIT` after it queued: past
    capacity a renewal about to be lost still goes first, but a stream of renewals with time
    to spare never starves a release. Ties go in order of arrival. A cancelled waiter is
    dropped lazily (skipped when its turn comes), so cancelling many at once stays linear.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._queued = 0  # waiters in the heap not yet granted or cancelled
        self._order = itertools.count()

    async def acquire(self) -> None:
        """Wait for a slot (fast path: a free slot and nobody queued)."""
        if self._free > 0 and not self._queued:
            self._free -= 1
            return
        loop = asyncio.get_running_loop()
        deadline = _deadline.get()
        if deadline is None:
            deadline = loop.time() + NO_DEADLINE_WAIT
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._waiters, (deadline, next(self._order), future))
        self._queued += 1
        # A slot may be free while only cancelled waiters, not yet unwound, were queued.
        self._dispatch()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # granted just as it was cancelled: pass the slot on
            else:
                self._cancelled(future)
            raise

    def release(self) -> None:
        """Hand the slot to the most urgent waiter, or free it."""
        self._free += 1
        self._dispatch()

    def _dispatch(self) -> None:
        while self._free > 0 and self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if future.done():
                continue  # cancelled: counted out by its own unwinding
            self._free -= 1
            self._queued -= 1
            future.set_result(None)

    def _cancelled(self, future: asyncio.Future[None]) -> None:
        """A waiter gave up before its grant: count it out; its entry is skipped later."""
        if not future.done():
            future.cancel()
        self._queued -= 1
        if len(self._waiters) > 2 * self._queued + 64:
            # Mostly dead entries (a burst of timeouts): rebuild once, amortised linear.
            self._waiters = [entry for entry in self._waiters if not entry[2].done()]
            heapq.heapify(self._waiters)


class Retried:
    """An ``on_retry`` callback that remembers it was called: an attempt was retried, so an
    earlier one whose answer was lost may have landed, and a refusal may be of our own write."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen = False

    def __call__(self) -> None:
        self.seen = True


class Calls:
    """Sends the table's requests: at most ``max_in_flight`` at once, each retried if transient.

    Requests beyond the client's connection pool would only queue inside aiohttp, where its
    timeouts count the wait; they queue here instead, earliest deadline first (:class:`Slots`).
    """

    def __init__(
        self, client: Any, schema: Schema, *, max_attempts: int, max_in_flight: int | None
    ) -> None:
        if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, not {max_attempts!r}")
        if max_in_flight is None:
            config = getattr(getattr(client, "meta", None), "config", None)
            max_in_flight = getattr(config, "max_pool_connections", None) or 10
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ValueError(f"max_in_flight must be an int >= 1, not {max_in_flight!r}")
        self.client = client
        self.schema = schema
        self.max_attempts = max_attempts
        self._slots = Slots(max_in_flight)
        attempts = client_attempts(client)
        if attempts > 1:
            # A retry inside botocore is invisible here: a write whose first answer was lost
            # and that botocore resent looks refused (ResponseMetadata.RetryAttempts is the
            # only trace, which the rules check), and every retry stretches a call that the
            # locker's deadline must bound.
            get_logger().warning(
                "the DynamoDB client for table %r retries by itself (up to %d attempts); "
                "lease writes are retried by aiolease within their deadline: configure the "
                "client with retries={'total_max_attempts': 1} or use LockStore.connect()",
                schema.table_name,
                attempts,
            )

    async def call(
        self,
        operation: str,
        request: Request | Callable[[], Request],
        *,
        lease_id: str | None = None,
        expect: Collection[str] = (),
        on_retry: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Run one DynamoDB call (``operation``: the client's method) with retries.

        A callable ``request`` is built once a request slot is held, just before the first
        attempt, and resent as built: that is where a write stamps its send time and its
        expiry, so that time spent queueing behind other requests is not charged to the lease.

        Codes in ``expect`` raise :class:`Expected` (carrying the ``ALL_OLD`` item, if any);
        transient errors are retried, then raised as :class:`LeaseUnavailableError`; the rest
        become :class:`LeaseStoreError`. ``on_retry`` runs before each retry.
        """
        built = None if callable(request) else request
        for attempt in range(1, self.max_attempts + 1):
            try:
                await self._slots.acquire()
                try:
                    if built is None:
                        assert callable(request)
                        built = request()
                    response: dict[str, Any] = await getattr(self.client, operation)(**built)
                    return response
                finally:
                    self._slots.release()
            except (asyncio.CancelledError, LeaseError, Expected):
                raise
            except Exception as exc:
                code = error_code(exc)
                if code is not None and code in expect:
                    raise Expected.of(code, exc) from None
                if not is_transient(exc):
                    raise store_error(self.schema, exc, lease_id) from exc
                if attempt == self.max_attempts:
                    raise LeaseUnavailableError(
                        f"DynamoDB table {self.schema.table_name!r} unavailable after {attempt} "
                        f"attempt(s): {short(exc)}",
                        lease_id=lease_id,
                    ) from exc
                get_logger().debug(
                    "transient error on %s (attempt %d of %d): %s",
                    self.schema.table_name,
                    attempt,
                    self.max_attempts,
                    short(exc),
                )
                if on_retry is not None:
                    on_retry()
                delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
                await asyncio.sleep(random.uniform(0, delay))
        raise AssertionError("unreachable")  # pragma: no cover
