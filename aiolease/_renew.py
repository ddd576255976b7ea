"""The renewing write: only in this tenure (lessee and token), and only forward in time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from ._errors import LeaseLostError, LeaseUnavailableError
from ._table import Table
from ._types import Lease, datetime_to_ns, ns_to_datetime
from ._wire import requests, rows
from ._wire.calls import Retried
from ._wire.codes import CONDITION_FAILED, Expected

__all__ = ["renew"]


async def renew(
    table: Table, lease: Lease, until: datetime | None, *, return_attributes: bool
) -> Lease:
    """Extend ``lease`` to ``until`` (default: now + duration); :class:`LeaseLostError` if
    the row left its tenure. A renewal applied twice (a lost answer) is still a renewal."""
    schema = table.schema
    explicit_ns = None if until is None else datetime_to_ns(until)
    sent_at, until_ns = 0.0, 0

    def request() -> dict[str, Any]:
        return requests.renew(
            schema,
            lease.lease_id,
            lease.lessee_id,
            lease.fencing_token,
            until_ns=until_ns,
            duration=requests.duration_value(
                lease.request.duration, until_ns, table.clock.wall_ns()
            ),
            return_attributes=return_attributes,
        )

    def stamp() -> dict[str, Any]:
        nonlocal sent_at, until_ns
        sent_at, until_ns = table.stamps.take(lease.lease_id, lease.request.duration, explicit_ns)
        return request()

    restamped = False
    row: Mapping[str, Any] | None = None
    send: Any = stamp
    while True:
        retried = Retried()  # this request was retried: it may have landed unanswered
        try:
            response = await table.calls.call(
                "update_item",
                send,
                lease_id=lease.lease_id,
                expect={CONDITION_FAILED},
                on_retry=retried,
            )
        except Expected as failed:
            ambiguous = retried.seen or failed.retried
            old = await table.refused_row(failed, lease.lease_id, full=return_attributes)
            stored = rows.stored_until(schema, old) if rows.holds(schema, old, lease) else None
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
                # Still ours, but the stored expiry is not earlier than ours: this holder's
                # clock stepped back, or an explicit until was sooner (or the same, written
                # by another store of this lease). Write just above it; the local deadline
                # still counts from the first send. For a sooner until it ends before the
                # stored expiry; after a backward clock step of X it can end up to X (real
                # time) after stored + 1: this holder's clock error, which max_clock_skew
                # must cover like any skew.
                until_ns = table.stamps.issue(lease.lease_id, stored + 1)
                send = request()
                restamped = True
                continue
            if not ambiguous:
                table.stamps.forget(lease.lease_id, until_ns)
            detail = table.describe_row(old)
            raise LeaseLostError(
                f"lease on {lease.lease_id!r} (token {lease.fencing_token}) is lost: "
                f"the item is {detail}",
                lease_id=lease.lease_id,
                reason=rows.refusal(schema, old),
                detail=detail,
                holder=None if old is None else rows.string(old, schema.lessee_attribute),
            ) from None
        if return_attributes:
            row = response.get("Attributes")
        break
    if not return_attributes:
        return replace(lease, until=ns_to_datetime(until_ns), until_ns=until_ns, _sent_at=sent_at)
    if not row:
        # Answered 200 without the row asked for: read it.
        row = await table.read_row(lease.lease_id, full=True)
        if not rows.holds(schema, row, lease) or rows.stored_until(schema, row) != until_ns:
            raise LeaseUnavailableError(
                f"renewing {lease.lease_id!r} in table {schema.table_name!r}: the endpoint "
                "answered without the item's attributes and the row does not show the write",
                lease_id=lease.lease_id,
            )
    assert row is not None
    return rows.lease(schema, lease.lease_id, lease.request, row, sent_at)
