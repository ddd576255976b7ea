"""Each request of the lease table, built by a pure function: expressions, names, values.

Every name travels in ``ExpressionAttributeNames`` and every value in
``ExpressionAttributeValues``, and each request declares exactly the placeholders its
expressions use (DynamoDB refuses unused ones). Values that exist only once a write is
about to be sent (its ``LeaseUntil``, the clock rule's cutoff) are arguments: the caller
builds the request at that moment (see ``calls.Calls.call``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeSerializer

from .._types import SESSION_HELD_FLOOR, LeaseItem
from .schema import (
    BUCKET,
    DURATION,
    HANDOFF,
    HANDOFF_UNTIL,
    KEY,
    LESSEE,
    SESSION,
    SESSION_UNTIL,
    TOKEN,
    UNTIL,
    Schema,
)

__all__ = [
    "acquire",
    "add_index",
    "add_item",
    "backfill_bucket",
    "backfill_scan",
    "bucket_of",
    "create_table",
    "duration_value",
    "get_item",
    "index_attribute_definitions",
    "index_definition",
    "query_available",
    "query_session_held",
    "release",
    "renew",
    "scan",
    "scan_session_held",
    "undo_acquire",
    "user_attributes",
]

Request = dict[str, Any]

_serializer = TypeSerializer()
# DynamoDB's type name of a number, for attribute_type(): a hand-written row with a string
# LeaseUntil or LeaseToken must be refused, not compared (moto even fails with a 500).
_NUMBER = {"S": "N"}
_ZERO = {"N": "0"}
_FLOOR = {"N": str(SESSION_HELD_FLOOR)}
# The bookkeeping a projection reads: enough for a LeaseItem without user attributes.
_PROJECTION = "#k, #l, #u, #t, #d, #s"
_PROJECTED = (KEY, LESSEE, UNTIL, TOKEN, DURATION, SESSION)
# Every freeing write also drops the session reference: a row never keeps a stale one.
_FREE = "REMOVE #l, #d, #s SET #u = :zero"
# Session rows are never items: every item scan filters them out.
_NOT_SESSION = "attribute_not_exists(#su)"


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def tenure(lessee_id: str, token: int) -> tuple[str, dict[str, Any]]:
    """The condition (and its values) that the row is still in this tenure (lessee, token)."""
    values: dict[str, Any] = {":l": {"S": lessee_id}}
    if token != 0:
        values[":t"] = _n(token)
        return "#l = :l AND #t = :t", values
    # A row only ever leased by Go workers, which keep no token, or a stored token 0.
    values[":zero"] = _ZERO
    return "#l = :l AND (attribute_not_exists(#t) OR #t = :zero)", values


def acquire(
    schema: Schema,
    lease_id: str,
    lessee_id: str,
    *,
    until_ns: int,
    duration: Mapping[str, Any],
    cutoff_ns: int | None,
    expect: LeaseItem | None,
    session: str | None = None,
) -> Request:
    """Take the row if it is free, or held and takeable; raise the fencing token.

    Held rows are takeable when expired by the clock rule (``LeaseUntil < cutoff_ns``;
    ``cutoff_ns`` None: never by the clock) and, with ``expect``, only while still exactly
    in the state read (lessee and ``LeaseUntil``). The token is pinned as read with
    ``expect`` (a free row too), else only required to be a number. Under a ``session``
    (its row's key) the row gets the key and no duration (the session's row carries the
    expiry), and ``until_ns`` is the session-held value (SESSION_HELD_FLOOR + the
    acquisition's stamp); else any session key is removed. Any handoff request is removed:
    it was made to the previous tenure (docs/balancing.md).
    """
    values: dict[str, Any] = {}
    held: list[str] = []  # what makes a held row takeable, all of it required
    if expect is not None and expect.lessee_id is not None:
        held.append("#l = :ol AND #u = :ou")
        values[":ol"] = {"S": expect.lessee_id}
        values[":ou"] = _n(expect.until_ns)
    if cutoff_ns is not None and (expect is None or expect.lessee_id is not None):
        held.append("attribute_type(#u, :n) AND #u < :cutoff")
        values[":cutoff"] = _n(cutoff_ns)
        values[":n"] = _NUMBER
    takeable = "attribute_not_exists(#l)"
    if held:
        takeable = f"attribute_not_exists(#l) OR ({' AND '.join(held)})"
    if expect is None:
        # A string token would fail the increment (a ValidationException, not a refusal).
        token = "(attribute_not_exists(#t) OR attribute_type(#t, :n))"
        values[":n"] = _NUMBER
    elif expect.fencing_token != 0:
        # The token as read pins the row, free or held: a late duplicate of this request
        # (timed out, undone) cannot re-take the row once anyone has written it since, and
        # a token read as malformed (0) or a fraction is never matched.
        token = "#t = :ot"
        values[":ot"] = _n(expect.fencing_token)
    else:
        # No token, or a stored 0 (a hand-made row): neither test holds for a malformed one.
        token = "(attribute_not_exists(#t) OR #t = :zero)"
    values.update({":l": {"S": lessee_id}, ":zero": _ZERO, ":one": _n(1)})
    sets = "SET #l = :l, #u = :u, #t = if_not_exists(#t, :zero) + :one"
    values[":u"] = _n(until_ns)
    if session is None:
        update = f"{sets}, #d = :d REMOVE #s, #h, #hu"
        values[":d"] = duration
    else:
        update = f"{sets}, #s = :session REMOVE #d, #h, #hu"
        values[":session"] = {"S": session}
    return {
        "TableName": schema.table_name,
        "Key": schema.key(lease_id),
        "UpdateExpression": update,
        "ConditionExpression": f"attribute_exists(#k) AND {token} AND ({takeable})",
        "ExpressionAttributeNames": schema.names(
            KEY, LESSEE, UNTIL, TOKEN, DURATION, SESSION, HANDOFF, HANDOFF_UNTIL
        ),
        "ExpressionAttributeValues": values,
        "ReturnValues": "ALL_NEW",
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def renew(
    schema: Schema,
    lease_id: str,
    lessee_id: str,
    token: int,
    *,
    until_ns: int,
    duration: Mapping[str, Any],
    return_attributes: bool,
) -> Request:
    """Move the tenure's expiry to ``until_ns``: only in this tenure, and only forward.

    Forward only: a late request of an earlier renewal must never move the expiry back.
    """
    condition, values = tenure(lessee_id, token)
    values.update({":n": _NUMBER, ":u": _n(until_ns), ":d": duration})
    return {
        "TableName": schema.table_name,
        "Key": schema.key(lease_id),
        "UpdateExpression": "SET #u = :u, #d = :d",
        "ConditionExpression": (
            f"{condition} AND (attribute_not_exists(#u) OR (attribute_type(#u, :n) AND #u < :u))"
        ),
        "ExpressionAttributeNames": schema.names(LESSEE, UNTIL, TOKEN, DURATION),
        "ExpressionAttributeValues": values,
        "ReturnValues": "ALL_NEW" if return_attributes else "NONE",
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def release(schema: Schema, lease_id: str, lessee_id: str, token: int) -> Request:
    """Free the row if still in this tenure: no lessee, ``LeaseUntil`` 0, the token kept."""
    condition, values = tenure(lessee_id, token)
    values[":zero"] = _ZERO
    return {
        "TableName": schema.table_name,
        "Key": schema.key(lease_id),
        "UpdateExpression": _FREE,
        "ConditionExpression": condition,
        "ExpressionAttributeNames": schema.names(LESSEE, UNTIL, TOKEN, DURATION, SESSION),
        "ExpressionAttributeValues": values,
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def undo_acquire(
    schema: Schema,
    lease_id: str,
    lessee_id: str,
    until_ns: int,
    token: int | None,
    session: str | None = None,
) -> Request:
    """Free the row only if it shows exactly our acquiring write (lessee, expiry, token, and
    the session key for one under a ``session``; the expiry is unique either way)."""
    condition = "#l = :l AND #u = :u"
    values: dict[str, Any] = {":l": {"S": lessee_id}, ":u": _n(until_ns), ":zero": _ZERO}
    names = schema.names(LESSEE, UNTIL, DURATION, SESSION)
    if token is not None:
        condition += " AND #t = :t"
        values[":t"] = _n(token)
        names.update(schema.names(TOKEN))
    if session is not None:
        condition += " AND #s = :s"
        values[":s"] = {"S": session}
    return {
        "TableName": schema.table_name,
        "Key": schema.key(lease_id),
        "UpdateExpression": _FREE,
        "ConditionExpression": condition,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


def add_item(
    schema: Schema,
    lease_id: str,
    layout: Mapping[str, Any],
    user: Mapping[str, Any],
) -> tuple[Request, dict[str, Any]]:
    """Create the row, free with ``LeaseUntil`` 0, if it does not exist; and the row it writes.

    ``layout`` holds the table layout's own attributes (the bucket), ``user`` the user's,
    both as DynamoDB values.
    """
    names = schema.names(KEY, UNTIL)
    values: dict[str, Any] = {":zero": _ZERO}
    sets = ["#u = :zero"]
    written: dict[str, Any] = {**schema.key(lease_id), schema.until_attribute: _ZERO}
    for stem, attributes in (("e", layout), ("a", user)):
        for i, (name, value) in enumerate(attributes.items()):
            names[f"#{stem}{i}"] = name
            values[f":{stem}{i}"] = value
            sets.append(f"#{stem}{i} = :{stem}{i}")
            written[name] = value
    request = {
        "TableName": schema.table_name,
        "Key": schema.key(lease_id),
        "UpdateExpression": "SET " + ", ".join(sets),
        "ConditionExpression": "attribute_not_exists(#k)",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }
    return request, written


def backfill_bucket(schema: Schema, lease_id: str, bucket: int) -> Request:
    """Write the bucket of an existing row, changing nothing else."""
    return {
        "TableName": schema.table_name,
        "Key": schema.key(lease_id),
        "UpdateExpression": "SET #b = :b",
        "ConditionExpression": "attribute_exists(#k)",
        "ExpressionAttributeNames": schema.names(KEY, BUCKET),
        "ExpressionAttributeValues": {":b": _n(bucket)},
    }


def backfill_scan(schema: Schema) -> Request:
    """Read every row's key and bucket (the scan of ``backfill_buckets``)."""
    return {
        "TableName": schema.table_name,
        "ProjectionExpression": "#k, #b",
        # Session rows never get a bucket: the index must never offer them.
        "FilterExpression": _NOT_SESSION,
        "ExpressionAttributeNames": schema.names(KEY, BUCKET, SESSION_UNTIL),
    }


def get_item(
    schema: Schema, lease_id: str, *, consistent_read: bool = True, projection_only: bool = False
) -> Request:
    """Read one row; just the bookkeeping with ``projection_only``."""
    request: Request = {
        "TableName": schema.table_name,
        "Key": schema.key(lease_id),
        "ConsistentRead": consistent_read,
    }
    if projection_only:
        request["ProjectionExpression"] = _PROJECTION
        request["ExpressionAttributeNames"] = schema.names(*_PROJECTED)
    return request


def scan(
    schema: Schema,
    *,
    cutoff_ns: int | None = None,
    projection_only: bool = False,
    consistent_read: bool = False,
    page_size: int | None = None,
) -> Request:
    """Read every item (never a session row); with ``cutoff_ns`` only the candidates: those
    free or with ``LeaseUntil < cutoff_ns`` (never a session-held one: see
    :func:`scan_session_held`)."""
    request: Request = {"TableName": schema.table_name, "FilterExpression": _NOT_SESSION}
    request["ExpressionAttributeNames"] = schema.names(SESSION_UNTIL)
    if projection_only or cutoff_ns is not None:
        request["ProjectionExpression"] = _PROJECTION
        request["ExpressionAttributeNames"].update(schema.names(*_PROJECTED))
    if cutoff_ns is not None:
        request["FilterExpression"] = (
            f"{_NOT_SESSION} AND (attribute_not_exists(#l) OR "
            "(attribute_type(#u, :n) AND #u < :cutoff))"
        )
        request["ExpressionAttributeValues"] = {":cutoff": _n(cutoff_ns), ":n": _NUMBER}
    if consistent_read:
        request["ConsistentRead"] = True
    if page_size is not None:
        request["Limit"] = page_size
    return request


def scan_session_held(schema: Schema) -> Request:
    """Read the items held under a session (``LeaseSession`` set; never a session row):
    candidates once their session is judged dead, read only when nothing free was usable."""
    return {
        "TableName": schema.table_name,
        "FilterExpression": f"{_NOT_SESSION} AND attribute_exists(#s)",
        "ProjectionExpression": _PROJECTION,
        "ExpressionAttributeNames": schema.names(SESSION_UNTIL, *_PROJECTED),
    }


def query_available(schema: Schema, index_name: str, bucket: int, cutoff_ns: int) -> Request:
    """Read one bucket of the index for rows with ``LeaseUntil < cutoff_ns`` (free rows: 0)."""
    return {
        "TableName": schema.table_name,
        "IndexName": index_name,
        "KeyConditionExpression": "#b = :b AND #u < :cutoff",
        "ExpressionAttributeNames": schema.names(BUCKET, UNTIL),
        "ExpressionAttributeValues": {":b": _n(bucket), ":cutoff": _n(cutoff_ns)},
    }


def query_session_held(schema: Schema, index_name: str, bucket: int) -> Request:
    """Read one bucket of the index for rows with ``LeaseUntil >= SESSION_HELD_FLOOR``: items
    held under a session (session rows have no bucket), candidates once their session is
    judged dead."""
    return {
        "TableName": schema.table_name,
        "IndexName": index_name,
        "KeyConditionExpression": "#b = :b AND #u >= :floor",
        "ExpressionAttributeNames": schema.names(BUCKET, UNTIL),
        "ExpressionAttributeValues": {":b": _n(bucket), ":floor": _FLOOR},
    }


def index_definition(schema: Schema, index_name: str) -> dict[str, Any]:
    """The indexed layout's global secondary index: (bucket, ``LeaseUntil``)."""
    return {
        "IndexName": index_name,
        "KeySchema": [
            {"AttributeName": schema.bucket_attribute, "KeyType": "HASH"},
            {"AttributeName": schema.until_attribute, "KeyType": "RANGE"},
        ],
        # The lessee and token ride along (a few bytes per row: the index entry is rewritten
        # on every acquire and renewal anyway, since LeaseUntil is its sort key), so that
        # find_available returns complete snapshots, not bare keys.
        "Projection": {
            "ProjectionType": "INCLUDE",
            "NonKeyAttributes": [schema.lessee_attribute, schema.token_attribute],
        },
    }


def index_attribute_definitions(schema: Schema) -> list[dict[str, str]]:
    """The attribute definitions the index's keys need."""
    return [
        {"AttributeName": schema.bucket_attribute, "AttributeType": "N"},
        {"AttributeName": schema.until_attribute, "AttributeType": "N"},
    ]


def create_table(schema: Schema, index_name: str | None = None) -> Request:
    """Create the table, on-demand, keyed by the hash key; with the layout's index if named."""
    definitions: list[Any] = [{"AttributeName": schema.hash_key, "AttributeType": "S"}]
    request: Request = {
        "TableName": schema.table_name,
        "KeySchema": [{"AttributeName": schema.hash_key, "KeyType": "HASH"}],
        "AttributeDefinitions": definitions,
        "BillingMode": "PAY_PER_REQUEST",
    }
    if index_name is not None:
        definitions += index_attribute_definitions(schema)
        request["GlobalSecondaryIndexes"] = [index_definition(schema, index_name)]
    return request


def add_index(
    schema: Schema, index_name: str, *, throughput: Mapping[str, int] | None = None
) -> Request:
    """Add the indexed layout's index to an existing table; a provisioned table's index
    needs its own ``throughput`` (read and write capacity units), an on-demand one's none."""
    index = index_definition(schema, index_name)
    if throughput is not None:
        index["ProvisionedThroughput"] = {
            "ReadCapacityUnits": int(throughput["ReadCapacityUnits"]),
            "WriteCapacityUnits": int(throughput["WriteCapacityUnits"]),
        }
    return {
        "TableName": schema.table_name,
        # The table's own key too: moto replaces the definitions with these.
        "AttributeDefinitions": [
            {"AttributeName": schema.hash_key, "AttributeType": "S"},
            *index_attribute_definitions(schema),
        ],
        "GlobalSecondaryIndexUpdates": [{"Create": index}],
    }


def duration_value(duration: float, until_ns: int, now_ns: int) -> dict[str, Any]:
    """The duration map written with ``until_ns``: how long observers must see it unchanged.

    An explicit ``until`` beyond now + duration stretches the duration to match (measured
    on the writer's clock alone), so observers never wait less than the holder expects.
    """
    nanos = max(int(duration * 1e9), until_ns - now_ns)
    millis = -(-nanos // 1_000_000)  # rounded up: never shorter than the holder's lease
    return {"M": {"ms": _n(millis), "until": _n(until_ns)}}


def bucket_of(lease_id: str, buckets: int) -> int:
    """``int.from_bytes(blake2b(id_utf8, digest_size=8).digest(), "big") % buckets``."""
    digest = hashlib.blake2b(lease_id.encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(digest.digest(), "big") % buckets


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


def user_attributes(schema: Schema, attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """The user's attributes as DynamoDB values; never the key or a bookkeeping attribute."""
    if attributes is None:
        return {}
    if not isinstance(attributes, Mapping):
        raise TypeError(f"attributes must be a mapping, not {type(attributes).__name__}")
    out = {}
    for name, value in attributes.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"attributes: names must be non-empty strings, not {name!r}")
        if name == schema.hash_key or name in schema.bookkeeping:
            raise ValueError(
                f"attributes: {name!r} is the hash key or a bookkeeping attribute "
                f"({schema.hash_key}, {', '.join(sorted(schema.bookkeeping))}) of this table"
            )
        try:
            out[name] = _serializer.serialize(_as_dynamodb_value(value))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"attributes[{name!r}]: {exc}") from None
    return out
