"""The requests of session rows (docs/protocol.md, "Sessions"): pure builders, like requests.

A session row is keyed ``aiolease-session:<lessee>:<uuid>``; its ``LeaseSessionUntil`` is the
session's real expiry (0 once ended) and its ``LeaseUntil`` is MAX, so Go workers never take
it. Every write is one conditional ``UpdateItem``; no transactions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._types import MAX_NS
from .schema import DURATION, KEY, LESSEE, SESSION_UNTIL, TOKEN, UNTIL, Schema

__all__ = [
    "end_expired_session",
    "end_session",
    "renew_session",
    "scan_sessions",
    "start_session",
]

Request = dict[str, Any]

_NUMBER = {"S": "N"}
_ZERO = {"N": "0"}
_MAX = {"N": str(MAX_NS)}
# Ending a session (holder or taker): a tombstone that every later renewal fails on.
_END = "SET #t = #t + :one, #su = :zero REMOVE #d"


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def start_session(
    schema: Schema, key: str, lessee_id: str, *, until_ns: int, duration: Mapping[str, Any]
) -> Request:
    """Create a session row: live (token 1) until ``until_ns``; ``LeaseUntil`` MAX for Go.

    Only if the key was never used: a tombstone (an ended session) keeps it used forever.
    """
    return {
        "TableName": schema.table_name,
        "Key": schema.key(key),
        "UpdateExpression": "SET #l = :l, #u = :max, #t = :one, #su = :u, #d = :d",
        "ConditionExpression": "attribute_not_exists(#k)",
        "ExpressionAttributeNames": schema.names(
            KEY, LESSEE, UNTIL, TOKEN, SESSION_UNTIL, DURATION
        ),
        "ExpressionAttributeValues": {
            ":l": {"S": lessee_id},
            ":max": _MAX,
            ":one": _n(1),
            ":u": _n(until_ns),
            ":d": duration,
        },
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def renew_session(
    schema: Schema,
    key: str,
    lessee_id: str,
    token: int,
    *,
    until_ns: int,
    duration: Mapping[str, Any],
) -> Request:
    """Move a live session's expiry forward to ``until_ns``, only in its tenure.

    A session ended since (token bumped, expiry 0) refuses it: the session is lost.
    """
    return {
        "TableName": schema.table_name,
        "Key": schema.key(key),
        "UpdateExpression": "SET #su = :u, #d = :d",
        "ConditionExpression": "#l = :l AND #t = :t AND attribute_type(#su, :n) AND #su < :u",
        "ExpressionAttributeNames": schema.names(LESSEE, TOKEN, SESSION_UNTIL, DURATION),
        "ExpressionAttributeValues": {
            ":l": {"S": lessee_id},
            ":t": _n(token),
            ":n": _NUMBER,
            ":u": _n(until_ns),
            ":d": duration,
        },
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def end_session(schema: Schema, key: str, lessee_id: str, token: int) -> Request:
    """The holder ends its session (a tombstone: token bumped, expiry 0), if still its own."""
    return {
        "TableName": schema.table_name,
        "Key": schema.key(key),
        "UpdateExpression": _END,
        "ConditionExpression": "#l = :l AND #t = :t",
        "ExpressionAttributeNames": schema.names(LESSEE, TOKEN, SESSION_UNTIL, DURATION),
        "ExpressionAttributeValues": {
            ":l": {"S": lessee_id},
            ":t": _n(token),
            ":one": _n(1),
            ":zero": _ZERO,
        },
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def end_expired_session(
    schema: Schema, key: str, lessee_id: str, token: int, until_ns: int
) -> Request:
    """A taker ends a session judged expired, pinned to the state read (lessee, token and
    expiry): a renewal that landed since makes it fail."""
    return {
        "TableName": schema.table_name,
        "Key": schema.key(key),
        "UpdateExpression": _END,
        "ConditionExpression": "#l = :ol AND #t = :ot AND #su = :ou",
        "ExpressionAttributeNames": schema.names(LESSEE, TOKEN, SESSION_UNTIL, DURATION),
        "ExpressionAttributeValues": {
            ":ol": {"S": lessee_id},
            ":ot": _n(token),
            ":ou": _n(until_ns),
            ":one": _n(1),
            ":zero": _ZERO,
        },
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def scan_sessions(schema: Schema) -> Request:
    """Read every session row (live ones and tombstones)."""
    return {
        "TableName": schema.table_name,
        "FilterExpression": "attribute_exists(#su)",
        "ExpressionAttributeNames": schema.names(SESSION_UNTIL),
    }
