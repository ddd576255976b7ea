"""Handoff on request (docs/balancing.md): the two writes and the parse of a request.

A worker below its fair share asks a holder for one item by setting ``LeaseHandoff`` (its
session key) and ``LeaseHandoffUntil`` (wall-clock ns) on the item, pinned to the holder's
tenure (lessee and token). Neither write touches the lease's own attributes, so a request
can never change who holds an item or until when; acquisitions remove the request (see
``requests.acquire``), releases keep it, so that a freed item stays reserved for the
requester until ``LeaseHandoffUntil``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import rows
from .schema import HANDOFF, HANDOFF_UNTIL, LESSEE, TOKEN, Schema

__all__ = ["Handoff", "parse", "request_handoff", "withdraw_handoff"]

Request = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Handoff:
    """A handoff request standing on an item: who asks (a session key), until when (ns)."""

    requester: str
    until_ns: int


def parse(schema: Schema, row: Mapping[str, Any]) -> Handoff | None:
    """The item's handoff request, or ``None`` (none, or malformed: read as none)."""
    requester = rows.string(row, schema.handoff_attribute)
    if requester is None:
        return None
    until_ns = rows.number(schema, row, schema.handoff_until_attribute, strict=False)
    return Handoff(requester, until_ns) if until_ns > 0 else None


def request_handoff(
    schema: Schema,
    item_id: str,
    holder_lessee: str,
    holder_token: int,
    requester_session: str,
    until_ns: int,
    now_ns: int,
) -> Request:
    """Ask the holder of ``item_id`` for it: only in the tenure read (lessee, token), and
    only over no request, an expired one, or our own (a resend lands the same). A
    malformed request (``LeaseHandoff`` not a string, ``LeaseHandoffUntil`` missing or not
    a number) counts as none here as in :func:`parse`, so that it cannot block every
    later request for the rest of the tenure."""
    return {
        "TableName": schema.table_name,
        "Key": schema.key(item_id),
        "UpdateExpression": "SET #h = :r, #hu = :hu",
        "ConditionExpression": (
            "#l = :holder AND #t = :token AND (NOT attribute_type(#h, :s) OR"
            " NOT attribute_type(#hu, :n) OR #hu < :now OR #h = :r)"
        ),
        "ExpressionAttributeNames": schema.names(LESSEE, TOKEN, HANDOFF, HANDOFF_UNTIL),
        "ExpressionAttributeValues": {
            ":r": {"S": requester_session},
            ":hu": {"N": str(until_ns)},
            ":holder": {"S": holder_lessee},
            ":token": {"N": str(holder_token)},
            ":now": {"N": str(now_ns)},
            ":s": {"S": "S"},
            ":n": {"S": "N"},
        },
    }


def withdraw_handoff(
    schema: Schema, item_id: str, requester_session: str, until_ns: int | None = None
) -> Request:
    """Remove ``requester_session``'s request from ``item_id``; with ``until_ns`` only the
    request as read (the holder's withdrawal must not remove a fresh one)."""
    condition = "#h = :r"
    values: dict[str, Any] = {":r": {"S": requester_session}}
    if until_ns is not None:
        condition += " AND #hu = :hu"
        values[":hu"] = {"N": str(until_ns)}
    return {
        "TableName": schema.table_name,
        "Key": schema.key(item_id),
        "UpdateExpression": "REMOVE #h, #hu",
        "ConditionExpression": condition,
        "ExpressionAttributeNames": schema.names(HANDOFF, HANDOFF_UNTIL),
        "ExpressionAttributeValues": values,
    }
