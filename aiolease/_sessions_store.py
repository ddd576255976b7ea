"""Session rows' writes and reads (docs/protocol.md, "Sessions"): start, renew, end, judge.

A session row carries one holder's expiry for every item it holds under the session, so
one renewal per period keeps them all. Each write is one conditional ``UpdateItem`` with the
acquisition's rules for lost answers: a retried write whose refusal shows exactly our own
value was ours. Ending writes a tombstone (token bumped, expiry 0) instead of deleting, so
that a late duplicate of a start can never re-create the row and no renewal can ever match.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

from ._errors import (
    LeaseError,
    LeaseLostError,
    LeaseNotObtainedError,
    LeaseStoreError,
    LeaseUnavailableError,
)
from ._log import get_logger
from ._table import Table
from ._types import (
    SESSION_PREFIX,
    Lease,
    LeaseItem,
    LeaseRequest,
    SessionRow,
    check_lease,
    ns_to_datetime,
)
from ._wire import handoff, pool, requests, rows, sessions
from ._wire.calls import Retried
from ._wire.codes import CONDITION_FAILED, Expected

__all__ = ["SessionMethods"]

# How long the end write after a cancelled start may take (like an acquisition's undo).
CLEANUP_TIMEOUT = 5.0


def new_key(lessee_id: str) -> str:
    """A fresh session row key: never reused, so no late write of an old session matches."""
    return f"{SESSION_PREFIX}{lessee_id}:{uuid.uuid4().hex}"


def _check_session(table: Table, lease: object) -> Lease:
    check_lease(lease)
    assert isinstance(lease, Lease)
    if lease._session is not None or not lease.lease_id.startswith(SESSION_PREFIX):
        raise ValueError(f"{lease.lease_id!r} is not a session's lease")
    table.schema.key(lease.lease_id)
    return lease


def _session_lease(request: LeaseRequest, key: str, until_ns: int, sent_at: float) -> Lease:
    return Lease(
        lease_id=key,
        request=request,
        until=ns_to_datetime(until_ns),
        fencing_token=1,
        until_ns=until_ns,
        _sent_at=sent_at,
    )


def _live_at(row: SessionRow | None, lessee: str, token: int, until_ns: int) -> bool:
    """Whether ``row`` shows the live session (lessee, token) at exactly ``until_ns``."""
    return (
        row is not None
        and not row.ended
        and row.lessee_id == lessee
        and row.token == token
        and row.until_ns == until_ns
    )


async def start(table: Table, request: LeaseRequest) -> Lease:
    """Create a live session row for ``request``; its Lease (token 1, the session's expiry)."""
    if not isinstance(request, LeaseRequest):
        raise TypeError(f"request must be a LeaseRequest, not {type(request).__name__}")
    schema = table.schema
    key = new_key(request.lessee_id)
    schema.key(key)  # a lessee ID too long for a key: a ValueError before anything is sent
    sent_at, until_ns = 0.0, 0
    retried = Retried()

    def build() -> dict[str, Any]:
        nonlocal sent_at, until_ns
        sent_at, until_ns = table.stamps.take(key, request.duration, None)
        duration = requests.duration_value(request.duration, until_ns, table.clock.wall_ns())
        return sessions.start_session(
            schema, key, request.lessee_id, until_ns=until_ns, duration=duration
        )

    try:
        try:
            await table.calls.call(
                "update_item", build, lease_id=key, expect={CONDITION_FAILED}, on_retry=retried
            )
        except Expected as failed:
            old = await table.refused_row(failed, key, full=True)
            if (retried.seen or failed.retried) and _live_at(
                rows.session_row(schema, old), request.lessee_id, 1, until_ns
            ):
                return _session_lease(request, key, until_ns, sent_at)  # ours, answer lost
            raise LeaseNotObtainedError(
                f"session {key!r} could not be started: its row is {table.describe_row(old)}",
                lease_id=key,
                holder=None if old is None else rows.string(old, schema.lessee_attribute),
            ) from None
    except (asyncio.CancelledError, LeaseUnavailableError, LeaseStoreError) as exc:
        # The start may have landed with nobody to renew or end it: end it (shielded,
        # bounded), so that it never looks live to anyone. A store error (a denied retry
        # or read-back) only after an attempt that may have landed unanswered.
        if isinstance(exc, LeaseStoreError) and not retried.seen:
            raise
        if until_ns:
            undo = _end_quietly(table, key, request.lessee_id)
            await table.tasks.run_shielded(undo, CLEANUP_TIMEOUT, table.clock)
        raise
    get_logger().debug("started session %s for %s", key, request.lessee_id, extra={"lease_id": key})
    return _session_lease(request, key, until_ns, sent_at)


async def renew(table: Table, lease: Lease) -> Lease:
    """Move the session's expiry to now + duration; :class:`LeaseLostError` once it is ended."""
    schema = table.schema
    sent_at, until_ns = 0.0, 0

    def request() -> dict[str, Any]:
        duration = requests.duration_value(lease.request.duration, until_ns, table.clock.wall_ns())
        return sessions.renew_session(
            schema,
            lease.lease_id,
            lease.lessee_id,
            lease.fencing_token,
            until_ns=until_ns,
            duration=duration,
        )

    def stamp() -> dict[str, Any]:
        nonlocal sent_at, until_ns
        sent_at, until_ns = table.stamps.take(lease.lease_id, lease.request.duration, None)
        return request()

    send: Any = stamp
    restamped = False
    while True:
        retried = Retried()
        try:
            await table.calls.call(
                "update_item",
                send,
                lease_id=lease.lease_id,
                expect={CONDITION_FAILED},
                on_retry=retried,
            )
        except Expected as failed:
            raw = await table.refused_row(failed, lease.lease_id, full=True)
            old = rows.session_row(schema, raw)
            ambiguous = retried.seen or failed.retried
            if ambiguous and _live_at(old, lease.lessee_id, lease.fencing_token, until_ns):
                break  # our own renewal, whose answer was lost
            ours = old is not None and _live_at(
                old, lease.lessee_id, lease.fencing_token, old.until_ns
            )
            if ours and old is not None and old.until_ns >= until_ns:
                if restamped:
                    # Moved past our re-stamp by another renewal of this very session.
                    until_ns = old.until_ns
                    break
                # Still live, but not earlier than ours: this host's clock stepped back (as
                # for item renewals). Write just above it; the deadline counts from the send.
                until_ns = table.stamps.issue(lease.lease_id, old.until_ns + 1)
                send, restamped = request(), True
                continue
            if not ambiguous:
                table.stamps.forget(lease.lease_id, until_ns)
            reason = rows.session_refusal(schema, raw)
            table.note_session_ended(lease.lease_id)
            raise LeaseLostError(
                f"session {lease.lease_id!r} is lost: {reason}",
                lease_id=lease.lease_id,
                reason=reason,
                detail=reason,
            ) from None
        break
    return replace(lease, until=ns_to_datetime(until_ns), until_ns=until_ns, _sent_at=sent_at)


async def end(table: Table, lease: Lease) -> bool:
    """The holder's end: a tombstone. False if it was ended already (by a taker)."""
    schema = table.schema
    table.note_session_ended(lease.lease_id)  # whatever the write's fate: no new items
    # The session's items are released (or lost with it): their claims go.
    table.session_claims -= {claim for claim in table.session_claims if claim[0] == lease.lease_id}
    request = sessions.end_session(schema, lease.lease_id, lease.lessee_id, lease.fencing_token)
    failed = await table.update(request, lease.lease_id)
    if failed is not None:
        old = rows.session_row(schema, await table.refused_row(failed, lease.lease_id, full=True))
        if failed.retried and _ended_from(old, lease.lessee_id, lease.fencing_token):
            return True  # ended by our own write whose answer was lost (or by a taker)
        get_logger().info(
            "session %s of %s was ended already (taken over)",
            lease.lease_id,
            lease.lessee_id,
            extra={"lease_id": lease.lease_id, "lessee_id": lease.lessee_id},
        )
        return False
    get_logger().debug(
        "ended session %s of %s",
        lease.lease_id,
        lease.lessee_id,
        extra={"lease_id": lease.lease_id},
    )
    return True


def _ended_from(row: SessionRow | None, lessee: str | None, token: int) -> bool:
    """Whether ``row`` shows an end written over the tenure (``lessee``, ``token``)."""
    return (
        row is not None and row.lessee_id == lessee and row.token == token + 1 and row.until_ns == 0
    )


async def _end_quietly(table: Table, key: str, lessee: str) -> None:
    """End a session whose start may have landed; log (never raise) if that fails."""
    try:
        async with asyncio.timeout(CLEANUP_TIMEOUT):
            await table.calls.call(
                "update_item",
                sessions.end_session(table.schema, key, lessee, 1),
                lease_id=key,
                expect={CONDITION_FAILED},
            )
    except Expected:
        return  # never landed
    except (LeaseError, TimeoutError) as exc:
        get_logger().warning(
            "could not end the cancelled start of session %s: %s; it expires by itself",
            key,
            str(exc) or f"timed out after {CLEANUP_TIMEOUT} s",
            extra={"lease_id": key, "lessee_id": lessee},
        )


async def get(table: Table, key: str) -> SessionRow | None:
    """The session row, read consistently; ``None`` if missing or not a session row."""
    response = await table.calls.call(
        "get_item", requests.get_item(table.schema, key), lease_id=key
    )
    row = response.get("Item")
    return rows.session_row(table.schema, row) if row else None


async def end_expired(table: Table, row: SessionRow) -> bool:
    """A taker's end of a session judged expired, pinned to ``row``: True if it ended it."""
    if not isinstance(row, SessionRow):
        raise TypeError(f"row must be a SessionRow, not {type(row).__name__}")
    if row.ended or row.lessee_id is None:
        return False
    schema = table.schema
    request = sessions.end_expired_session(
        schema, row.session_id, row.lessee_id, row.token, row.until_ns
    )
    failed = await table.update(request, row.session_id)
    if failed is not None:
        old = rows.session_row(schema, await table.refused_row(failed, row.session_id, full=True))
        # After a retry, a tombstone right over the state read is ours (or an equal taker's:
        # either way the session was ended from exactly that state).
        return failed.retried and _ended_from(old, row.lessee_id, row.token)
    get_logger().info(
        "ended the expired session %s of %s",
        row.session_id,
        row.lessee_id,
        extra={"lease_id": row.session_id, "lessee_id": row.lessee_id},
    )
    return True


async def list_all(table: Table) -> list[SessionRow]:
    """Every session row (live, expired and ended), across all scan pages."""
    found: list[SessionRow] = []
    async for page in table.pages("scan", sessions.scan_sessions(table.schema)):
        for raw in page.get("Items", []):
            parsed = rows.session_row(table.schema, raw)
            if parsed is not None:
                found.append(parsed)
    return found


async def read_pool(
    table: Table,
) -> tuple[list[LeaseItem], list[SessionRow], dict[str, handoff.Handoff]]:
    """Every item, every session row and the items' handoff requests, from one consistent
    scan (bookkeeping only)."""
    items: list[LeaseItem] = []
    found: list[SessionRow] = []
    asked: dict[str, handoff.Handoff] = {}
    async for page in table.pages("scan", pool.scan_pool(table.schema)):
        for raw in page.get("Items", []):
            row = rows.session_row(table.schema, raw)
            if row is not None:
                found.append(row)
            elif (item := rows.item(table.schema, raw)) is not None and not (
                table.skip_malformed(item.lease_id, raw)
            ):
                items.append(item)
                if (request := handoff.parse(table.schema, raw)) is not None:
                    asked[item.lease_id] = request
    return items, found, asked


class SessionMethods:
    """The store's session coroutines (mixed into ``LockStore``, which holds ``_table``)."""

    _table: Table

    async def start_session(self, request: LeaseRequest) -> Lease:
        """Start a session for ``request.lessee_id``, live for ``request.duration``.

        Returns the session's Lease: ``lease_id`` is the session row's key (unique, never
        reused), ``fencing_token`` 1, ``until`` the session's expiry. Items acquired with
        ``acquire(..., session=lease)`` stay held while the session is renewed.
        """
        return await start(self._table, request)

    async def renew_session(self, session: Lease) -> Lease:
        """Renew a session to now + its duration; one write whatever it holds.

        :class:`LeaseLostError` (``reason`` ``"session ended"``) once a taker ended it.
        """
        return await renew(self._table, _check_session(self._table, session))

    async def end_session(self, session: Lease) -> bool:
        """End a session (release its items first): ``False`` if a taker had ended it already."""
        return await end(self._table, _check_session(self._table, session))

    async def get_session(self, session_id: str) -> SessionRow | None:
        """The session row (consistent read); ``None`` if there is no such session row."""
        self._table.schema.key(session_id)
        return await get(self._table, session_id)

    async def end_expired_session(self, row: SessionRow) -> bool:
        """End a session judged expired, only in the state read (``row``): ``True`` if this
        call ended it, ``False`` if it changed since (renewed, or ended by another)."""
        return await end_expired(self._table, row)

    async def list_sessions(self) -> list[SessionRow]:
        """Every session row: live, expired, and ended ones (tombstones)."""
        return await list_all(self._table)

    async def read_pool(
        self,
    ) -> tuple[list[LeaseItem], list[SessionRow], dict[str, handoff.Handoff]]:
        """Every item, every session row and the items' handoff requests (by item ID) from
        one consistent scan of the table, for ``session.serve()``'s balancing."""
        return await read_pool(self._table)

    async def request_handoff(self, item: LeaseItem, requester_session: str, until_ns: int) -> bool:
        """Ask ``item``'s holder (in the tenure read) to hand it to ``requester_session``,
        the request standing until ``until_ns``: ``False`` if refused (the tenure changed,
        or another live request stands). The lease itself is not touched."""
        table = self._table
        if item.lessee_id is None:
            return False
        request = handoff.request_handoff(
            table.schema,
            item.lease_id,
            item.lessee_id,
            item.fencing_token,
            requester_session,
            until_ns,
            table.clock.wall_ns(),
        )
        # A resend of ours lands the same (the condition allows our own request).
        return await table.update(request, item.lease_id) is None

    async def withdraw_handoff(
        self, item_id: str, requester_session: str, until_ns: int | None = None
    ) -> bool:
        """Remove ``requester_session``'s handoff request from ``item_id`` (only the one
        standing until ``until_ns`` if given): ``False`` if there was none such."""
        request = handoff.withdraw_handoff(self._table.schema, item_id, requester_session, until_ns)
        return await self._table.update(request, item_id) is None
