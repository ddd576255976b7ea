"""LockStore: the lease table's conditional writes and scans (the only module speaking DynamoDB)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
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
from ._log import get_logger
from ._types import Lease, LeaseItem, LeaseRequest, datetime_to_ns, ns_to_datetime

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
# How long a background cleanup of a cancelled acquisition may take.
_CLEANUP_TIMEOUT = 5.0


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
        self.max_attempts = max_attempts
        self._clock = clock
        # Requests beyond the client's connection pool would only queue inside aiohttp, where
        # its timeouts count the wait; queue them here instead, in order.
        self._slots = asyncio.Semaphore(max_in_flight)
        self._bookkeeping = frozenset({lessee_attribute, until_attribute, token_attribute})
        self._serializer = TypeSerializer()
        self._deserializer = TypeDeserializer()
        self._names = {
            "#k": hash_key,
            "#l": lessee_attribute,
            "#u": until_attribute,
            "#t": token_attribute,
        }
        self._last_until_ns = 0
        self._background: set[asyncio.Task[None]] = set()

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

        if session is None:
            session = aioboto3.Session()
        if region_name is None and session.region_name is None and endpoint_url is not None:
            # A local endpoint does not care about the region, but botocore insists on one.
            region_name = "us-east-1"
        config = AioConfig(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=max_pool_connections,
        )
        try:
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
        except ValueError as exc:  # e.g. a malformed endpoint_url
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
        """Wait (bounded) for background cleanups of cancelled acquisitions to finish."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=_CLEANUP_TIMEOUT)

    # -- the table ----------------------------------------------------------------------

    async def create_table(self, *, timeout: float = 60.0) -> None:
        """Create the table (on-demand billing) and wait until it is active.

        An existing table with this hash key is fine; one with another key schema raises
        :class:`LeaseStoreError`.
        """
        with contextlib.suppress(_Expected):  # already there: its schema is checked below
            await self._call(
                lambda: self.client.create_table(
                    TableName=self.table_name,
                    KeySchema=[{"AttributeName": self.hash_key, "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": self.hash_key, "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST",
                ),
                expect={"ResourceInUseException"},
            )
        pause = 0.05
        async with asyncio.timeout(timeout):
            while True:
                description = await self.describe_table()
                if description.get("TableStatus") == "ACTIVE":
                    return
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    async def describe_table(self) -> dict[str, Any]:
        """The table's description; :class:`LeaseStoreError` if it is missing or keyed otherwise."""
        response = await self._call(lambda: self.client.describe_table(TableName=self.table_name))
        table: dict[str, Any] = dict(response["Table"])
        keys = [(k["AttributeName"], k["KeyType"]) for k in table.get("KeySchema", [])]
        types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
        if keys != [(self.hash_key, "HASH")] or types.get(self.hash_key) != "S":
            raise LeaseStoreError(
                f"table {self.table_name!r} has key schema {keys} ({types}); a lease table "
                f"needs the string hash key {self.hash_key!r} and no sort key",
                table=self.table_name,
                hash_key=self.hash_key,
            )
        return table

    async def add_item(self, lease_id: str, attributes: Mapping[str, Any] | None = None) -> bool:
        """Register a leasable item, free, with ``LeaseUntil`` 0 and optional user attributes.

        Returns ``True`` if it created the row, ``False`` if the row existed (left untouched).
        """
        key = self._key(lease_id)
        names = {"#k": self.hash_key, "#u": self.until_attribute}
        values: dict[str, Any] = {":zero": {"N": "0"}}
        sets = ["#u = :zero"]
        for i, (name, value) in enumerate(self._user_attributes(attributes).items()):
            names[f"#a{i}"] = name
            values[f":a{i}"] = value
            sets.append(f"#a{i} = :a{i}")
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
            )
        except _Expected:
            return False
        return True

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
    ) -> AsyncGenerator[LeaseItem, None]:
        """Yield every row as a :class:`LeaseItem`, page after page.

        With ``available=True`` only rows that look free or expired (``LeaseUntil`` older
        than now minus ``max_clock_skew``) are returned: candidates, since another worker
        may take them before you do. ``projection_only`` reads just the bookkeeping.
        """
        params: dict[str, Any] = {"TableName": self.table_name}
        names: dict[str, str] = {}
        if projection_only or available:
            names.update(self._names)
            params["ProjectionExpression"] = "#k, #l, #u, #t"
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
            for raw in page.get("Items", []):
                item = self._item(raw)
                if item is not None:
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
        outcome = await self._acquire(lease_id, request, until, max_clock_skew)
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
        max_clock_skew: float = 0.0,
    ) -> Lease:
        """Take ``lease_id`` only if it is free or expired: never re-enters a lease held by anyone.

        The pool-safe form of :meth:`lease` that the locker uses, so that two tasks sharing a
        lessee ID never both hold one item. An acquisition whose response was lost is
        recognised as ours on retry; one cancelled after it was sent is undone in the
        background if it landed.
        """
        outcome = await self._acquire(lease_id, request, until, max_clock_skew)
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
        """
        self._check_lease(lease)
        key = self._key(lease.lease_id)
        ambiguous = False

        def note_ambiguous() -> None:
            nonlocal ambiguous
            ambiguous = True

        try:
            await self._call(
                lambda: self.client.update_item(
                    TableName=self.table_name,
                    Key=key,
                    UpdateExpression="REMOVE #l SET #u = :zero",
                    ConditionExpression="#l = :l AND #t = :t",
                    ExpressionAttributeNames=self._names_for("#l", "#u", "#t"),
                    ExpressionAttributeValues={
                        ":l": {"S": lease.lessee_id},
                        ":t": {"N": str(lease.fencing_token)},
                        ":zero": {"N": "0"},
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                ),
                lease_id=lease.lease_id,
                expect={"ConditionalCheckFailedException"},
                on_retry=note_ambiguous,
            )
        except _Expected as failed:
            old = failed.item
            # A retry after an attempt whose answer was lost: if that attempt freed the row,
            # the row is free under our token now, and the release did happen.
            return (
                ambiguous
                and old is not None
                and self.lessee_attribute not in old
                and self._int(old, self.token_attribute) == lease.fencing_token
            )
        return True

    async def force_release(self, lease_id: str) -> LeaseItem | None:
        """An operator's release of a stuck item, whoever holds it; keeps the row and its token.

        Returns the row as it was before, or ``None`` if there is no such item.
        """
        key = self._key(lease_id)
        try:
            response = await self._call(
                lambda: self.client.update_item(
                    TableName=self.table_name,
                    Key=key,
                    UpdateExpression="REMOVE #l SET #u = :zero",
                    ConditionExpression="attribute_exists(#k)",
                    ExpressionAttributeNames=self._names_for("#k", "#l", "#u"),
                    ExpressionAttributeValues={":zero": {"N": "0"}},
                    ReturnValues="ALL_OLD",
                ),
                lease_id=lease_id,
                expect={"ConditionalCheckFailedException"},
            )
        except _Expected:
            return None
        return self._item(response.get("Attributes", {}))

    # -- the writes ---------------------------------------------------------------------

    async def _acquire(
        self,
        lease_id: str,
        request: LeaseRequest,
        until: datetime | None,
        max_clock_skew: float,
    ) -> Lease | dict[str, Any] | None:
        """One acquiring write. Returns the Lease, or the row that refused it (None: no row)."""
        if not isinstance(request, LeaseRequest):
            raise TypeError(f"request must be a LeaseRequest, not {type(request).__name__}")
        key = self._key(lease_id)
        # sent_at is taken before the wall clock is read for until: the holder's local
        # deadline (sent_at + duration) then never ends after the expiry others see.
        sent_at = asyncio.get_running_loop().time()
        cutoff = self._cutoff_ns(max_clock_skew)
        until_ns = self._until_ns(request, until)
        try:
            response = await self._call(
                lambda: self.client.update_item(
                    TableName=self.table_name,
                    Key=key,
                    UpdateExpression="SET #l = :l, #u = :u, #t = if_not_exists(#t, :zero) + :one",
                    # attribute_type first: a hand-written row with a string LeaseUntil must be
                    # refused, not compared (moto even fails with a 500 on such a comparison).
                    ConditionExpression=(
                        "attribute_exists(#k) AND (attribute_not_exists(#l) OR "
                        "(attribute_type(#u, :n) AND #u < :cutoff))"
                    ),
                    ExpressionAttributeNames=self._names,
                    ExpressionAttributeValues={
                        ":l": {"S": request.lessee_id},
                        ":u": {"N": str(until_ns)},
                        ":zero": {"N": "0"},
                        ":one": {"N": "1"},
                        ":cutoff": {"N": str(cutoff)},
                        ":n": {"S": "N"},
                    },
                    ReturnValues="ALL_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                ),
                lease_id=lease_id,
                expect={"ConditionalCheckFailedException"},
            )
        except _Expected as failed:
            old = failed.item
            if (
                old is not None
                and self._str(old, self.lessee_attribute) == request.lessee_id
                and self._int(old, self.until_attribute) == until_ns
            ):
                # Our own write, applied by an attempt whose answer was lost: until_ns is
                # unique per store, so nobody else can have written this exact row.
                return self._lease(lease_id, request, old, sent_at=sent_at)
            return old
        except (asyncio.CancelledError, LeaseUnavailableError):
            # The write may have reached DynamoDB with nobody left to heartbeat or release it:
            # undo it if it landed, in the background so as not to hold up the caller.
            self._spawn(self._undo_acquire(key, lease_id, request.lessee_id, until_ns))
            raise
        try:
            lease = self._lease(lease_id, request, response["Attributes"], sent_at=sent_at)
        except LeaseStoreError:
            # Malformed bookkeeping (e.g. a fractional token): a lease that could never be
            # renewed or released under its token. Free the row again, then report it.
            await self._undo_acquire(key, lease_id, request.lessee_id, until_ns)
            raise
        get_logger().debug(
            "acquired %s for %s, token %s",
            lease_id,
            request.lessee_id,
            lease.fencing_token,
            extra=_extra(lease),
        )
        return lease

    async def _undo_acquire(
        self, key: dict[str, Any], lease_id: str, lessee: str, until_ns: int
    ) -> None:
        try:
            async with asyncio.timeout(_CLEANUP_TIMEOUT):
                await self._call(
                    lambda: self.client.update_item(
                        TableName=self.table_name,
                        Key=key,
                        UpdateExpression="REMOVE #l SET #u = :zero",
                        ConditionExpression="#l = :l AND #u = :u",
                        ExpressionAttributeNames=self._names_for("#l", "#u"),
                        ExpressionAttributeValues={
                            ":l": {"S": lessee},
                            ":u": {"N": str(until_ns)},
                            ":zero": {"N": "0"},
                        },
                    ),
                    lease_id=lease_id,
                    expect={"ConditionalCheckFailedException"},
                )
        except _Expected:
            return  # the cancelled write never landed (or was already undone)
        except (LeaseError, TimeoutError) as exc:
            get_logger().warning(
                "could not undo the cancelled acquisition of %s by %s: %s; "
                "the row stays held until it expires",
                lease_id,
                lessee,
                exc,
                extra={"lease_id": lease_id, "lessee_id": lessee},
            )
            return
        get_logger().info(
            "undid the cancelled acquisition of %s by %s",
            lease_id,
            lessee,
            extra={"lease_id": lease_id, "lessee_id": lessee},
        )

    async def _renew(
        self, lease: Lease, until: datetime | None, *, return_attributes: bool
    ) -> Lease:
        self._check_lease(lease)
        key = self._key(lease.lease_id)
        sent_at = asyncio.get_running_loop().time()
        until_ns = self._until_ns(lease.request, until)
        if lease.fencing_token > 0:
            condition, values = "#l = :l AND #t = :t", {":t": {"N": str(lease.fencing_token)}}
        else:  # a row only ever leased by Go workers, which keep no token
            condition, values = "#l = :l AND attribute_not_exists(#t)", {}
        try:
            response = await self._call(
                lambda: self.client.update_item(
                    TableName=self.table_name,
                    Key=key,
                    UpdateExpression="SET #u = :u",
                    ConditionExpression=condition,
                    ExpressionAttributeNames=self._names_for("#l", "#u", "#t"),
                    ExpressionAttributeValues={
                        ":l": {"S": lease.lessee_id},
                        ":u": {"N": str(until_ns)},
                        **values,
                    },
                    ReturnValues="ALL_NEW" if return_attributes else "NONE",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                ),
                lease_id=lease.lease_id,
                expect={"ConditionalCheckFailedException"},
            )
        except _Expected as failed:
            reason = self._describe(failed.item)
            raise LeaseLostError(
                f"lease on {lease.lease_id!r} (token {lease.fencing_token}) is lost: "
                f"the item is {reason}",
                lease_id=lease.lease_id,
                reason=reason,
            ) from None
        if return_attributes:
            return self._lease(lease.lease_id, lease.request, response["Attributes"], sent_at)
        return replace(lease, until=ns_to_datetime(until_ns), until_ns=until_ns, sent_at=sent_at)

    # -- plumbing -----------------------------------------------------------------------

    async def _call(
        self,
        operation: Callable[[], Awaitable[_T]],
        *,
        lease_id: str | None = None,
        expect: frozenset[str] | set[str] = frozenset(),
        on_retry: Callable[[], None] | None = None,
    ) -> _T:
        """Run one DynamoDB call with retries, translating errors.

        Codes in ``expect`` raise :class:`_Expected` (carrying the ``ALL_OLD`` item, if any);
        transient errors are retried, then raised as :class:`LeaseUnavailableError`; the rest
        become :class:`LeaseStoreError`.
        """
        for attempt in range(1, self.max_attempts + 1):
            try:
                async with self._slots:
                    return await operation()
            except (asyncio.CancelledError, LeaseError, _Expected):
                raise
            except Exception as exc:
                code = _client_error_code(exc)
                if code is not None and code in expect:
                    raw = getattr(exc, "response", {}).get("Item")
                    raise _Expected(code, raw) from None
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

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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

    def _cutoff_ns(self, max_clock_skew: float) -> int:
        if not isinstance(max_clock_skew, int | float) or isinstance(max_clock_skew, bool):
            raise TypeError(f"max_clock_skew must be a number, not {type(max_clock_skew).__name__}")
        if not 0 <= max_clock_skew < 86_400:
            raise ValueError(
                f"max_clock_skew must be between 0 and one day, not {max_clock_skew!r}"
            )
        return self._clock() - int(max_clock_skew * 1e9)

    def _until_ns(self, request: LeaseRequest, until: datetime | None) -> int:
        value = (
            self._clock() + int(request.duration * 1e9) if until is None else datetime_to_ns(until)
        )
        # Unique per store, so that a lost-response retry can recognise its own write.
        value = max(value, self._last_until_ns + 1)
        self._last_until_ns = value
        return value

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
        return LeaseItem(
            lease_id=lease_id,
            lessee_id=self._str(row, self.lessee_attribute),
            until_ns=self._int(row, self.until_attribute, strict=False),
            fencing_token=self._int(row, self.token_attribute, strict=False),
            attributes=self._attributes(row),
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
            raise LeaseStoreError(
                f"table {self.table_name!r}: attribute {name!r} is {value!r}, not an integer",
                table=self.table_name,
                hash_key=self.hash_key,
            ) from None

    def _describe(self, row: Mapping[str, Any] | None) -> str:
        """Why a row refused a write, for error messages."""
        if row is None:
            return "gone (no such item)"
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
    """An anticipated error code (usually a failed condition), with the row DynamoDB returned."""

    def __init__(self, code: str, item: dict[str, Any] | None) -> None:
        super().__init__(code)
        self.code = code
        self.item = item


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


def _extra(lease: Lease) -> dict[str, Any]:
    """Structured fields for every log record about a lease."""
    return {
        "lease_id": lease.lease_id,
        "lessee_id": lease.lessee_id,
        "fencing_token": lease.fencing_token,
    }
