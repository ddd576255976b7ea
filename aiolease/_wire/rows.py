"""Parsing the lease table's answers into the library's types: pure functions of a row.

A row is a raw DynamoDB item (``{"LeaseUntil": {"N": "..."}, ...}``). Malformed bookkeeping
reads as absent or 0 where a lenient reading is safe, and raises :class:`LeaseStoreError`
naming the table, the item and the attribute where it is not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from .._errors import LeaseStoreError, MalformedRowError
from .._types import (
    MAX_DURATION,
    SESSION_HELD_FLOOR,
    Lease,
    LeaseItem,
    LeaseRequest,
    SessionRow,
    ns_to_datetime,
)
from .schema import Schema

__all__ = [
    "check_index",
    "check_table",
    "describe",
    "duration",
    "holds",
    "is_ours",
    "item",
    "leasable",
    "lease",
    "malformed_error",
    "number",
    "plain",
    "registered",
    "session_refusal",
    "session_row",
    "stored_until",
    "string",
]

_deserializer = TypeDeserializer()


def string(row: Mapping[str, Any], name: str) -> str | None:
    """A string attribute, or ``None`` if missing or not a string."""
    value = row.get(name)
    return value.get("S") if isinstance(value, Mapping) else None


def number(schema: Schema, row: Mapping[str, Any], name: str, *, strict: bool = True) -> int:
    """A numeric bookkeeping attribute; missing is 0, malformed is an error (or 0, lenient)."""
    lease_id = string(row, schema.hash_key)
    value = row.get(name)
    if value is None:
        return 0
    try:
        parsed = Decimal(value["N"])
        if parsed != parsed.to_integral_value():
            raise ValueError(parsed)  # tokens and expiries are whole numbers
        return int(parsed)
    except (KeyError, TypeError, ArithmeticError, ValueError):
        if not strict:
            return 0
        where = "" if lease_id is None else f" item {lease_id!r}:"
        raise LeaseStoreError(
            f"table {schema.table_name!r}:{where} attribute {name!r} is {value!r}, not an integer",
            table=schema.table_name,
            hash_key=schema.hash_key,
            lease_id=lease_id,
        ) from None


def stored_until(schema: Schema, row: Mapping[str, Any] | None) -> int | None:
    """The row's ``LeaseUntil`` if it is a whole number, else ``None``."""
    value = None if row is None else row.get(schema.until_attribute)
    if not isinstance(value, Mapping) or "N" not in value:
        return None
    try:
        parsed = Decimal(value["N"])
    except ArithmeticError:
        return None
    return int(parsed) if parsed == parsed.to_integral_value() else None


def duration(schema: Schema, row: Mapping[str, Any], until_ns: int) -> float | None:
    """The holder's duration in seconds, if it was written with this very ``LeaseUntil``.

    Missing, malformed, stale (the row was since written by a Go worker, which leaves the
    map alone) or absurd (<= 0, > MAX_DURATION) all read as ``None``: use the clock rule.
    """
    value = row.get(schema.duration_attribute)
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


def leasable(schema: Schema, row: Mapping[str, Any]) -> bool:
    """False for a row with a malformed ``LeaseToken`` (not a whole number)."""
    value = row.get(schema.token_attribute)
    if value is None:
        return True
    try:
        parsed = Decimal(value["N"])
    except (KeyError, TypeError, ArithmeticError):
        return False
    return parsed.is_finite() and parsed == parsed.to_integral_value()


def attributes(schema: Schema, row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's user attributes as Python values: without the key and the bookkeeping."""
    skip = schema.bookkeeping | {schema.hash_key}
    return {k: _deserializer.deserialize(v) for k, v in row.items() if k not in skip}


def plain(row: Mapping[str, Any]) -> dict[str, Any]:
    """A raw row as Python values, so that equal numbers compare equal (1.0 == 1)."""
    return {k: _deserializer.deserialize(v) for k, v in row.items()}


def item(schema: Schema, row: Mapping[str, Any]) -> LeaseItem | None:
    """A row as a :class:`LeaseItem` (leniently); ``None`` for a row without the hash key."""
    lease_id = string(row, schema.hash_key)
    if lease_id is None:
        return None
    until_ns = number(schema, row, schema.until_attribute, strict=False)
    return LeaseItem(
        lease_id=lease_id,
        lessee_id=string(row, schema.lessee_attribute),
        until_ns=until_ns,
        fencing_token=number(schema, row, schema.token_attribute, strict=False),
        attributes=attributes(schema, row),
        duration=duration(schema, row, until_ns),
        session=string(row, schema.session_attribute),
    )


def session_row(schema: Schema, row: Mapping[str, Any] | None) -> SessionRow | None:
    """A session row as a :class:`SessionRow` (leniently); ``None`` if ``row`` is not one.

    A session row is told from items by its ``LeaseSessionUntil``. A live one has token 1
    and an expiry above 0; anything else is ended (or malformed: dead all the same, since
    no renewal can match it).
    """
    if row is None or schema.session_until_attribute not in row:
        return None
    key = string(row, schema.hash_key)
    if key is None:
        return None
    until_ns = number(schema, row, schema.session_until_attribute, strict=False)
    token = number(schema, row, schema.token_attribute, strict=False)
    lessee = string(row, schema.lessee_attribute)
    return SessionRow(
        session_id=key,
        lessee_id=lessee,
        until_ns=until_ns,
        token=token,
        duration=duration(schema, row, until_ns),
        ended=until_ns <= 0 or token != 1 or lessee is None or not leasable(schema, row),
    )


def session_refusal(schema: Schema, row: Mapping[str, Any] | None) -> str:
    """Why a session row refused a renewal, in a few words (``LeaseLostError.reason``)."""
    parsed = session_row(schema, row)
    if parsed is None:
        return "session row deleted"
    if parsed.ended:
        return "session ended"
    return "session taken over"


def lease(
    schema: Schema, lease_id: str, request: LeaseRequest, row: Mapping[str, Any], sent_at: float
) -> Lease:
    """The :class:`Lease` a write left in ``row`` (strictly: malformed numbers raise)."""
    until_ns = number(schema, row, schema.until_attribute)
    return Lease(
        lease_id=lease_id,
        request=request,
        until=ns_to_datetime(until_ns),
        fencing_token=number(schema, row, schema.token_attribute),
        attributes=attributes(schema, row),
        until_ns=until_ns,
        _sent_at=sent_at,
    )


def is_ours(
    schema: Schema,
    row: Mapping[str, Any],
    lessee: str,
    until_ns: int,
    token: int | None,
    session: str | None = None,
) -> bool:
    """Whether ``row`` shows the acquiring write of ``lessee`` with expiry ``until_ns``
    (and, under a ``session``, that session's key)."""
    return (
        until_ns > 0
        and string(row, schema.session_attribute) == session
        and string(row, schema.lessee_attribute) == lessee
        and number(schema, row, schema.until_attribute, strict=False) == until_ns
        and (token is None or number(schema, row, schema.token_attribute, strict=False) == token)
    )


def holds(schema: Schema, row: Mapping[str, Any] | None, lease: Lease) -> bool:
    """Whether ``row`` is still in ``lease``'s tenure (lessee and token)."""
    if row is None or string(row, schema.lessee_attribute) != lease.lessee_id:
        return False
    # leasable: a malformed token (read as 0) never matches token 0 (no token, or a 0).
    return (
        leasable(schema, row)
        and number(schema, row, schema.token_attribute, strict=False) == lease.fencing_token
    )


def registered(schema: Schema, row: Mapping[str, Any]) -> dict[str, Any]:
    """What ``add_item`` wrote that no lease changes: key, user attributes and bucket.

    Not the other bookkeeping, which a pool worker may have leased the row with since.
    """
    return plain(
        {
            k: v
            for k, v in row.items()
            if k == schema.bucket_attribute or k not in schema.bookkeeping
        }
    )


def describe(schema: Schema, row: Mapping[str, Any] | None, now_ns: int) -> str:
    """Why a row refused a write, for error messages (``now_ns``: the writer's wall clock)."""
    if row is None:
        return "gone (no such item)"
    if not leasable(schema, row):
        token = row.get(schema.token_attribute)
        return f"malformed (its {schema.token_attribute} is {token!r})"
    holder = string(row, schema.lessee_attribute)
    until = number(schema, row, schema.until_attribute, strict=False)
    token_value = number(schema, row, schema.token_attribute, strict=False)
    if holder is None:
        return f"free (token {token_value})"
    session = string(row, schema.session_attribute)
    if session is not None and until >= SESSION_HELD_FLOOR:
        return f"held by {holder!r} (token {token_value}) under session {session!r}"
    raw_until = row.get(schema.until_attribute)
    if not isinstance(raw_until, Mapping) or "N" not in raw_until:
        return f"held by {holder!r} with a missing or malformed {schema.until_attribute}"
    remaining = (until - now_ns) / 1e9
    return f"held by {holder!r} (token {token_value}, expires in {remaining:.1f} s)"


def refusal(schema: Schema, row: Mapping[str, Any] | None) -> str:
    """Why a row refused a renewal, in a few words (``LeaseLostError.reason``)."""
    if row is None:
        return "item deleted"
    if not leasable(schema, row):
        return "row malformed"
    holder = string(row, schema.lessee_attribute)
    if holder is None:
        return "released by another"
    return f"taken over by {holder!r}"


def malformed_error(schema: Schema, lease_id: str, row: Mapping[str, Any]) -> MalformedRowError:
    """The error for a row whose ``LeaseToken`` is not a whole number."""
    return MalformedRowError(
        f"item {lease_id!r} in table {schema.table_name!r} has a malformed "
        f"{schema.token_attribute} ({row.get(schema.token_attribute)!r}, not a whole number); "
        "fix or delete the row",
        table=schema.table_name,
        hash_key=schema.hash_key,
        lease_id=lease_id,
    )


def check_table(schema: Schema, response: Mapping[str, Any]) -> dict[str, Any]:
    """A DescribeTable answer's table, checked: a single string hash key named as configured."""
    described = response.get("Table")
    if not isinstance(described, Mapping):
        raise LeaseStoreError(
            f"{schema.where()}: the endpoint answered DescribeTable without a table description",
            table=schema.table_name,
            hash_key=schema.hash_key,
        )
    table: dict[str, Any] = dict(described)
    try:
        keys = [(k["AttributeName"], k["KeyType"]) for k in table.get("KeySchema", [])]
        types = {
            a["AttributeName"]: a["AttributeType"] for a in table.get("AttributeDefinitions", [])
        }
    except (KeyError, TypeError):
        keys, types = [], {}
    if keys != [(schema.hash_key, "HASH")] or types.get(schema.hash_key) != "S":
        real = ", ".join(repr(name) for name, _ in keys) or "unknown"
        raise LeaseStoreError(
            f"table {schema.table_name!r} is keyed by {real} (key schema {keys}, {types}), "
            f"not by the configured hash_key {schema.hash_key!r}: a lease table needs the "
            "string hash key named by hash_key and no sort key",
            table=schema.table_name,
            hash_key=schema.hash_key,
        )
    return table


def check_index(schema: Schema, table: Mapping[str, Any], index_name: str) -> dict[str, Any] | None:
    """The indexed layout's index in a table description (checked), or None if it has none."""
    for index in table.get("GlobalSecondaryIndexes", []):
        if index.get("IndexName") != index_name:
            continue
        keys = [(k["AttributeName"], k["KeyType"]) for k in index.get("KeySchema", [])]
        wanted = [(schema.bucket_attribute, "HASH"), (schema.until_attribute, "RANGE")]
        if keys != wanted:
            raise LeaseStoreError(
                f"table {schema.table_name!r}: index {index_name!r} has key schema "
                f"{keys}; the indexed layout needs {wanted}",
                table=schema.table_name,
                hash_key=schema.hash_key,
            )
        return dict(index)
    return None
