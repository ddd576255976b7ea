"""LockStore: the lease table's conditional writes and scans (the only module speaking DynamoDB)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import math
import random
import re
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from ._errors import (
    LeaseError,
    LeaseLostError,
    LeaseNotObtainedError,
    LeaseStoreError,
    LeaseUnavailableError,
)
from ._log import get_logger, lease_fields
from ._types import (
    MAX_DURATION,
    Lease,
    LeaseItem,
    LeaseRequest,
    check_clock_skew,
    datetime_to_ns,
    ns_to_datetime,
)

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = ["LockStore"]

_T = TypeVar("_T")

# DynamoDB's limit on a partition key value (UTF-8 bytes).
MAX_LEASE_ID_BYTES = 2048
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{3,255}$")

# Error codes that say "try again": the request was refused or failed on the server side.
_TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "TransactionConflictException",
        "LimitExceededException",
    }
)
# Error codes that no retry will fix: credentials or permissions.
_ACCESS_CODES = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "MissingAuthenticationTokenException",
        "ExpiredTokenException",
        "IncompleteSignature",
    }
)

# Backoff between the store's own attempts: short, because the locker's deadline bounds the
# total, and jittered so that many renewals failing together do not retry together.
_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 1.0
# How long the undo of a cancelled acquisition may take; the cancelled call waits for it
# this long at most (what is left is awaited by aclose()).
_CLEANUP_TIMEOUT = 5.0
# Rows whose issued LeaseUntil values the store remembers (see _send_times): beyond this the
# least recently written are forgotten, which only costs uniqueness against a clock that
# repeats a value, never safety (renewals are conditioned on the stored expiry anyway).
_MAX_FLOORS = 100_000
# Per row, at most this many unexpired values (writes that landed or may have: a refusal
# answered at the first attempt forgets its value at once; renewals add about one per period).
_MAX_ISSUED = 16
# force_release() without expect reads, then frees conditioned on what it read: this many
# tries if the row keeps changing in between.
_FORCE_RELEASE_ATTEMPTS = 3

# The indexed layout: rows spread over this many index partitions by a hash of their ID.
# 16 keeps an obtain on a busy table to at most 16 small queries, and leaves room for
# 16 x 1,000 lease writes per second before one index partition throttles.
DEFAULT_BUCKETS = 16
# More buckets only make every "nothing free" answer cost more queries.
MAX_BUCKETS = 1024
# After the index was found missing (not created yet, or still backfilling), scan instead
# for this long before asking the index again.
_INDEX_RECHECK = 60.0
# aclose() waits this long for cleanups that outlived their call: longer than each one's own
# bound (an undo's 5 s; a locker's release: 1 s to stop its heartbeat, then at most 5 s).
_CLOSE_TIMEOUT = 7.0
# What is still running then is cancelled and given this long to unwind.
_UNWIND_TIME = 0.5


def _client_error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        error = response.get("Error")
        if isinstance(error, Mapping):
            code = error.get("Code")
            return str(code) if code is not None else None
    return None


def _http_status(exc: BaseException) -> int:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        meta = response.get("ResponseMetadata")
        if isinstance(meta, Mapping):
            return int(meta.get("HTTPStatusCode") or 0)
    return 0


def _is_transient(exc: BaseException) -> bool:
    """True for errors that may go away on retry (throttling, 5xx, timeouts, connections)."""
    import botocore.exceptions as bce

    code = _client_error_code(exc)
    if code is not None:
        return code in _TRANSIENT_CODES or _http_status(exc) >= 500
    if isinstance(exc, bce.NoCredentialsError | bce.NoRegionError | bce.ParamValidationError):
        return False
    # Connection refused/reset, read and connect timeouts: botocore wraps them in
    # HTTPClientError subclasses; raw aiohttp/OS errors can surface too.
    return isinstance(exc, bce.HTTPClientError | bce.ConnectionError | OSError | TimeoutError) or (
        type(exc).__module__.startswith("aiohttp")
    )


def _as_dynamodb_value(value: Any) -> Any:
    """Floats become Decimals (boto3's serializer refuses floats); containers recursively."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {k: _as_dynamodb_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_dynamodb_value(v) for v in value]
    if isinstance(value, set | frozenset):
        return {_as_dynamodb_value(v) for v in value}
    return value


class LockStore:
    """The lease table: registers items and takes, renews and releases leases on them.

    Every write is a single conditional ``UpdateItem``; names and values always travel in
    ``ExpressionAttributeNames``/``ExpressionAttributeValues``. Transient errors are retried
    up to ``max_attempts`` times with jittered backoff, then raised as
    :class:`LeaseUnavailableError`. The store never closes a client it was given.

    Every acquiring or renewing write also stores the holder's lease duration in
    ``duration_attribute`` (a map ``{"ms": N, "until": N}``: the duration in milliseconds and
    the ``LeaseUntil`` written with it), which the observed-expiry takeover mode reads. The
    copy of ``LeaseUntil`` ties the duration to the write that stored it: a Go worker taking
    the row over rewrites ``LeaseUntil`` but not this map, so its stale duration is ignored.

    ``index_name`` selects the indexed layout (docs/scaling.md): rows carry a
    ``bucket_attribute`` (a hash of the ID into ``buckets``) and a global secondary index
    on (bucket, ``LeaseUntil``) lets :meth:`find_available` read only candidates.
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
        max_attempts: int = 3,
        max_in_flight: int | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if client is None or not hasattr(client, "update_item"):
            raise TypeError(
                f"client must be an aiobotocore DynamoDB client, not {type(client).__name__}"
            )
        if not isinstance(table_name, str):
            raise TypeError(f"table_name must be a str, not {type(table_name).__name__}")
        if not _TABLE_NAME.match(table_name):
            raise ValueError(
                f"table_name {table_name!r} is not a valid DynamoDB table name "
                "(3-255 characters of letters, digits, '_', '-', '.')"
            )
        names = {
            "hash_key": hash_key,
            "lessee_attribute": lessee_attribute,
            "until_attribute": until_attribute,
            "token_attribute": token_attribute,
            "duration_attribute": duration_attribute,
            "bucket_attribute": bucket_attribute,
        }
        for arg, name in names.items():
            if not isinstance(name, str):
                raise TypeError(f"{arg} must be a str, not {type(name).__name__}")
            if not name or len(name.encode()) > 255:
                raise ValueError(f"{arg} must be 1 to 255 bytes long, not {name!r}")
        if len(set(names.values())) != len(names):
            raise ValueError(f"hash_key and the bookkeeping attribute names must differ: {names}")
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning epoch ns, not {clock!r}")
        if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, not {max_attempts!r}")
        if index_name is not None and (
            not isinstance(index_name, str) or not _TABLE_NAME.match(index_name)
        ):
            raise ValueError(
                f"index_name {index_name!r} is not a valid DynamoDB index name "
                "(3-255 characters of letters, digits, '_', '-', '.')"
            )
        if (
            not isinstance(buckets, int)
            or isinstance(buckets, bool)
            or not 1 <= buckets <= MAX_BUCKETS
        ):
            raise ValueError(f"buckets must be an int from 1 to {MAX_BUCKETS}, not {buckets!r}")
        if max_in_flight is None:
            config = getattr(getattr(client, "meta", None), "config", None)
            max_in_flight = getattr(config, "max_pool_connections", None) or 10
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ValueError(f"max_in_flight must be an int >= 1, not {max_in_flight!r}")

        self.client = client
        self.table_name = table_name
        self.hash_key = hash_key
        self.lessee_attribute = lessee_attribute
        self.until_attribute = until_attribute
        self.token_attribute = token_attribute
        self.duration_attribute = duration_attribute
        self.index_name = index_name
        self.buckets = buckets
        self.bucket_attribute = bucket_attribute
        self.max_attempts = max_attempts
        self._clock = clock
        # Requests beyond the client's connection pool would only queue inside aiohttp, where
        # its timeouts count the wait; queue them here instead, in order.
        self._slots = asyncio.Semaphore(max_in_flight)
        # The bucket counts as bookkeeping in both layouts: never a user attribute.
        self._bookkeeping = frozenset(
            {
                lessee_attribute,
                until_attribute,
                token_attribute,
                duration_attribute,
                bucket_attribute,
            }
        )
        self._serializer = TypeSerializer()
        self._deserializer = TypeDeserializer()
        self._names = {
            "#k": hash_key,
            "#l": lessee_attribute,
            "#u": until_attribute,
            "#t": token_attribute,
        }
        # Kept apart from _names, which some writes pass whole: DynamoDB refuses unused names.
        self._duration_names = {"#d": duration_attribute}
        # Per row, the unexpired LeaseUntil values this store issued for writes that landed
        # or may have: a new write of the row never reuses one (it goes just above on an exact
        # collision), so a lost-answer retry and an undo recognise their own write. Neither
        # other rows nor other values of the row stretch it.
        self._floors: OrderedDict[str, list[int]] = OrderedDict()
        # Rows found with a malformed LeaseToken: read before any further write, logged once.
        self._malformed: set[str] = set()
        self._warned_malformed: set[str] = set()
        self._key_checked = False
        # Loop time until which find_available scans because the index was found missing.
        self._scan_until = 0.0
        self._background: set[asyncio.Task[Any]] = set()
        attempts = _client_attempts(client)
        if attempts > 1:
            # A retry inside botocore is invisible here: a write whose first answer was lost
            # and that botocore resent looks refused (ResponseMetadata.RetryAttempts is the
            # only trace, which the store checks), and every retry stretches a call that the
            # locker's deadline must bound.
            get_logger().warning(
                "the DynamoDB client for table %r retries by itself (up to %d attempts); "
                "lease writes are retried by aiolease within their deadline: configure the "
                "client with retries={'total_max_attempts': 1} or use LockStore.connect()",
                table_name,
                attempts,
            )

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
        retry themselves within the lease's deadline. ``session`` is an optional
        ``aioboto3.Session`` (for a profile or explicit credentials).
        """
        import aioboto3
        import botocore.exceptions as bce
        from aiobotocore.config import AioConfig

        config = AioConfig(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=max_pool_connections,
        )
        try:
            if session is None:
                session = aioboto3.Session()
            if region_name is None and session.region_name is None and endpoint_url is not None:
                # A local endpoint does not care about the region, but botocore insists on one.
                region_name = "us-east-1"
            client_cm = session.client(
                "dynamodb", endpoint_url=endpoint_url, region_name=region_name, config=config
            )
            client = await client_cm.__aenter__()
        except bce.NoRegionError as exc:
            raise LeaseStoreError(
                "no AWS region configured: pass region_name= or set AWS_DEFAULT_REGION",
                table=table_name,
                hash_key=hash_key,
            ) from exc
        except (ValueError, bce.BotoCoreError) as exc:  # a malformed endpoint_url, no profile
            raise LeaseStoreError(
                f"cannot open a DynamoDB client: {exc}", table=table_name, hash_key=hash_key
            ) from exc
        try:
            store = cls(client, table_name, hash_key, **store_options)
            try:
                yield store
            finally:
                await store.aclose()
        finally:
            await client_cm.__aexit__(None, None, None)

    async def aclose(self) -> None:
        """Wait (bounded) for cleanups that outlived their call, then cancel what is left.

        Those are undos of cancelled acquisitions and the lockers' releases that a
        cancellation detached from their scope. :meth:`connect` calls it before closing its
        client, so that no cleanup runs on a closed client. The store stays usable.
        """
        pending = set(self._background)
        if not pending:
            return
        _, pending = await asyncio.wait(pending, timeout=_CLOSE_TIMEOUT)
        if pending:
            get_logger().warning(
                "%d cleanup(s) on table %r still running after %.1f s; cancelling them "
                "(their rows stay held until they expire)",
                len(pending),
                self.table_name,
                _CLOSE_TIMEOUT,
            )
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=_UNWIND_TIME)

    def _adopt(self, task: asyncio.Task[Any]) -> None:
        """Own a locker's cleanup task: :meth:`aclose` (and so ``connect()``) waits for it."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the indexed layout ---------------------------------------------------------------

    @property
    def indexed(self) -> bool:
        """Whether this store uses the indexed layout (``index_name`` was given)."""
        return self.index_name is not None

    def bucket_of(self, lease_id: str) -> int:
        """The bucket ``add_item`` writes for ``lease_id``: a stable hash of its UTF-8 bytes.

        ``int.from_bytes(blake2b(id_utf8, digest_size=8).digest(), "big") % buckets``, so
        any tool (or language) that registers rows can compute it too.
        """
        self._key(lease_id)  # validates the ID
        digest = hashlib.blake2b(lease_id.encode("utf-8", "surrogatepass"), digest_size=8)
        return int.from_bytes(digest.digest(), "big") % self.buckets

    def _index_definition(self) -> dict[str, Any]:
        assert self.index_name is not None
        return {
            "IndexName": self.index_name,
            "KeySchema": [
                {"AttributeName": self.bucket_attribute, "KeyType": "HASH"},
                {"AttributeName": self.until_attribute, "KeyType": "RANGE"},
            ],
            # The lessee and token ride along (a few bytes per row: the index entry is
            # rewritten on every acquire and renewal anyway, since LeaseUntil is its sort
            # key), so that find_available returns complete snapshots, not bare keys.
            "Projection": {
                "ProjectionType": "INCLUDE",
                "NonKeyAttributes": [self.lessee_attribute, self.token_attribute],
            },
        }

    def _index_attribute_definitions(self) -> list[Any]:
        return [
            {"AttributeName": self.bucket_attribute, "AttributeType": "N"},
            {"AttributeName": self.until_attribute, "AttributeType": "N"},
        ]

    async def add_index(self, *, timeout: float | None = None) -> None:
        """Add the index of the indexed layout to an existing table and wait until it is active.

        For migrating a table made without it (see docs/scaling.md); an index that exists
        already is fine. On DynamoDB, building the index of a large table takes minutes or
        more: ``timeout`` (seconds, None: no limit) bounds the wait.
        """
        if self.index_name is None:
            raise ValueError("add_index() needs a store configured with index_name=")
        table = await self.describe_table()
        if not self._find_index(table):
            with contextlib.suppress(_Expected):  # created meanwhile by someone else
                await self._call(
                    lambda: self.client.update_table(
                        TableName=self.table_name,
                        # The table's own key too: moto replaces the definitions with these.
                        AttributeDefinitions=[
                            {"AttributeName": self.hash_key, "AttributeType": "S"},
                            *self._index_attribute_definitions(),
                        ],
                        GlobalSecondaryIndexUpdates=[{"Create": self._index_definition()}],  # type: ignore[typeddict-item]
                    ),
                    expect={"ResourceInUseException"},
                )
        await self._wait_active(timeout, f"index {self.index_name!r} of table")

    async def backfill_buckets(self, *, concurrency: int = 8) -> int:
        """Write the bucket attribute on every row that lacks it (or has a wrong one).

        For rows registered before the table had the indexed layout, or by other tools (Go
        workers register rows by hand): the index never returns a row without a bucket.
        Safe while leases are in use: it changes nothing but the bucket, and only on rows
        that exist. Returns the number of rows it updated.
        """
        if self.index_name is None:
            raise ValueError("backfill_buckets() needs a store configured with index_name=")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, not {concurrency!r}")
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "ProjectionExpression": "#k, #b",
            "ExpressionAttributeNames": {"#k": self.hash_key, "#b": self.bucket_attribute},
        }
        gate = asyncio.Semaphore(concurrency)
        updated = 0

        async def fix(lease_id: str, bucket: int) -> None:
            nonlocal updated
            async with gate:
                try:
                    await self._call(
                        lambda: self.client.update_item(
                            TableName=self.table_name,
                            Key=self._key(lease_id),
                            UpdateExpression="SET #b = :b",
                            ConditionExpression="attribute_exists(#k)",
                            ExpressionAttributeNames={
                                "#k": self.hash_key,
                                "#b": self.bucket_attribute,
                            },
                            ExpressionAttributeValues={":b": {"N": str(bucket)}},
                        ),
                        lease_id=lease_id,
                        expect={"ConditionalCheckFailedException", "ValidationException"},
                    )
                except _Expected as refused:
                    if refused.code == "ValidationException":
                        # DynamoDB refuses a row the index cannot hold (a LeaseUntil that is
                        # not a number): leave it, as the index would, and go on.
                        get_logger().warning(
                            "table %r: cannot give %r a bucket: its %s does not fit the index",
                            self.table_name,
                            lease_id,
                            self.until_attribute,
                        )
                    return  # or deleted meanwhile: nothing to fix
                updated += 1

        while True:
            page = await self._call(lambda: self.client.scan(**params))
            await self._check_rows(page)
            try:
                async with asyncio.TaskGroup() as tg:
                    for raw in page.get("Items", []):
                        lease_id = self._str(raw, self.hash_key)
                        if lease_id is None:
                            continue
                        bucket = self.bucket_of(lease_id)
                        if raw.get(self.bucket_attribute) != {"N": str(bucket)}:
                            tg.create_task(fix(lease_id, bucket))
            except BaseExceptionGroup as group:
                # One clean error, not a group: the first of ours, else a store error.
                raise self._first_error(group) from group
            last = page.get("LastEvaluatedKey")
            if not last:
                return updated
            params["ExclusiveStartKey"] = last

    async def find_available(
        self, *, max_clock_skew: float = 0.0, limit: int = 64
    ) -> list[LeaseItem]:
        """Up to ``limit`` rows that look free or expired: candidates for an acquisition.

        Indexed layout: queries the index's buckets in random order for rows whose
        ``LeaseUntil`` is older than now minus ``max_clock_skew`` (free rows carry 0), reading
        only such rows, so the cost does not grow with the table. Otherwise, or while the
        index does not exist yet, a filtered scan. Either read is eventually consistent and
        the rows may be taken by others meanwhile: only the conditional write decides.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an int >= 1, not {limit!r}")
        cutoff = self._cutoff_ns(max_clock_skew)
        loop = asyncio.get_running_loop()
        if self.index_name is not None and loop.time() >= self._scan_until:
            try:
                return await self._query_available(cutoff, limit)
            except LeaseStoreError as exc:
                if not _is_missing_index(exc.__cause__):
                    raise
                self._scan_until = loop.time() + _INDEX_RECHECK
                get_logger().warning(
                    "table %r: cannot query index %r yet (%s); scanning instead",
                    self.table_name,
                    self.index_name,
                    _short(exc.__cause__),  # type: ignore[arg-type]
                )
        found: list[LeaseItem] = []
        async with contextlib.aclosing(
            self.scan(available=True, max_clock_skew=max_clock_skew)
        ) as items:
            async for item in items:
                found.append(item)
                if len(found) >= limit:
                    break
        return found

    async def _query_available(self, cutoff: int, limit: int) -> list[LeaseItem]:
        found: list[LeaseItem] = []
        order = list(range(self.buckets))
        random.shuffle(order)  # waiters spread over the buckets instead of all reading one
        for bucket in order:
            params: dict[str, Any] = {
                "TableName": self.table_name,
                "IndexName": self.index_name,
                "KeyConditionExpression": "#b = :b AND #u < :cutoff",
                "ExpressionAttributeNames": {
                    "#b": self.bucket_attribute,
                    "#u": self.until_attribute,
                },
                "ExpressionAttributeValues": {
                    ":b": {"N": str(bucket)},
                    ":cutoff": {"N": str(cutoff)},
                },
            }
            while len(found) < limit:
                params["Limit"] = limit - len(found)
                page = await self._call(functools.partial(self.client.query, **params))
                await self._check_rows(page)
                for raw in page.get("Items", []):
                    item = self._item(raw)
                    if item is not None and self._skip_malformed(item.lease_id, raw):
                        continue
                    if item is not None:
                        found.append(item)
                last = page.get("LastEvaluatedKey")
                if not last:
                    break
                params["ExclusiveStartKey"] = last
            if len(found) >= limit:
                break
        return found

    # -- the table ----------------------------------------------------------------------

    async def create_table(self, *, timeout: float = 60.0) -> None:
        """Create the table (on-demand billing) and wait until it is active.

        An existing table with this hash key is fine; one with another key schema raises
        :class:`LeaseStoreError`. With ``index_name`` the table is made with the index of the
        indexed layout; an existing table without it is left alone (``obtain_lease`` scans
        until :meth:`add_index` has added it).
        """
        definitions: list[Any] = [{"AttributeName": self.hash_key, "AttributeType": "S"}]
        extra: dict[str, Any] = {}
        if self.index_name is not None:
            definitions += self._index_attribute_definitions()
            extra["GlobalSecondaryIndexes"] = [self._index_definition()]
        with contextlib.suppress(_Expected):  # already there: its schema is checked below
            await self._call(
                lambda: self.client.create_table(
                    TableName=self.table_name,
                    KeySchema=[{"AttributeName": self.hash_key, "KeyType": "HASH"}],
                    AttributeDefinitions=definitions,
                    BillingMode="PAY_PER_REQUEST",
                    **extra,
                ),
                expect={"ResourceInUseException"},
            )
        await self._wait_active(timeout, "table")

    async def _wait_active(self, timeout: float | None, what: str) -> None:
        """Wait until the table, and the layout's index if the table has it, are active."""
        try:
            async with asyncio.timeout(timeout):
                await self._poll_active()
        except TimeoutError:
            raise LeaseUnavailableError(
                f"{what} {self.table_name!r} not active within {timeout} s; try again later"
            ) from None

    async def _poll_active(self) -> None:
        pause = 0.05
        while True:
            description = await self.describe_table()
            index = self._find_index(description)
            if description.get("TableStatus") == "ACTIVE" and (
                index is None or index.get("IndexStatus", "ACTIVE") == "ACTIVE"
            ):
                if self.index_name is not None and index is None:
                    get_logger().warning(
                        "table %r has no index %r: obtain_lease scans the table; "
                        "add it with LockStore.add_index()",
                        self.table_name,
                        self.index_name,
                    )
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)

    def _find_index(self, table: Mapping[str, Any]) -> dict[str, Any] | None:
        """The layout's index in a table description (checked), or None if it has none."""
        for index in table.get("GlobalSecondaryIndexes", []):
            if index.get("IndexName") != self.index_name:
                continue
            keys = [(k["AttributeName"], k["KeyType"]) for k in index.get("KeySchema", [])]
            wanted = [(self.bucket_attribute, "HASH"), (self.until_attribute, "RANGE")]
            if keys != wanted:
                raise LeaseStoreError(
                    f"table {self.table_name!r}: index {self.index_name!r} has key schema "
                    f"{keys}; the indexed layout needs {wanted}",
                    table=self.table_name,
                    hash_key=self.hash_key,
                )
            return dict(index)
        return None

    async def describe_table(self) -> dict[str, Any]:
        """The table's description; :class:`LeaseStoreError` if it is missing or keyed otherwise."""
        response = await self._call(lambda: self.client.describe_table(TableName=self.table_name))
        described = response.get("Table")
        if not isinstance(described, Mapping):
            raise LeaseStoreError(
                f"table {self.table_name!r} (hash key {self.hash_key!r}): the endpoint answered "
                "DescribeTable without a table description",
                table=self.table_name,
                hash_key=self.hash_key,
            )
        table: dict[str, Any] = dict(described)
        try:
            keys = [(k["AttributeName"], k["KeyType"]) for k in table.get("KeySchema", [])]
            types = {
                a["AttributeName"]: a["AttributeType"]
                for a in table.get("AttributeDefinitions", [])
            }
        except (KeyError, TypeError):
            keys, types = [], {}
        if keys != [(self.hash_key, "HASH")] or types.get(self.hash_key) != "S":
            real = ", ".join(repr(name) for name, _ in keys) or "unknown"
            raise LeaseStoreError(
                f"table {self.table_name!r} is keyed by {real} (key schema {keys}, {types}), "
                f"not by the configured hash_key {self.hash_key!r}: a lease table needs the "
                "string hash key named by hash_key and no sort key",
                table=self.table_name,
                hash_key=self.hash_key,
            )
        return table

    async def add_item(self, lease_id: str, attributes: Mapping[str, Any] | None = None) -> bool:
        """Register a leasable item, free, with ``LeaseUntil`` 0 and optional user attributes.

        Returns ``True`` if it created the row, ``False`` if the row existed (left untouched).
        In the indexed layout the row also gets its bucket (see :meth:`bucket_of`). After an
        attempt whose answer was lost, a row with this call's attributes (and bucket) counts
        as created by it, whatever lease was taken on it since (so an identical row registered
        by someone else in that instant would too: the one ambiguity left).
        """
        key = self._key(lease_id)
        names = {"#k": self.hash_key, "#u": self.until_attribute}
        values: dict[str, Any] = {":zero": {"N": "0"}}
        sets = ["#u = :zero"]
        written: dict[str, Any] = {**key, self.until_attribute: {"N": "0"}}
        if self.index_name is not None:
            names["#b"] = self.bucket_attribute
            values[":b"] = {"N": str(self.bucket_of(lease_id))}
            sets.append("#b = :b")
            written[self.bucket_attribute] = values[":b"]
        for i, (name, value) in enumerate(self._user_attributes(attributes).items()):
            names[f"#a{i}"] = name
            values[f":a{i}"] = value
            sets.append(f"#a{i} = :a{i}")
            written[name] = value
        ambiguous = False

        def note_ambiguous() -> None:
            nonlocal ambiguous
            ambiguous = True

        try:
            await self._call(
                lambda: self.client.update_item(
                    TableName=self.table_name,
                    Key=key,
                    UpdateExpression="SET " + ", ".join(sets),
                    ConditionExpression="attribute_not_exists(#k)",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                ),
                lease_id=lease_id,
                expect={"ConditionalCheckFailedException"},
                on_retry=note_ambiguous,
            )
        except _Expected as failed:
            if not (ambiguous or failed.retried):
                return False
            # An attempt whose answer was lost may have created the row: it is ours if it has
            # our key, attributes and bucket; not the bookkeeping, which a pool worker may
            # have leased since. Residual ambiguity: an identical row registered by someone
            # else in between also reads as ours.
            row = await self._read_row(lease_id, full=True)

            def registered(r: Mapping[str, Any]) -> dict[str, Any]:
                return self._plain(
                    {
                        k: v
                        for k, v in r.items()
                        if k == self.bucket_attribute or k not in self._bookkeeping
                    }
                )

            return row is not None and registered(row) == registered(written)
        return True

    async def get_item(
        self, lease_id: str, *, consistent_read: bool = True, projection_only: bool = False
    ) -> LeaseItem | None:
        """Read one row (strongly consistent by default); ``None`` if there is no such item.

        ``projection_only`` reads just the bookkeeping, leaving ``attributes`` empty.
        """
        key = self._key(lease_id)
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": key,
            "ConsistentRead": consistent_read,
        }
        if projection_only:
            params["ProjectionExpression"] = "#k, #l, #u, #t, #d"
            params["ExpressionAttributeNames"] = {**self._names, **self._duration_names}
        response = await self._call(lambda: self.client.get_item(**params), lease_id=lease_id)
        row = response.get("Item")
        return self._item(row) if row else None

    def expired(self, item: LeaseItem, max_clock_skew: float) -> bool:
        """The clock rule: ``item`` is free, or its ``LeaseUntil`` is older than this store's
        clock minus ``max_clock_skew``. Only a hint: the conditional write decides."""
        return item.lessee_id is None or item.until_ns < self._cutoff_ns(max_clock_skew)

    async def list_lease_ids(self) -> list[str]:
        """Every item's ID, across all scan pages (the seed's ``ListLeaseIDs``)."""
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
        if leasable_only is None:
            leasable_only = available
        params: dict[str, Any] = {"TableName": self.table_name}
        names: dict[str, str] = {}
        if projection_only or available:
            names.update(self._names)
            names.update(self._duration_names)
            params["ProjectionExpression"] = "#k, #l, #u, #t, #d"
        if available:
            names.update(self._names)
            params["FilterExpression"] = (
                "attribute_not_exists(#l) OR (attribute_type(#u, :n) AND #u < :cutoff)"
            )
            params["ExpressionAttributeValues"] = {
                ":cutoff": {"N": str(self._cutoff_ns(max_clock_skew))},
                ":n": {"S": "N"},
            }
        if names:
            params["ExpressionAttributeNames"] = names
        if consistent_read:
            params["ConsistentRead"] = True
        if page_size is not None:
            params["Limit"] = page_size
        while True:
            page = await self._call(lambda: self.client.scan(**params))
            await self._check_rows(page)
            for raw in page.get("Items", []):
                item = self._item(raw)
                if item is None or (leasable_only and self._skip_malformed(item.lease_id, raw)):
                    continue
                yield item
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            params["ExclusiveStartKey"] = last

    # -- leases -------------------------------------------------------------------------

    async def lease(
        self,
        lease_id: str,
        request: LeaseRequest,
        until: datetime | None = None,
        *,
        max_clock_skew: float = 0.0,
    ) -> Lease:
        """Acquire ``lease_id``, or renew it if this lessee holds it already (the seed's ``Lease``).

        Succeeds when the row exists and is free, expired (``LeaseUntil`` older than now
        minus ``max_clock_skew``), or held by this lessee. A fresh acquisition raises the
        fencing token; a renewal keeps it. Raises :class:`LeaseNotObtainedError` otherwise.
        """
        outcome = await self._acquire(lease_id, request, until, max_clock_skew, None)
        if isinstance(outcome, Lease):
            return outcome
        if outcome is not None and self._str(outcome, self.lessee_attribute) == request.lessee_id:
            # Already ours: renew it under the token we hold, so a renewal never passes over
            # someone else's tenure (the condition pins the token we just read).
            held = self._lease(lease_id, request, outcome, sent_at=0.0)
            return await self._renew(held, until, return_attributes=True)
        raise self._not_obtained(lease_id, outcome)

    async def acquire(
        self,
        lease_id: str,
        request: LeaseRequest,
        until: datetime | None = None,
        *,
        max_clock_skew: float | None = 0.0,
        expect: LeaseItem | None = None,
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
        """
        outcome = await self._acquire(lease_id, request, until, max_clock_skew, expect)
        if isinstance(outcome, Lease):
            return outcome
        raise self._not_obtained(lease_id, outcome)

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
            return lease.until_ns > self._clock()
        return outcome

    async def release_outcome(self, lease: Lease) -> bool | None:
        """:meth:`release`, telling an undecidable outcome apart: ``None``.

        ``None`` means an attempt's answer was lost and a retry found the row held by a newer
        holder: the lost attempt may have freed the row (and the newer holder took it after
        it), or the row may have been taken from this lease before. The locker uses this so
        that such a release is neither reported as a loss nor as a clean release.
        """
        self._check_lease(lease)
        key = self._key(lease.lease_id)
        ambiguous = False

        def note_ambiguous() -> None:
            nonlocal ambiguous
            ambiguous = True

        condition, values = self._tenure(lease.lessee_id, lease.fencing_token)
        values[":zero"] = {"N": "0"}
        try:
            await self._call(
                lambda: self.client.update_item(
                    TableName=self.table_name,
                    Key=key,
                    UpdateExpression="REMOVE #l, #d SET #u = :zero",
                    ConditionExpression=condition,
                    ExpressionAttributeNames={
                        **self._names_for("#l", "#u", "#t"),
                        **self._duration_names,
                    },
                    ExpressionAttributeValues=values,
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                ),
                lease_id=lease.lease_id,
                expect={"ConditionalCheckFailedException"},
                on_retry=note_ambiguous,
            )
        except _Expected as failed:
            # Ambiguous: a retry (ours, or botocore's own) after an attempt whose answer was
            # lost, which may have freed the row already.
            if not (ambiguous or failed.retried):
                return False
            old = await self._refused_row(failed, lease.lease_id)
            if old is None:
                return False
            # If that attempt freed the row, the row is free under our token now; a newer
            # holder may have taken it after our lost release, or from us before it.
            token = self._int(old, self.token_attribute, strict=False)
            if self.lessee_attribute not in old:
                return token == lease.fencing_token
            return None if token > lease.fencing_token else False
        return True

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
        key = self._key(lease_id)
        if expect is not None and not isinstance(expect, LeaseItem):
            raise TypeError(f"expect must be a LeaseItem or None, not {type(expect).__name__}")
        if expect is not None and expect.lease_id != lease_id:
            raise ValueError(f"expect is a row of {expect.lease_id!r}, not of {lease_id!r}")
        for _ in range(_FORCE_RELEASE_ATTEMPTS):
            current = expect if expect is not None else await self.get_item(lease_id)
            if current is None or current.lessee_id is None:
                return current
            condition, values = self._tenure(current.lessee_id, current.fencing_token)
            values[":zero"] = {"N": "0"}
            ambiguous = False

            def note_ambiguous() -> None:
                nonlocal ambiguous
                ambiguous = True

            try:
                await self._call(
                    functools.partial(
                        self.client.update_item,
                        TableName=self.table_name,
                        Key=key,
                        UpdateExpression="REMOVE #l, #d SET #u = :zero",
                        ConditionExpression=condition,
                        ExpressionAttributeNames={
                            **self._names_for("#l", "#u", "#t"),
                            **self._duration_names,
                        },
                        ExpressionAttributeValues=values,
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    ),
                    lease_id=lease_id,
                    expect={"ConditionalCheckFailedException"},
                    on_retry=note_ambiguous,
                )
            except _Expected as failed:
                row = await self._refused_row(failed, lease_id)
                if row is None:
                    return None
                if not self._leasable(row):
                    # Its token (read as 0) can never match: not a row that "kept changing".
                    raise self._malformed_error(lease_id, row) from None
                if (
                    (ambiguous or failed.retried)
                    and self.lessee_attribute not in row
                    and self._int(row, self.token_attribute, strict=False) == current.fencing_token
                ):
                    break  # freed by our own attempt whose answer was lost
                if expect is not None:
                    raise LeaseNotObtainedError(
                        f"{lease_id!r} changed since it was read (held by "
                        f"{current.lessee_id!r}, token {current.fencing_token}): it is now "
                        f"{self._describe(row)}; not released",
                        lease_id=lease_id,
                        holder=self._str(row, self.lessee_attribute),
                    ) from None
                continue  # changed between the read and the write: read it again
            break
        else:
            raise LeaseUnavailableError(
                f"{lease_id!r} in table {self.table_name!r} kept changing; not released",
                lease_id=lease_id,
            )
        return current

    # -- the writes ---------------------------------------------------------------------

    async def _acquire(
        self,
        lease_id: str,
        request: LeaseRequest,
        until: datetime | None,
        max_clock_skew: float | None,
        expect: LeaseItem | None,
    ) -> Lease | dict[str, Any] | None:
        """One acquiring write. Returns the Lease, or the row that refused it (None: no row).

        A row with a malformed ``LeaseToken`` raises :class:`LeaseStoreError` naming it (also
        a :class:`LeaseNotObtainedError` whose ``item_exists`` is False: pool loops skip it,
        waiting for it is pointless).
        """
        if not isinstance(request, LeaseRequest):
            raise TypeError(f"request must be a LeaseRequest, not {type(request).__name__}")
        if expect is not None and not isinstance(expect, LeaseItem):
            raise TypeError(f"expect must be a LeaseItem or None, not {type(expect).__name__}")
        if expect is not None and expect.lease_id != lease_id:
            raise ValueError(f"expect is a row of {expect.lease_id!r}, not of {lease_id!r}")
        key = self._key(lease_id)
        explicit_ns = None if until is None else datetime_to_ns(until)
        if lease_id in self._malformed:
            # Found malformed before: look before writing, so that an acquisition never
            # bumps a fractional token again (DynamoDB cannot test a number for integrality).
            row = await self._read_row(lease_id)
            if row is not None and not self._leasable(row):
                raise self._malformed_error(lease_id, row)
            self._malformed.discard(lease_id)
        values: dict[str, Any] = {":n": {"S": "N"}}
        held: list[str] = []  # what makes a held row takeable, all of it required
        if expect is not None and expect.lessee_id is not None:
            held.append("#l = :ol AND #u = :ou")
            values[":ol"] = {"S": expect.lessee_id}
            values[":ou"] = {"N": str(expect.until_ns)}
        if max_clock_skew is not None and (expect is None or expect.lessee_id is not None):
            # attribute_type first: a hand-written row with a string LeaseUntil must be
            # refused, not compared (moto even fails with a 500 on such a comparison).
            held.append("attribute_type(#u, :n) AND #u < :cutoff")
        takeable = "attribute_not_exists(#l)"
        if held:
            takeable = f"attribute_not_exists(#l) OR ({' AND '.join(held)})"
        if expect is None:
            # A string token would fail the increment (a ValidationException, not a refusal).
            token = "(attribute_not_exists(#t) OR attribute_type(#t, :n))"
        elif expect.fencing_token != 0:
            # The token as read pins the row, free or held: a late duplicate of this request
            # (timed out, undone) cannot re-take the row once anyone has written it since,
            # and a token read as malformed (0) or a fraction is never matched.
            token = "#t = :ot"
            values[":ot"] = {"N": str(expect.fencing_token)}
        else:
            # No token, or a stored 0 (a hand-made row): neither test holds for a malformed one.
            token = "(attribute_not_exists(#t) OR #t = :zero)"
        condition = f"attribute_exists(#k) AND {token} AND ({takeable})"
        if not re.search(r":n\b", condition):
            del values[":n"]  # DynamoDB refuses unused values
        values.update({":l": {"S": request.lessee_id}, ":zero": {"N": "0"}, ":one": {"N": "1"}})
        ours_token = None if expect is None else expect.fencing_token + 1
        sent_at, until_ns = 0.0, 0
        ambiguous = False  # an attempt was retried: it may have landed unanswered
        landed = False  # the write was answered: it landed

        def note_ambiguous() -> None:
            nonlocal ambiguous
            ambiguous = True

        def stamp() -> None:
            nonlocal sent_at, until_ns
            sent_at, until_ns = self._send_times(lease_id, request, explicit_ns)
            if max_clock_skew is not None and ":cutoff" in condition:
                values[":cutoff"] = {"N": str(self._cutoff_ns(max_clock_skew))}
            values[":u"] = {"N": str(until_ns)}
            values[":d"] = self._duration_value(request, until_ns)

        try:
            try:
                response = await self._call(
                    lambda: self.client.update_item(
                        TableName=self.table_name,
                        Key=key,
                        UpdateExpression=(
                            "SET #l = :l, #u = :u, #t = if_not_exists(#t, :zero) + :one, #d = :d"
                        ),
                        ConditionExpression=condition,
                        ExpressionAttributeNames={**self._names, **self._duration_names},
                        ExpressionAttributeValues=values,
                        ReturnValues="ALL_NEW",
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    ),
                    lease_id=lease_id,
                    expect={"ConditionalCheckFailedException"},
                    on_retry=note_ambiguous,
                    on_first_send=stamp,
                )
            except _Expected as failed:
                ambiguous = ambiguous or failed.retried
                old = await self._refused_row(failed, lease_id, full=True)
                if (
                    ambiguous
                    and old is not None
                    and self._is_ours(old, request.lessee_id, until_ns, ours_token)
                ):
                    # Our own write, applied by an attempt whose answer was lost: until_ns is
                    # unique per row for this store, so no other write of it shows this value.
                    # Only after a retry: a first refusal is never of our own write, even if
                    # the row shows the same lessee and expiry (another task or store).
                    return self._lease(lease_id, request, old, sent_at=sent_at)
                if not ambiguous:
                    # Refused at its only attempt: nothing of it is in flight, its value may go.
                    self._forget_floor(lease_id, until_ns)
                if old is not None and not self._leasable(old):
                    self._note_malformed(lease_id, old)
                    raise self._malformed_error(lease_id, old) from None
                return old
            landed = True
            row = response.get("Attributes")
            if not row:
                # Answered 200 without the row asked for (some compatible servers): read it.
                row = await self._read_row(lease_id, full=True)
                if row is None or not self._is_ours(row, request.lessee_id, until_ns, ours_token):
                    raise LeaseUnavailableError(
                        f"acquiring {lease_id!r} in table {self.table_name!r}: the endpoint "
                        "answered without the item's attributes and the row does not show "
                        "the write",
                        lease_id=lease_id,
                    )
            if not self._leasable(row):
                # A fractional token, seen only once the write landed: a lease that could never
                # be renewed or released under its token. Free the row again, then report it.
                self._note_malformed(lease_id, row)
                await self._undo_acquire(key, lease_id, request.lessee_id, until_ns, None)
                raise self._malformed_error(lease_id, row)
            lease = self._lease(lease_id, request, row, sent_at=sent_at)
            get_logger().debug(
                "acquired %s for %s, token %s",
                lease_id,
                request.lessee_id,
                lease.fencing_token,
                extra=lease_fields(lease),
            )
            return lease
        except (asyncio.CancelledError, LeaseUnavailableError, LeaseStoreError) as exc:
            # The write (or an attempt of it whose answer was lost, while its refusal or its
            # row was being read) may have reached DynamoDB with nobody left to heartbeat or
            # release it: undo it before this call returns (shielded, bounded; if it cannot
            # finish in time it goes on in the background, which aclose() awaits). A store
            # error (a denied retry or read-back) only after an attempt that may have landed;
            # a malformed row's landed write was undone above already.
            if isinstance(exc, LeaseStoreError) and (
                isinstance(exc, _MalformedRowError) or not (ambiguous or landed)
            ):
                raise
            if until_ns:  # 0: cancelled while queueing for a slot, nothing was sent
                undo = self._undo_acquire(key, lease_id, request.lessee_id, until_ns, ours_token)
                if await self._run_shielded(undo) and not isinstance(exc, asyncio.CancelledError):
                    raise asyncio.CancelledError from exc  # cancelled during the undo
            raise

    def _is_ours(
        self, row: Mapping[str, Any], lessee: str, until_ns: int, token: int | None
    ) -> bool:
        """Whether ``row`` shows the acquiring write of ``lessee`` with expiry ``until_ns``."""
        return (
            until_ns > 0
            and self._str(row, self.lessee_attribute) == lessee
            and self._int(row, self.until_attribute, strict=False) == until_ns
            and (token is None or self._int(row, self.token_attribute, strict=False) == token)
        )

    async def _run_shielded(self, cleanup: Awaitable[None]) -> bool:
        """Run ``cleanup`` to completion, at most _CLEANUP_TIMEOUT, whatever cancels the caller.

        Returns whether the caller was cancelled meanwhile (the caller re-raises). What does
        not finish in time goes on in the background, owned by the store (see aclose()).
        """
        task = asyncio.ensure_future(cleanup)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + _CLEANUP_TIMEOUT
        cancelled = False
        while not task.done() and loop.time() < give_up:
            try:
                # asyncio.wait never cancels the task it waits for: a shield.
                await asyncio.wait({task}, timeout=give_up - loop.time())
            except asyncio.CancelledError:
                cancelled = True
        return cancelled

    async def _undo_acquire(
        self, key: dict[str, Any], lease_id: str, lessee: str, until_ns: int, token: int | None
    ) -> None:
        condition = "#l = :l AND #u = :u"
        values: dict[str, Any] = {
            ":l": {"S": lessee},
            ":u": {"N": str(until_ns)},
            ":zero": {"N": "0"},
        }
        names = {**self._names_for("#l", "#u"), **self._duration_names}
        if token is not None:
            condition += " AND #t = :t"
            values[":t"] = {"N": str(token)}
            names["#t"] = self.token_attribute
        try:
            async with asyncio.timeout(_CLEANUP_TIMEOUT):
                await self._call(
                    lambda: self.client.update_item(
                        TableName=self.table_name,
                        Key=key,
                        UpdateExpression="REMOVE #l, #d SET #u = :zero",
                        ConditionExpression=condition,
                        ExpressionAttributeNames=names,
                        ExpressionAttributeValues=values,
                    ),
                    lease_id=lease_id,
                    expect={"ConditionalCheckFailedException"},
                )
        except _Expected:
            # The cancelled write never landed (or was already undone); it may still be in
            # flight, so its value stays issued.
            return
        except (LeaseError, TimeoutError) as exc:
            get_logger().warning(
                "could not undo the cancelled acquisition of %s by %s: %s; "
                "the row stays held until it expires",
                lease_id,
                lessee,
                str(exc) or f"timed out after {_CLEANUP_TIMEOUT} s",
                extra={"lease_id": lease_id, "lessee_id": lessee},
            )
            return
        get_logger().info(
            "undid the cancelled acquisition of %s by %s",
            lease_id,
            lessee,
            extra={"lease_id": lease_id, "lessee_id": lessee},
        )

    @staticmethod
    def _tenure(lessee_id: str, token: int) -> tuple[str, dict[str, Any]]:
        """The condition (and its values) that the row is still in this tenure."""
        values: dict[str, Any] = {":l": {"S": lessee_id}}
        if token != 0:
            values[":t"] = {"N": str(token)}
            return "#l = :l AND #t = :t", values
        # A row only ever leased by Go workers, which keep no token, or a stored token 0.
        values[":zero"] = {"N": "0"}
        return "#l = :l AND (attribute_not_exists(#t) OR #t = :zero)", values

    async def _renew(
        self, lease: Lease, until: datetime | None, *, return_attributes: bool
    ) -> Lease:
        self._check_lease(lease)
        key = self._key(lease.lease_id)
        explicit_ns = None if until is None else datetime_to_ns(until)
        tenure, values = self._tenure(lease.lessee_id, lease.fencing_token)
        # Forward only: a late request of an earlier renewal must never move the expiry back.
        condition = (
            f"{tenure} AND (attribute_not_exists(#u) OR (attribute_type(#u, :n) AND #u < :u))"
        )
        values[":n"] = {"S": "N"}
        sent_at, until_ns = 0.0, 0

        def stamp() -> None:
            nonlocal sent_at, until_ns
            sent_at, until_ns = self._send_times(lease.lease_id, lease.request, explicit_ns)
            values[":u"] = {"N": str(until_ns)}
            values[":d"] = self._duration_value(lease.request, until_ns)

        restamped = False
        row: Mapping[str, Any] | None = None
        ambiguous = False  # this request was retried: it may have landed unanswered

        def note_ambiguous() -> None:
            nonlocal ambiguous
            ambiguous = True

        while True:
            ambiguous = False
            try:
                response = await self._call(
                    lambda: self.client.update_item(
                        TableName=self.table_name,
                        Key=key,
                        UpdateExpression="SET #u = :u, #d = :d",
                        ConditionExpression=condition,
                        ExpressionAttributeNames={
                            **self._names_for("#l", "#u", "#t"),
                            **self._duration_names,
                        },
                        ExpressionAttributeValues=values,
                        ReturnValues="ALL_NEW" if return_attributes else "NONE",
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    ),
                    lease_id=lease.lease_id,
                    expect={"ConditionalCheckFailedException"},
                    on_retry=note_ambiguous,
                    on_first_send=None if restamped else stamp,
                )
            except _Expected as failed:
                ambiguous = ambiguous or failed.retried
                old = await self._refused_row(failed, lease.lease_id, full=return_attributes)
                stored = self._stored_until(old) if self._holds(old, lease) else None
                if old is not None and stored == until_ns and ambiguous:
                    # Our own write, applied by an attempt whose answer was lost.
                    row = old
                    break
                if stored is not None and stored >= until_ns and restamped:
                    # Still our tenure, moved to or past our re-stamp by another write of this
                    # very lease (a concurrent renewal): the row changed, so it is renewed, and
                    # the local deadline (from our send) ends before the stored expiry.
                    row, until_ns = old, stored
                    break
                if stored is not None and stored >= until_ns and not restamped:
                    # Still ours, but the stored expiry is not earlier than ours: this
                    # holder's clock stepped back, or an explicit until was sooner (or the
                    # same, written by another store of this lease). Write just above it; the
                    # local deadline still counts from the first send. For a sooner until it
                    # ends before the stored expiry; after a backward clock step of X it can
                    # end up to X (real time) after stored + 1: this holder's clock error,
                    # which max_clock_skew must cover like any skew.
                    until_ns = self._note_floor(lease.lease_id, stored + 1)
                    values[":u"] = {"N": str(until_ns)}
                    values[":d"] = self._duration_value(lease.request, until_ns)
                    restamped = True
                    continue
                if not ambiguous:
                    self._forget_floor(lease.lease_id, until_ns)
                reason = self._describe(old)
                raise LeaseLostError(
                    f"lease on {lease.lease_id!r} (token {lease.fencing_token}) is lost: "
                    f"the item is {reason}",
                    lease_id=lease.lease_id,
                    reason=reason,
                ) from None
            if return_attributes:
                row = response.get("Attributes")
            break
        if return_attributes:
            if not row:
                # Answered 200 without the row asked for: read it.
                row = await self._read_row(lease.lease_id, full=True)
                if not self._holds(row, lease) or self._stored_until(row) != until_ns:
                    raise LeaseUnavailableError(
                        f"renewing {lease.lease_id!r} in table {self.table_name!r}: the endpoint "
                        "answered without the item's attributes and the row does not show the "
                        "write",
                        lease_id=lease.lease_id,
                    )
            assert row is not None
            return self._lease(lease.lease_id, lease.request, row, sent_at)
        return replace(lease, until=ns_to_datetime(until_ns), until_ns=until_ns, sent_at=sent_at)

    def _holds(self, row: Mapping[str, Any] | None, lease: Lease) -> bool:
        """Whether ``row`` is still in ``lease``'s tenure (lessee and token)."""
        if row is None or self._str(row, self.lessee_attribute) != lease.lessee_id:
            return False
        # _leasable: a malformed token (read as 0) never matches token 0 (no token, or a 0).
        return (
            self._leasable(row)
            and self._int(row, self.token_attribute, strict=False) == lease.fencing_token
        )

    def _stored_until(self, row: Mapping[str, Any] | None) -> int | None:
        """The row's ``LeaseUntil`` if it is a whole number, else ``None``."""
        value = None if row is None else row.get(self.until_attribute)
        if not isinstance(value, Mapping) or "N" not in value:
            return None
        try:
            number = Decimal(value["N"])
        except ArithmeticError:
            return None
        return int(number) if number == number.to_integral_value() else None

    # -- plumbing -----------------------------------------------------------------------

    async def _call(
        self,
        operation: Callable[[], Awaitable[_T]],
        *,
        lease_id: str | None = None,
        expect: frozenset[str] | set[str] = frozenset(),
        on_retry: Callable[[], None] | None = None,
        on_first_send: Callable[[], None] | None = None,
    ) -> _T:
        """Run one DynamoDB call with retries, translating errors.

        ``on_first_send`` runs once a request slot is held, just before the first attempt:
        where a write stamps its send time and expiry, so that time spent queueing behind
        other requests is not charged to the lease.

        Codes in ``expect`` raise :class:`_Expected` (carrying the ``ALL_OLD`` item, if any);
        transient errors are retried, then raised as :class:`LeaseUnavailableError`; the rest
        become :class:`LeaseStoreError`.
        """
        for attempt in range(1, self.max_attempts + 1):
            try:
                async with self._slots:
                    if on_first_send is not None and attempt == 1:
                        on_first_send()
                    return await operation()
            except (asyncio.CancelledError, LeaseError, _Expected):
                raise
            except Exception as exc:
                code = _client_error_code(exc)
                if code is not None and code in expect:
                    response = getattr(exc, "response", {})
                    # RetryAttempts > 0: botocore resent the request itself, so an earlier
                    # copy may have landed (the refusal may be of our own write).
                    meta = response.get("ResponseMetadata") or {}
                    retried = (
                        bool(meta.get("RetryAttempts")) if isinstance(meta, Mapping) else False
                    )
                    raise _Expected(code, response.get("Item"), retried=retried) from None
                if not _is_transient(exc):
                    raise self._store_error(exc, lease_id) from exc
                if attempt == self.max_attempts:
                    raise LeaseUnavailableError(
                        f"DynamoDB table {self.table_name!r} unavailable after {attempt} "
                        f"attempt(s): {_short(exc)}",
                        lease_id=lease_id,
                    ) from exc
                get_logger().debug(
                    "transient error on %s (attempt %d of %d): %s",
                    self.table_name,
                    attempt,
                    self.max_attempts,
                    _short(exc),
                )
                if on_retry is not None:
                    on_retry()
                delay = min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (attempt - 1))
                await asyncio.sleep(random.uniform(0, delay))
        raise AssertionError("unreachable")  # pragma: no cover

    def _store_error(self, exc: BaseException, lease_id: str | None) -> LeaseStoreError:
        import botocore.exceptions as bce

        code = _client_error_code(exc)
        where = f"table {self.table_name!r} (hash key {self.hash_key!r})"
        if code == "ResourceNotFoundException":
            message = f"{where} does not exist; create it with LockStore.create_table()"
        elif code in _ACCESS_CODES:
            message = f"access to {where} denied: {_short(exc)}"
        elif code == "ValidationException" and "key element does not match" in str(exc):
            message = (
                f"{where}: the table's key schema is not a single string hash key named "
                f"{self.hash_key!r}"
            )
        elif isinstance(exc, bce.NoCredentialsError):
            message = f"no AWS credentials found for {where}"
        elif code is not None:
            message = f"{where}: {code}: {_short(exc)}"
        else:
            message = f"{where}: {type(exc).__name__}: {exc}"
        if lease_id is not None:
            message += f" [lease {lease_id!r}]"
        return LeaseStoreError(
            message, table=self.table_name, hash_key=self.hash_key, lease_id=lease_id
        )

    def _key(self, lease_id: object) -> dict[str, Any]:
        if not isinstance(lease_id, str):
            raise TypeError(f"lease_id must be a str, not {type(lease_id).__name__}")
        if not lease_id:
            raise ValueError("lease_id must not be empty")
        size = len(lease_id.encode("utf-8", "surrogatepass"))
        if size > MAX_LEASE_ID_BYTES:
            raise ValueError(
                f"lease_id is {size} bytes in UTF-8; DynamoDB's key limit is {MAX_LEASE_ID_BYTES}"
            )
        return {self.hash_key: {"S": lease_id}}

    def _check_lease(self, lease: object) -> None:
        if not isinstance(lease, Lease):
            raise TypeError(f"lease must be a Lease, not {type(lease).__name__}")

    def _user_attributes(self, attributes: Mapping[str, Any] | None) -> dict[str, Any]:
        if attributes is None:
            return {}
        if not isinstance(attributes, Mapping):
            raise TypeError(f"attributes must be a mapping, not {type(attributes).__name__}")
        out = {}
        for name, value in attributes.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"attributes: names must be non-empty strings, not {name!r}")
            if name == self.hash_key or name in self._bookkeeping:
                raise ValueError(
                    f"attributes: {name!r} is the hash key or a bookkeeping attribute "
                    f"({self.hash_key}, {', '.join(sorted(self._bookkeeping))}) of this table"
                )
            try:
                out[name] = self._serializer.serialize(_as_dynamodb_value(value))
            except (TypeError, ValueError) as exc:
                raise TypeError(f"attributes[{name!r}]: {exc}") from None
        return out

    def _names_for(self, *placeholders: str) -> dict[str, str]:
        return {p: self._names[p] for p in placeholders}

    def _duration_value(self, request: LeaseRequest, until_ns: int) -> dict[str, Any]:
        """The duration map written with ``until_ns``: how long observers must see it unchanged.

        An explicit ``until`` beyond now + duration stretches the duration to match (measured
        on this store's clock alone), so observers never wait less than the holder expects.
        """
        nanos = max(int(request.duration * 1e9), until_ns - self._clock())
        millis = -(-nanos // 1_000_000)  # rounded up: never shorter than the holder's lease
        return {"M": {"ms": {"N": str(millis)}, "until": {"N": str(until_ns)}}}

    def _duration(self, row: Mapping[str, Any], until_ns: int) -> float | None:
        """The holder's duration in seconds, if it was written with this very ``LeaseUntil``.

        Missing, malformed, stale (the row was since written by a Go worker, which leaves the
        map alone) or absurd (<= 0, > MAX_DURATION) all read as ``None``: use the clock rule.
        """
        value = row.get(self.duration_attribute)
        fields = value.get("M") if isinstance(value, Mapping) else None
        if not isinstance(fields, Mapping) or until_ns <= 0:
            return None
        try:
            seconds = float(Decimal(fields["ms"]["N"])) / 1000
            written_with = int(Decimal(fields["until"]["N"]))
        except (KeyError, TypeError, ArithmeticError, ValueError):
            return None
        if written_with != until_ns or not math.isfinite(seconds):
            return None
        return seconds if 0 < seconds <= MAX_DURATION else None

    def _cutoff_ns(self, max_clock_skew: float) -> int:
        max_clock_skew = check_clock_skew(max_clock_skew)
        return self._clock() - int(max_clock_skew * 1e9)

    def _send_times(
        self, lease_id: str, request: LeaseRequest, until_ns: int | None
    ) -> tuple[float, int]:
        """``(sent_at, until_ns)`` for a write of ``lease_id`` about to be sent.

        ``sent_at`` (loop time) is read before the wall clock, so the holder's local deadline
        (``sent_at + duration``) never ends after the expiry others see. An explicit expiry
        sooner than now + duration moves ``sent_at`` back by the difference, for the same
        reason. ``until_ns`` defaults to now + duration; it is made unique per row (never a
        value this store issued for that row that may be stored or in flight and has not
        expired: just above it on an exact collision), so that a lost-response retry and an
        undo recognise their own write. Other rows and other values never stretch it.
        """
        sent_at = asyncio.get_running_loop().time()
        now = self._clock()
        natural = now + int(request.duration * 1e9)
        value = natural if until_ns is None else until_ns
        value = self._note_floor(lease_id, value, now)
        return sent_at - max(0, natural - value) / 1e9, value

    def _note_floor(self, lease_id: str, until_ns: int, now: int | None = None) -> int:
        """Issue ``until_ns`` (or just above, if issued already) for ``lease_id``; return it.

        Forgets the row's expired values, and a few rows whose values have all expired: an
        expired value cannot collide with a new now + duration.
        """
        now = self._clock() if now is None else now
        issued = [value for value in self._floors.pop(lease_id, ()) if value >= now]
        while until_ns in issued:
            until_ns += 1
        issued.append(until_ns)
        self._floors[lease_id] = issued[-_MAX_ISSUED:]
        for _ in range(4):
            oldest, values = next(iter(self._floors.items()))
            if oldest == lease_id or any(value >= now for value in values):
                break
            self._floors.popitem(last=False)
        while len(self._floors) > _MAX_FLOORS:
            self._floors.popitem(last=False)
        return until_ns

    def _forget_floor(self, lease_id: str, until_ns: int) -> None:
        """Forget an issued value whose write surely did not land and is not in flight."""
        issued = self._floors.get(lease_id)
        if issued is not None and until_ns in issued:
            issued.remove(until_ns)

    async def _read_row(self, lease_id: str, *, full: bool = False) -> dict[str, Any] | None:
        """The raw row, read consistently (just the bookkeeping unless ``full``)."""
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": self._key(lease_id),
            "ConsistentRead": True,
        }
        if not full:
            params["ProjectionExpression"] = "#k, #l, #u, #t, #d"
            params["ExpressionAttributeNames"] = {**self._names, **self._duration_names}
        response = await self._call(lambda: self.client.get_item(**params), lease_id=lease_id)
        row = response.get("Item")
        return dict(row) if row else None

    async def _refused_row(
        self, failed: _Expected, lease_id: str, *, full: bool = False
    ) -> dict[str, Any] | None:
        """The row that refused a conditional write: as returned, or read if none came back.

        Some DynamoDB-compatible servers ignore ReturnValuesOnConditionCheckFailure, so a
        refusal without an item may still come from an existing row.
        """
        if failed.item is not None:
            return failed.item
        return await self._read_row(lease_id, full=full)

    def _leasable(self, row: Mapping[str, Any]) -> bool:
        """False for a row with a malformed ``LeaseToken`` (not a whole number)."""
        value = row.get(self.token_attribute)
        if value is None:
            return True
        try:
            number = Decimal(value["N"])
        except (KeyError, TypeError, ArithmeticError):
            return False
        return number.is_finite() and number == number.to_integral_value()

    def _skip_malformed(self, lease_id: str, row: Mapping[str, Any]) -> bool:
        """True (and logged once) for a row an acquisition could never take."""
        if self._leasable(row):
            return False
        self._note_malformed(lease_id, row)
        return True

    def _note_malformed(self, lease_id: str, row: Mapping[str, Any]) -> None:
        """Remember (and log once per item) a row with a malformed token."""
        self._malformed.add(lease_id)
        if lease_id in self._warned_malformed:
            return
        if len(self._warned_malformed) >= _MAX_FLOORS:
            self._warned_malformed.clear()
        self._warned_malformed.add(lease_id)
        get_logger().warning(
            "table %r: item %r has a malformed %s (%r, not a whole number); it is never "
            "leased until it is fixed",
            self.table_name,
            lease_id,
            self.token_attribute,
            row.get(self.token_attribute),
            extra={"lease_id": lease_id},
        )

    def _malformed_error(self, lease_id: str, row: Mapping[str, Any]) -> LeaseStoreError:
        return _MalformedRowError(
            f"item {lease_id!r} in table {self.table_name!r} has a malformed "
            f"{self.token_attribute} ({row.get(self.token_attribute)!r}, not a whole number); "
            "fix or delete the row",
            table=self.table_name,
            hash_key=self.hash_key,
            lease_id=lease_id,
        )

    async def _check_rows(self, page: Mapping[str, Any]) -> None:
        """Rows without the configured hash key: the table is keyed otherwise. Say so."""
        if self._key_checked:
            return
        items = page.get("Items") or []
        if any(self._str(raw, self.hash_key) is None for raw in items):
            await self.describe_table()  # raises, naming the table's real key
        if items:
            self._key_checked = True

    def _first_error(self, group: BaseExceptionGroup[Any]) -> BaseException:
        """The first LeaseError in ``group`` (nested too), else a store error describing it."""
        for exc in group.exceptions:
            if isinstance(exc, BaseExceptionGroup):
                exc = self._first_error(exc)
            if isinstance(exc, LeaseError | KeyboardInterrupt | SystemExit):
                return exc
        first = group.exceptions[0]
        return self._store_error(first, None)

    def _plain(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A raw row as Python values, so that equal numbers compare equal (1.0 == 1)."""
        return {k: self._deserializer.deserialize(v) for k, v in row.items()}

    def _lease(
        self, lease_id: str, request: LeaseRequest, row: Mapping[str, Any], sent_at: float
    ) -> Lease:
        until_ns = self._int(row, self.until_attribute)
        return Lease(
            lease_id=lease_id,
            request=request,
            until=ns_to_datetime(until_ns),
            fencing_token=self._int(row, self.token_attribute),
            attributes=self._attributes(row),
            until_ns=until_ns,
            sent_at=sent_at,
        )

    def _item(self, row: Mapping[str, Any]) -> LeaseItem | None:
        lease_id = self._str(row, self.hash_key)
        if lease_id is None:
            return None
        until_ns = self._int(row, self.until_attribute, strict=False)
        return LeaseItem(
            lease_id=lease_id,
            lessee_id=self._str(row, self.lessee_attribute),
            until_ns=until_ns,
            fencing_token=self._int(row, self.token_attribute, strict=False),
            attributes=self._attributes(row),
            duration=self._duration(row, until_ns),
        )

    def _attributes(self, row: Mapping[str, Any]) -> dict[str, Any]:
        skip = self._bookkeeping | {self.hash_key}
        return {k: self._deserializer.deserialize(v) for k, v in row.items() if k not in skip}

    @staticmethod
    def _str(row: Mapping[str, Any], name: str) -> str | None:
        value = row.get(name)
        return value.get("S") if isinstance(value, Mapping) else None

    def _int(self, row: Mapping[str, Any], name: str, *, strict: bool = True) -> int:
        """A numeric bookkeeping attribute; missing is 0, malformed is an error (or 0, lenient)."""
        lease_id = self._str(row, self.hash_key)
        value = row.get(name)
        if value is None:
            return 0
        try:
            number = Decimal(value["N"])
            if number != number.to_integral_value():
                raise ValueError(number)  # tokens and expiries are whole numbers
            return int(number)
        except (KeyError, TypeError, ArithmeticError, ValueError):
            if not strict:
                return 0
            item = "" if lease_id is None else f" item {lease_id!r}:"
            raise LeaseStoreError(
                f"table {self.table_name!r}:{item} attribute {name!r} is {value!r}, not an integer",
                table=self.table_name,
                hash_key=self.hash_key,
                lease_id=lease_id,
            ) from None

    def _describe(self, row: Mapping[str, Any] | None) -> str:
        """Why a row refused a write, for error messages."""
        if row is None:
            return "gone (no such item)"
        if not self._leasable(row):
            return f"malformed (its {self.token_attribute} is {row.get(self.token_attribute)!r})"
        holder = self._str(row, self.lessee_attribute)
        until = self._int(row, self.until_attribute, strict=False)
        token = self._int(row, self.token_attribute, strict=False)
        if holder is None:
            return f"free (token {token})"
        raw_until = row.get(self.until_attribute)
        if not isinstance(raw_until, Mapping) or "N" not in raw_until:
            return f"held by {holder!r} with a missing or malformed {self.until_attribute}"
        remaining = (until - self._clock()) / 1e9
        return f"held by {holder!r} (token {token}, expires in {remaining:.1f} s)"

    def _not_obtained(self, lease_id: str, row: Mapping[str, Any] | None) -> LeaseNotObtainedError:
        if row is None:
            return LeaseNotObtainedError(
                f"no item {lease_id!r} in table {self.table_name!r}; register it with add_item()",
                lease_id=lease_id,
                item_exists=False,
            )
        return LeaseNotObtainedError(
            f"{lease_id!r} is {self._describe(row)}",
            lease_id=lease_id,
            holder=self._str(row, self.lessee_attribute),
        )


class _Expected(Exception):
    """An anticipated error code (usually a failed condition), with the row DynamoDB returned.

    ``retried``: botocore resent the request by itself, so the refusal may be of our own
    write. ``item`` is None when there is no row, or when the server ignores
    ``ReturnValuesOnConditionCheckFailure`` (see LockStore._refused_row).
    """

    def __init__(self, code: str, item: dict[str, Any] | None, *, retried: bool = False) -> None:
        super().__init__(code)
        self.code = code
        self.item = item
        self.retried = retried


class _MalformedRowError(LeaseStoreError, LeaseNotObtainedError):
    """A row no acquisition can take (a malformed ``LeaseToken``), named in the message.

    A store error, and also "not obtained" with ``item_exists`` False: a pool acquisition
    skips it, a named wait gives up at once (waiting will not fix the row).
    """

    def __init__(self, message: str, *, table: str, hash_key: str, lease_id: str) -> None:
        super().__init__(message, table=table, hash_key=hash_key, lease_id=lease_id)
        self.holder = None
        self.item_exists = False


def _client_attempts(client: Any) -> int:
    """How many attempts the client makes per call by itself (botocore's retry config)."""
    config = getattr(getattr(client, "meta", None), "config", None)
    retries = getattr(config, "retries", None)
    if config is None or not isinstance(retries, Mapping):
        return 1  # not a botocore client (a test double): nothing to say
    total = retries.get("total_max_attempts")
    if isinstance(total, int):
        return total
    legacy = retries.get("max_attempts")  # the legacy key counts retries, not attempts
    if isinstance(legacy, int):
        return legacy + 1
    # botocore's defaults: 10 attempts for DynamoDB in legacy mode, 3 in standard mode.
    return 3 if retries.get("mode") in ("standard", "adaptive") else 10


def _is_missing_index(exc: BaseException | None) -> bool:
    """True for the answer to a query on an index that is absent or still building.

    DynamoDB says ``ValidationException``; moto says ``ResourceNotFoundException``.
    """
    if exc is None or _client_error_code(exc) not in (
        "ValidationException",
        "ResourceNotFoundException",
    ):
        return False
    return "index" in _short(exc).lower()


def _short(exc: BaseException) -> str:
    """One line about an error, for messages and logs: never a request body or an HTML page."""
    code = _client_error_code(exc)
    if code is not None:
        error = getattr(exc, "response", {}).get("Error", {})
        text = f"{code}: {error.get('Message', '')}".rstrip(": ")
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."
