"""LockStore: the lease table's rules, one public coroutine per row of the contract.

Each coroutine states its rule and leaves the DynamoDB wire format to :mod:`._wire`, the
writes' reconciliation to :mod:`._acquire`, :mod:`._renew` and :mod:`._release`, finding
candidates to the table layout (:mod:`._layout`) and administration to :mod:`._admin`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing, asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from . import _acquire, _admin, _release, _renew
from ._clock import Clock, as_clock
from ._connect import lease_client
from ._layout import DEFAULT_BUCKETS, IndexedLayout, TableLayout, layout_for
from ._sessions_store import SessionMethods
from ._table import Table
from ._tasks import TaskOwner
from ._types import (
    Lease,
    LeaseItem,
    LeaseRequest,
    check_expect,
    check_lease,
    refuse_session_row,
)
from ._wire import requests, rows
from ._wire.calls import Calls
from ._wire.schema import Schema

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = ["LockStore"]

_T = TypeVar("_T")

# aclose() waits this long for cleanups that outlived their call: longer than each one's own
# bound (an undo's 5 s; a locker's release: 1 s to stop its heartbeat, then at most 5 s).
_CLOSE_TIMEOUT = 7.0
# What is still running then is cancelled and given this long to unwind.
_UNWIND_TIME = 0.5


class _Fixed(Generic[_T]):
    """A store's configuration, read through ``path``: fixed when the store is made.

    Reads and writes must agree on every name: a reassigned name would desynchronise them.
    """

    def __init__(self, path: str) -> None:
        self._path = path.split(".")

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, store: LockStore, owner: type | None = None) -> _T:
        value: Any = store
        for part in self._path:
            value = getattr(value, part)
        return cast(_T, value)

    def __set__(self, store: LockStore, value: object) -> None:
        raise AttributeError(f"{self._name} is fixed when the store is made; make another store")


class _Configuration:
    """A store's configuration, read-only (reads and writes must agree on every name)."""

    _table: Table
    _layout: TableLayout
    _buckets: int

    @property
    def client(self) -> DynamoDBClient:
        """The DynamoDB client the store calls (never closed by it); replaceable, by a proxy."""
        client: DynamoDBClient = self._table.calls.client
        return client

    @client.setter
    def client(self, client: DynamoDBClient) -> None:
        self._table.calls.client = client

    table_name: _Fixed[str] = _Fixed("_table.schema.table_name")
    hash_key: _Fixed[str] = _Fixed("_table.schema.hash_key")
    lessee_attribute: _Fixed[str] = _Fixed("_table.schema.lessee_attribute")
    until_attribute: _Fixed[str] = _Fixed("_table.schema.until_attribute")
    token_attribute: _Fixed[str] = _Fixed("_table.schema.token_attribute")
    duration_attribute: _Fixed[str] = _Fixed("_table.schema.duration_attribute")
    bucket_attribute: _Fixed[str] = _Fixed("_table.schema.bucket_attribute")
    session_attribute: _Fixed[str] = _Fixed("_table.schema.session_attribute")
    session_until_attribute: _Fixed[str] = _Fixed("_table.schema.session_until_attribute")

    index_name: _Fixed[str | None] = _Fixed("_layout.index_name")
    buckets: _Fixed[int] = _Fixed("_buckets")
    max_attempts: _Fixed[int] = _Fixed("_table.calls.max_attempts")

    @property
    def indexed(self) -> bool:
        """Whether this store uses the indexed layout (``index_name`` was given)."""
        return self._layout.index_name is not None

    @property
    def clock(self) -> Clock:
        """The clock expiries are written and judged by; lockers on this store read it too."""
        return self._table.clock

    @property
    def tasks(self) -> TaskOwner:
        """The owner of work that outlived its call (undos, lockers' detached releases)."""
        return self._table.tasks


class LockStore(_Configuration, SessionMethods):
    """The lease table: registers items and takes, renews and releases leases on them.

    Every write is a single conditional ``UpdateItem``; names and values always travel in
    ``ExpressionAttributeNames``/``ExpressionAttributeValues``. Transient errors are retried
    up to ``max_attempts`` times with jittered backoff, then raised as
    :class:`LeaseUnavailableError`. The store never closes a client it was given. The
    table's names are fixed at construction (read-only attributes).

    Every acquiring or renewing write also stores the holder's lease duration in
    ``duration_attribute`` (a map ``{"ms": N, "until": N}``: the duration in milliseconds and
    the ``LeaseUntil`` written with it), which the observed-expiry takeover mode reads. The
    copy of ``LeaseUntil`` ties the duration to the write that stored it: a Go worker taking
    the row over rewrites ``LeaseUntil`` but not this map, so its stale duration is ignored.

    ``index_name`` selects the indexed layout (docs/scaling.md): rows carry a
    ``bucket_attribute`` (a hash of the ID into ``buckets``) and a global secondary index
    on (bucket, ``LeaseUntil``) lets :meth:`find_available` read only candidates.
    ``clock`` is the wall clock (epoch ns) expiries are written and judged by, or a
    ``Clock`` with ``wall_ns()`` and ``monotonic()``.
    """

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        hash_key: str = "LeaseID",
        *,
        lessee_attribute: str = "ProcessID",
        until_attribute: str = "LeaseUntil",
        token_attribute: str = "LeaseToken",
        duration_attribute: str = "LeaseDuration",
        index_name: str | None = None,
        buckets: int = DEFAULT_BUCKETS,
        bucket_attribute: str = "LeaseBucket",
        session_attribute: str = "LeaseSession",
        session_until_attribute: str = "LeaseSessionUntil",
        max_attempts: int = 3,
        max_in_flight: int | None = None,
        clock: Clock | Callable[[], int] = time.time_ns,
    ) -> None:
        if client is None or not hasattr(client, "update_item"):
            raise TypeError(
                f"client must be an aiobotocore DynamoDB client, not {type(client).__name__}"
            )
        names = (lessee_attribute, until_attribute, token_attribute, duration_attribute)
        schema = Schema(
            table_name,
            hash_key,
            *names,
            bucket_attribute=bucket_attribute,
            session_attribute=session_attribute,
            session_until_attribute=session_until_attribute,
        )
        self._buckets = buckets
        self._layout = layout_for(schema, index_name, buckets)
        calls = Calls(client, schema, max_attempts=max_attempts, max_in_flight=max_in_flight)
        tasks = TaskOwner(
            f"cleanup(s) on table {table_name!r}", "their rows stay held until they expire"
        )
        self._table = Table(schema, calls, as_clock(clock), tasks)

    def __repr__(self) -> str:
        return f"LockStore(table_name={self.table_name!r}, hash_key={self.hash_key!r})"

    # -- connecting ---------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        table_name: str,
        hash_key: str = "LeaseID",
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        session: Any = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        max_pool_connections: int = 50,
        **store_options: Any,
    ) -> AsyncIterator[LockStore]:
        """Open a DynamoDB client configured for leases, yield a store on it, close it on exit.

        botocore's own retries are off and its timeouts short: the store and the locker
        retry themselves within the lease's deadline. It skips client-side parameter
        validation (the server refuses a malformed request of yours on ``store.client``)
        and sends a fixed User-Agent. ``session``: an optional ``aioboto3.Session``.
        """
        async with lease_client(
            table_name,
            hash_key,
            endpoint_url=endpoint_url,
            region_name=region_name,
            session=session,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
        ) as client:
            store = cls(client, table_name, hash_key, **store_options)
            try:
                yield store
            finally:
                await store.aclose()

    async def aclose(self) -> None:
        """Wait (bounded) for cleanups that outlived their call, then cancel what is left.

        Those are undos of cancelled acquisitions and the lockers' releases that a
        cancellation detached from their scope. :meth:`connect` calls it before closing its
        client, so that no cleanup runs on a closed client. The store stays usable.
        """
        for retry in list(self._table.late_undos):
            retry.cancel()  # a late undo waits seconds between tries: never waited for
        await self._table.tasks.aclose(_CLOSE_TIMEOUT, _UNWIND_TIME)

    # -- the table ----------------------------------------------------------------------

    async def create_table(self, *, timeout: float = 60.0) -> None:
        """Create the table (on-demand billing) and wait until it is active.

        An existing table with this hash key is fine; one with another key schema raises
        :class:`LeaseStoreError`. With ``index_name`` the table is made with the index of the
        indexed layout; an existing table without it is left alone (``obtain_lease`` scans
        until :meth:`add_index` has added it).
        """
        await _admin.create_table(self._table, self._layout, timeout)

    async def describe_table(self) -> dict[str, Any]:
        """The table's description; :class:`LeaseStoreError` if it is missing or keyed otherwise."""
        return await self._table.describe()

    async def add_index(self, *, timeout: float | None = None) -> None:
        """Add the index of the indexed layout to an existing table and wait until it is active.

        For migrating a table made without it (see docs/scaling.md); an index that exists
        already is fine. On DynamoDB, building the index of a large table takes minutes or
        more: ``timeout`` (seconds, None: no limit) bounds the wait.
        """
        await _admin.add_index(self._table, self._indexed("add_index()"), timeout)

    async def backfill_buckets(self, *, concurrency: int = 8) -> int:
        """Write the bucket attribute on every row that lacks it (or has a wrong one).

        For rows registered before the table had the indexed layout, or by other tools (Go
        workers register rows by hand): the index never returns a row without a bucket.
        Safe while leases are in use: it changes nothing but the bucket, and only on rows
        that exist. Returns the number of rows it updated.
        """
        layout = self._indexed("backfill_buckets()")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, not {concurrency!r}")
        return await _admin.backfill_buckets(self._table, layout, concurrency)

    def bucket_of(self, lease_id: str) -> int:
        """The bucket ``add_item`` writes for ``lease_id``: a stable hash of its UTF-8 bytes.

        ``int.from_bytes(blake2b(id_utf8, digest_size=8).digest(), "big") % buckets``, so
        any tool (or language) that registers rows can compute it too.
        """
        self._table.schema.key(lease_id)  # validates the ID
        return requests.bucket_of(lease_id, self._buckets)

    # -- items --------------------------------------------------------------------------

    async def add_item(self, lease_id: str, attributes: Mapping[str, Any] | None = None) -> bool:
        """Register a leasable item, free, with ``LeaseUntil`` 0 and optional user attributes.

        Returns ``True`` if it created the row, ``False`` if the row existed (left untouched).
        In the indexed layout the row also gets its bucket (see :meth:`bucket_of`). After an
        attempt whose answer was lost, a row with this call's attributes (and bucket) counts
        as created by it, whatever lease was taken on it since (so an identical row registered
        by someone else in that instant would too: the one ambiguity left).
        """
        return await _admin.add_item(self._table, self._layout, lease_id, attributes)

    async def get_item(
        self, lease_id: str, *, consistent_read: bool = True, projection_only: bool = False
    ) -> LeaseItem | None:
        """Read one row (strongly consistent by default); ``None`` if there is no such item.

        ``projection_only`` reads just the bookkeeping, leaving ``attributes`` empty.
        """
        self._table.schema.key(lease_id)
        return await self._table.get_item(
            lease_id, consistent_read=consistent_read, projection_only=projection_only
        )

    async def list_lease_ids(self) -> list[str]:
        """Every item's ID, across all scan pages (the Go package's ``ListLeaseIDs``)."""
        return [item.lease_id async for item in self.scan(projection_only=True)]

    async def scan(
        self,
        *,
        available: bool = False,
        max_clock_skew: float = 0.0,
        projection_only: bool = False,
        consistent_read: bool = False,
        page_size: int | None = None,
        leasable_only: bool | None = None,
    ) -> AsyncGenerator[LeaseItem, None]:
        """Yield every row as a :class:`LeaseItem`, page after page.

        With ``available=True`` only rows that look free or expired (``LeaseUntil`` older
        than now minus ``max_clock_skew``) are returned: candidates, since another worker
        may take them before you do. ``projection_only`` reads just the bookkeeping.
        ``leasable_only`` (default: as ``available``) skips rows no acquisition could take
        (a malformed ``LeaseToken``), logging each once. Rows without the configured hash key
        mean the table is keyed otherwise: :class:`LeaseStoreError` naming both keys.
        """
        request = requests.scan(
            self._table.schema,
            cutoff_ns=self._table.cutoff_ns(max_clock_skew) if available else None,
            projection_only=projection_only,
            consistent_read=consistent_read,
            page_size=page_size,
        )
        skip = available if leasable_only is None else leasable_only
        async with aclosing(self._table.pages("scan", request)) as pages:
            async for page in pages:
                for item in self._table.items(page, leasable_only=skip):
                    yield item

    async def find_available(
        self, *, max_clock_skew: float = 0.0, limit: int = 64, session_held: bool = False
    ) -> list[LeaseItem]:
        """Up to ``limit`` rows that look free or expired: candidates for an acquisition.

        Indexed layout: queries the index's buckets in random order for rows whose
        ``LeaseUntil`` is older than now minus ``max_clock_skew`` (free rows carry 0), reading
        only such rows, so the cost does not grow with the table. Otherwise, or while the
        index does not exist yet, a filtered scan. Either read is eventually consistent and
        the rows may be taken by others meanwhile: only the conditional write decides.
        Items held under a session only if none looks free or expired (``session_held``: only).
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an int >= 1, not {limit!r}")
        cutoff = self._table.cutoff_ns(max_clock_skew)
        if session_held:
            return await self._layout.find_session_held(self._table, limit)
        return await self._layout.find_available(self._table, cutoff, limit)

    def expired(self, item: LeaseItem, max_clock_skew: float) -> bool:
        """The clock rule: ``item`` is free, or its ``LeaseUntil`` is older than this store's
        clock minus ``max_clock_skew``. Only a hint: the conditional write decides."""
        return item.lessee_id is None or item.until_ns < self._table.cutoff_ns(max_clock_skew)

    # -- leases -------------------------------------------------------------------------

    async def lease(
        self,
        lease_id: str,
        request: LeaseRequest,
        until: datetime | None = None,
        *,
        max_clock_skew: float = 0.0,
    ) -> Lease:
        """Acquire ``lease_id``, or renew it if this lessee ID holds it already (Go's ``Lease``).

        For code ported from the Go package: prefer :meth:`acquire` (never re-enters a lease
        held under the same ID) or ``Locker.lease()``.

        Succeeds when the row exists and is free, expired (``LeaseUntil`` older than now
        minus ``max_clock_skew``), or held by this lessee. A fresh acquisition raises the
        fencing token; a renewal keeps it. Raises :class:`LeaseNotObtainedError` otherwise.
        """
        outcome = await _acquire.acquire(
            self._table, lease_id, request, until, max_clock_skew, None
        )
        if isinstance(outcome, Lease):
            return outcome
        schema = self._table.schema
        if (
            outcome is not None
            and rows.string(outcome, schema.lessee_attribute) == request.lessee_id
            # An item of a session lives by its session: never renewed on its own.
            and rows.string(outcome, schema.session_attribute) is None
        ):
            # Already ours: renew it under the token we hold, so a renewal never passes over
            # someone else's tenure (the condition pins the token we just read).
            held = rows.lease(schema, lease_id, request, outcome, sent_at=0.0)
            return await self._renew(held, until, return_attributes=True)
        raise self._table.not_obtained(lease_id, outcome)

    async def acquire(
        self,
        lease_id: str,
        request: LeaseRequest,
        until: datetime | None = None,
        *,
        max_clock_skew: float | None = 0.0,
        expect: LeaseItem | None = None,
        session: Lease | None = None,
    ) -> Lease:
        """Take ``lease_id`` only if it is free or expired: never re-enters a lease held by anyone.

        The pool-safe form of :meth:`lease` that the locker uses, so that two tasks sharing a
        lessee ID never both hold one item. An acquisition whose response was lost is
        recognised as ours on retry; one cancelled (or unanswered) after it was sent is
        undone, if it landed, before this call returns (shielded, bounded).

        A held row counts as expired when its ``LeaseUntil`` is older than now minus
        ``max_clock_skew`` (``None``: never by the clock). With ``expect`` (a row as read
        earlier) a held row is taken only if it is still exactly in that state (lessee,
        token and ``LeaseUntil``; a renewal always changes ``LeaseUntil``) *and*, unless
        ``max_clock_skew`` is ``None``, expired by the clock; a free row only with the token
        read, so that a late duplicate of a timed-out request cannot re-take it.

        Under a ``session`` (from ``start_session()``, same lessee) the item is held while
        the session lives: the Lease has the session's ``until``, and needs no renewal.
        """
        outcome = await _acquire.acquire(
            self._table, lease_id, request, until, max_clock_skew, expect, session
        )
        if isinstance(outcome, Lease):
            return outcome
        raise self._table.not_obtained(lease_id, outcome)

    async def renew(self, lease: Lease, until: datetime | None = None) -> Lease:
        """Extend ``lease`` to ``until`` (default: now + its duration) and return the new lease.

        Only if the row still holds this lessee **and** this fencing token: otherwise
        :class:`LeaseLostError`, even if the same lessee holds it again under a newer token.
        """
        return await self._renew(lease, until, return_attributes=False)

    async def release(self, lease: Lease) -> bool:
        """Free the item if ``lease`` (lessee and token) still holds it.

        Returns ``True`` if it freed it, ``False`` if the lease no longer held it. Keeps the
        row, its fencing token and the user's attributes; never frees another holder's lease.
        When an answer was lost and the row has passed to another holder since, the outcome
        cannot be known: then it is ``True`` while the lease had not expired (nobody could
        have taken the row unless it was freed), see :meth:`release_outcome`.
        """
        outcome = await self.release_outcome(lease)
        if outcome is None:
            return lease.until_ns > self._table.clock.wall_ns()
        return outcome

    async def release_outcome(self, lease: Lease) -> bool | None:
        """:meth:`release`, telling an undecidable outcome apart: ``None``.

        ``None`` means an attempt's answer was lost and a retry found the row held by a newer
        holder: the lost attempt may have freed the row (and the newer holder took it after
        it), or the row may have been taken from this lease before. The locker uses this so
        that such a release is neither reported as a loss nor as a clean release.
        """
        check_lease(lease)
        self._table.schema.key(lease.lease_id)
        return await _release.release(self._table, lease)

    async def force_release(
        self, lease_id: str, *, expect: LeaseItem | None = None
    ) -> LeaseItem | None:
        """An operator's release of a stuck item; keeps the row and its token.

        Frees the row only in the state it was read in (holder and token): with ``expect``
        (the row as shown to the operator) it raises :class:`LeaseNotObtainedError` if the row
        has changed since; without, it reads the row first. Returns the row as it was before
        its own write (never the state after it, even when an answer was lost), or ``None``
        if there is no such item. A live holder notices at its next renewal, not at once.
        """
        self._table.schema.key(lease_id)
        check_expect(expect, lease_id)
        return await _release.force_release(self._table, lease_id, expect)

    async def _renew(
        self, lease: Lease, until: datetime | None, *, return_attributes: bool
    ) -> Lease:
        check_lease(lease)
        self._table.schema.key(lease.lease_id)
        if lease._session is not None:
            raise ValueError(f"{lease.lease_id!r} is held under a session: renew the session")
        refuse_session_row(lease.lease_id, "renew it with renew_session()")
        return await _renew.renew(self._table, lease, until, return_attributes=return_attributes)

    def _indexed(self, what: str) -> IndexedLayout:
        if not isinstance(self._layout, IndexedLayout):
            raise ValueError(f"{what} needs a store configured with index_name=")
        return self._layout
