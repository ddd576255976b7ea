"""The acquiring write: one conditional UpdateItem, its lost answers, and its undo.

An acquisition whose answer was lost is recognised as ours on retry (its ``LeaseUntil`` is
unique per row for this store); one cancelled (or unanswered) after it was sent is undone,
if it landed, before the call returns (shielded, bounded).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import replace
from datetime import datetime
from typing import Any

from ._errors import (
    LeaseError,
    LeaseLostError,
    LeaseNotObtainedError,
    LeaseStoreError,
    LeaseUnavailableError,
    MalformedRowError,
)
from ._log import get_logger, lease_fields
from ._table import Table
from ._types import (
    SESSION_HELD_FLOOR,
    SESSION_PREFIX,
    Lease,
    LeaseItem,
    LeaseRequest,
    check_expect,
    datetime_to_ns,
    refuse_session_row,
)
from ._wire import requests, rows
from ._wire.codes import CONDITION_FAILED, Expected

__all__ = ["acquire"]

# How long the undo of a cancelled acquisition may take; the cancelled call waits for it
# this long at most (what is left is awaited by the store's aclose()).
CLEANUP_TIMEOUT = 5.0
# A cancelled acquisition under a session whose undo did not free the row is undone again
# after these delays (s): its write may land late, held by nobody while the session lives.
LATE_UNDO_DELAYS = (1.0, 5.0, 30.0)


class _Sent:
    """What the write was stamped with when first sent (nothing yet: 0), and what is known of
    its fate: ``ambiguous`` once an attempt was retried (it may have landed unanswered),
    ``landed`` once it was answered."""

    __slots__ = ("ambiguous", "at", "landed", "until_ns")

    def __init__(self) -> None:
        self.at = 0.0
        self.until_ns = 0
        self.ambiguous = False
        self.landed = False

    def retried(self) -> None:
        self.ambiguous = True


async def acquire(
    table: Table,
    lease_id: str,
    request: LeaseRequest,
    until: datetime | None,
    max_clock_skew: float | None,
    expect: LeaseItem | None,
    session: Lease | None = None,
) -> Lease | dict[str, Any] | None:
    """One acquiring write. Returns the Lease, or the row that refused it (None: no row).

    ``max_clock_skew`` None: a held row is never expired by the clock. A row with a
    malformed ``LeaseToken`` raises :class:`MalformedRowError` (a store error, and "not
    obtained" with ``item_exists`` False: pool loops skip it, waiting for it is pointless).
    Under a ``session`` (its Lease) the row is written with ``LeaseUntil`` MAX and the
    session's key, and the Lease returned carries the session's expiry and send time.
    """
    if not isinstance(request, LeaseRequest):
        raise TypeError(f"request must be a LeaseRequest, not {type(request).__name__}")
    check_expect(expect, lease_id)
    refuse_session_row(lease_id, "sessions are started with start_session()")
    key = _session_key(session, request, until)
    if key is None:
        return await _acquire(table, lease_id, request, until, max_clock_skew, expect, None)
    claim = (key, lease_id)
    table.schema.key(lease_id)
    if table.session_ended(key):
        raise LeaseLostError(
            f"session {key!r} is over (ended, or found ended at a renewal): "
            f"{lease_id!r} cannot be acquired under it; start a new session",
            lease_id=lease_id,
            reason="session ended",
        )
    if claim in table.session_claims:
        raise LeaseNotObtainedError(
            f"{lease_id!r} is being acquired or held under session {key!r} already",
            lease_id=lease_id,
            holder=request.lessee_id,
        )
    table.session_claims.add(claim)
    outcome: Lease | dict[str, Any] | None = None
    try:
        outcome = await _acquire(table, lease_id, request, until, max_clock_skew, expect, session)
    finally:
        if not isinstance(outcome, Lease):
            table.session_claims.discard(claim)  # kept while held: release drops it
    return outcome


async def _acquire(
    table: Table,
    lease_id: str,
    request: LeaseRequest,
    until: datetime | None,
    max_clock_skew: float | None,
    expect: LeaseItem | None,
    session: Lease | None,
) -> Lease | dict[str, Any] | None:
    key = None if session is None else session.lease_id
    schema = table.schema
    schema.key(lease_id)
    if max_clock_skew is not None:
        table.cutoff_ns(max_clock_skew)  # validated before anything is sent
    explicit_ns = None if until is None else datetime_to_ns(until)
    if table.known_malformed(lease_id):
        # Found malformed before: look before writing, so that an acquisition never bumps a
        # fractional token again (DynamoDB cannot test a number for integrality).
        row = await table.read_row(lease_id)
        if row is not None and not rows.leasable(schema, row):
            raise rows.malformed_error(schema, lease_id, row)
        table.forget_malformed(lease_id)
    ours_token = None if expect is None else expect.fencing_token + 1
    sent = _Sent()

    # Under a session the row stores the floor plus the stamp (the session row has the real
    # expiry): still unique to this acquisition, for its undo and its lost-answer retry.
    floor = 0 if key is None else SESSION_HELD_FLOOR

    def build() -> dict[str, Any]:
        sent.at, stamp = table.stamps.take(lease_id, request.duration, explicit_ns)
        sent.until_ns = floor + stamp
        now = table.clock.wall_ns()
        return requests.acquire(
            schema,
            lease_id,
            request.lessee_id,
            until_ns=sent.until_ns,
            duration=requests.duration_value(request.duration, sent.until_ns, now),
            cutoff_ns=None if max_clock_skew is None else table.cutoff_ns(max_clock_skew),
            expect=expect,
            session=key,
        )

    try:
        try:
            response = await table.calls.call(
                "update_item",
                build,
                lease_id=lease_id,
                expect={CONDITION_FAILED},
                on_retry=sent.retried,
            )
        except Expected as failed:
            sent.ambiguous = sent.ambiguous or failed.retried
            old = await table.refused_row(failed, lease_id, full=True)
            if (
                sent.ambiguous
                and old is not None
                and rows.is_ours(schema, old, request.lessee_id, sent.until_ns, ours_token, key)
            ):
                # Our own write, applied by an attempt whose answer was lost: until_ns is
                # unique per row for this store, so no other write of it shows this value.
                # Only after a retry: a first refusal is never of our own write, even if the
                # row shows the same lessee and expiry (another task or store).
                return _in_session(rows.lease(schema, lease_id, request, old, sent.at), session)
            if not sent.ambiguous:
                # Refused at its only attempt: nothing of it is in flight, its value may go.
                table.stamps.forget(lease_id, sent.until_ns - floor)
            if old is not None and not rows.leasable(schema, old):
                table.note_malformed(lease_id, old)
                raise rows.malformed_error(schema, lease_id, old) from None
            return old
        sent.landed = True
        row = response.get("Attributes")
        if not row:
            # Answered 200 without the row asked for (some compatible servers): read it.
            row = await table.read_row(lease_id, full=True)
            if row is None or not rows.is_ours(
                schema, row, request.lessee_id, sent.until_ns, ours_token, key
            ):
                raise LeaseUnavailableError(
                    f"acquiring {lease_id!r} in table {schema.table_name!r}: the endpoint "
                    "answered without the item's attributes and the row does not show "
                    "the write",
                    lease_id=lease_id,
                )
        if not rows.leasable(schema, row):
            # A fractional token, seen only once the write landed: a lease that could never
            # be renewed or released under its token. Free the row again, then report it.
            table.note_malformed(lease_id, row)
            await _undo(table, lease_id, request.lessee_id, sent.until_ns, None, key)
            raise rows.malformed_error(schema, lease_id, row)
        lease = _in_session(rows.lease(schema, lease_id, request, row, sent.at), session)
        get_logger().debug(
            "acquired %s for %s, token %s",
            lease_id,
            request.lessee_id,
            lease.fencing_token,
            extra=lease_fields(lease),
        )
        return lease
    except (asyncio.CancelledError, LeaseUnavailableError, LeaseStoreError) as exc:
        # The write (or an attempt of it whose answer was lost, while its refusal or its row
        # was being read) may have reached DynamoDB with nobody left to heartbeat or release
        # it: undo it before this call returns (shielded, bounded; if it cannot finish in
        # time it goes on in the background, which the store's aclose() awaits). A store
        # error (a denied retry or read-back) only after an attempt that may have landed; a
        # malformed row's landed write was undone above already.
        if isinstance(exc, LeaseStoreError) and (
            isinstance(exc, MalformedRowError) or not (sent.ambiguous or sent.landed)
        ):
            raise
        if sent.until_ns:  # 0: cancelled while queueing for a slot, nothing was sent
            undo = _undo(table, lease_id, request.lessee_id, sent.until_ns, ours_token, key)
            if key is not None:
                undo = _undo_session_held(
                    table, undo, (lease_id, request.lessee_id), sent, ours_token, key
                )
            cancelled = await table.tasks.run_shielded(undo, CLEANUP_TIMEOUT, table.clock)
            if cancelled and not isinstance(exc, asyncio.CancelledError):
                raise asyncio.CancelledError from exc  # cancelled during the undo
        raise


def _session_key(
    session: Lease | None, request: LeaseRequest, until: datetime | None
) -> str | None:
    """The session row's key to acquire under (checked against the request), or None."""
    if session is None:
        return None
    if not isinstance(session, Lease):
        raise TypeError(f"session must be a session's Lease or None, not {type(session).__name__}")
    if session._session is not None or not session.lease_id.startswith(SESSION_PREFIX):
        raise ValueError(f"session: {session.lease_id!r} is not a session's lease")
    if session.lessee_id != request.lessee_id:
        raise ValueError(
            f"session: it belongs to {session.lessee_id!r}, not to {request.lessee_id!r}"
        )
    if until is not None:
        raise ValueError("until: an item held under a session expires with the session")
    return session.lease_id


def _in_session(lease: Lease, session: Lease | None) -> Lease:
    """An item's Lease under ``session``: the session's expiry and send time, and its key."""
    if session is None:
        return lease
    return replace(
        lease,
        until=session.until,
        until_ns=session.until_ns,
        _sent_at=session._sent_at,
        _session=session.lease_id,
    )


async def _undo_session_held(
    table: Table,
    undo: Coroutine[Any, Any, bool],
    row: tuple[str, str],
    sent: _Sent,
    token: int | None,
    session: str,
) -> bool:
    """The undo of a cancelled acquisition under ``session``; if it did not free the row,
    the write may still land later (a late duplicate), held by nobody while the session
    lives: the same pinned undo is sent again a few times, from a task the store owns."""
    if await undo:
        return True
    lease_id, lessee = row
    retry = _undo_later(table, lease_id, lessee, sent.until_ns, token, session)
    task = table.tasks.spawn(retry, name=f"aiolease late undo {lease_id}")
    table.late_undos.add(task)
    task.add_done_callback(table.late_undos.discard)
    return False


async def _undo_later(
    table: Table, lease_id: str, lessee: str, until_ns: int, token: int | None, session: str
) -> None:
    """Send the pinned undo after each of LATE_UNDO_DELAYS, until one frees the row or the
    session ends (its items are then takeable anyway). Harmless if the write never lands:
    the condition matches only this acquisition's own value."""
    for delay in LATE_UNDO_DELAYS:
        await asyncio.sleep(delay)
        if table.session_ended(session):
            return
        if await _undo(table, lease_id, lessee, until_ns, token, session, quiet=True):
            return


async def _undo(
    table: Table,
    lease_id: str,
    lessee: str,
    until_ns: int,
    token: int | None,
    session: str | None = None,
    *,
    quiet: bool = False,
) -> bool:
    """Free the row if it shows our acquiring write; log (never raise) if that fails.

    Whether it freed the row (``quiet``: a refusal or failure is not logged)."""
    where = {"lease_id": lease_id, "lessee_id": lessee}
    try:
        async with asyncio.timeout(CLEANUP_TIMEOUT):
            await table.calls.call(
                "update_item",
                requests.undo_acquire(table.schema, lease_id, lessee, until_ns, token, session),
                lease_id=lease_id,
                expect={CONDITION_FAILED},
            )
    except Expected:
        # The cancelled write never landed (or was already undone); it may still be in
        # flight, so its value stays issued.
        return False
    except (LeaseError, TimeoutError) as exc:
        if quiet:
            return False
        get_logger().warning(
            "could not undo the cancelled acquisition of %s by %s: %s; "
            "the row stays held until it expires",
            lease_id,
            lessee,
            str(exc) or f"timed out after {CLEANUP_TIMEOUT} s",
            extra=where,
        )
        return False
    get_logger().info("undid the cancelled acquisition of %s by %s", lease_id, lessee, extra=where)
    return True
