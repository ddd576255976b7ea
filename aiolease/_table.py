"""One lease table as the rules see it: its names, its calls, its clock, reading its rows.

Reads here are shared by the store's rules, the table layouts and the administration: a
row read back after a refusal or a lost answer, paged scans and queries parsed into
:class:`LeaseItem`, and the rows found malformed (skipped, logged once, read before any
further write).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator, Mapping
from typing import Any

from ._clock import Clock
from ._errors import LeaseNotObtainedError
from ._log import get_logger
from ._stamps import MAX_FLOORS, Stamps
from ._tasks import TaskOwner
from ._types import LeaseItem, check_clock_skew
from ._wire import requests, rows
from ._wire.calls import Calls, Retried
from ._wire.codes import CONDITION_FAILED, Expected
from ._wire.schema import Schema

__all__ = ["Table"]

# Ended sessions remembered per store (keys are never reused: only a memory bound).
MAX_ENDED_SESSIONS = 100_000


class Table:
    """The lease table: its ``schema``, ``calls``, ``clock``, ``stamps``, ``tasks`` and reads."""

    def __init__(self, schema: Schema, calls: Calls, clock: Clock, tasks: TaskOwner) -> None:
        self.schema = schema
        self.calls = calls
        self.clock = clock
        self.tasks = tasks
        self.stamps = Stamps(clock)
        # Rows found with a malformed LeaseToken: read before any further write, logged once.
        self._malformed: set[str] = set()
        self._warned_malformed: set[str] = set()
        self._key_checked = False
        # (session key, item) of every acquisition under a session that is in flight or
        # held through this store: one at a time per item and session, and what tells the
        # session's holder that a row showing its session is held by none of its scopes
        # (a late duplicate of a cancelled acquisition), so that it may take it back.
        self.session_claims: set[tuple[str, str]] = set()
        # Re-sent undos of cancelled session acquisitions (their writes may land late):
        # cancelled by the store's aclose(), which must not wait out their delays.
        self.late_undos: set[asyncio.Task[None]] = set()
        # Keys of the sessions this store ended (or found ended): nothing is acquired under
        # them any more. Insertion-ordered, the oldest forgotten beyond MAX_ENDED_SESSIONS.
        self._ended_sessions: dict[str, None] = {}

    def session_ended(self, key: str) -> bool:
        """Whether this store ended session ``key`` (or saw a renewal of it refused)."""
        return key in self._ended_sessions

    def note_session_ended(self, key: str) -> None:
        """Remember that session ``key`` is over: acquisitions under it are refused."""
        self._ended_sessions[key] = None
        while len(self._ended_sessions) > MAX_ENDED_SESSIONS:
            del self._ended_sessions[next(iter(self._ended_sessions))]

    def cutoff_ns(self, max_clock_skew: float) -> int:
        """The clock rule: rows with ``LeaseUntil`` below this have expired, skew allowed."""
        return self.clock.wall_ns() - int(check_clock_skew(max_clock_skew) * 1e9)

    # -- single rows ----------------------------------------------------------------------

    async def read_row(self, lease_id: str, *, full: bool = False) -> dict[str, Any] | None:
        """The raw row, read consistently (just the bookkeeping unless ``full``)."""
        request = requests.get_item(self.schema, lease_id, projection_only=not full)
        response = await self.calls.call("get_item", request, lease_id=lease_id)
        row = response.get("Item")
        return dict(row) if row else None

    async def update(self, request: Mapping[str, Any], lease_id: str) -> Expected | None:
        """One conditional UpdateItem whose answer is not needed: None if it applied, else
        the refusal. Its ``retried`` is set when any attempt was resent (by the store or by
        botocore): an earlier one may have landed unanswered, so the refusal may be of our
        own write."""
        retried = Retried()
        try:
            await self.calls.call(
                "update_item",
                dict(request),
                lease_id=lease_id,
                expect={CONDITION_FAILED},
                on_retry=retried,
            )
        except Expected as failed:
            failed.retried = failed.retried or retried.seen
            return failed
        return None

    async def refused_row(
        self, failed: Expected, lease_id: str, *, full: bool = False
    ) -> dict[str, Any] | None:
        """The row that refused a conditional write: as returned, or read if none came back.

        Some DynamoDB-compatible servers ignore ReturnValuesOnConditionCheckFailure, so a
        refusal without an item may still come from an existing row. A session row's
        reader needs ``full``: the bookkeeping projection has no ``LeaseSessionUntil``.
        """
        if failed.item is not None:
            return failed.item
        return await self.read_row(lease_id, full=full)

    async def get_item(
        self, lease_id: str, *, consistent_read: bool, projection_only: bool
    ) -> LeaseItem | None:
        """One row as an item; ``None`` if there is no such row."""
        request = requests.get_item(
            self.schema, lease_id, consistent_read=consistent_read, projection_only=projection_only
        )
        response = await self.calls.call("get_item", request, lease_id=lease_id)
        row = response.get("Item")
        return rows.item(self.schema, row) if row else None

    # -- many rows ------------------------------------------------------------------------

    async def pages(
        self, operation: str, request: dict[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Every page of a scan or query, checked; ``request`` gets each ``ExclusiveStartKey``."""
        while True:
            page = await self.calls.call(operation, request)
            await self.check_rows(page)
            yield page
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            request["ExclusiveStartKey"] = last

    def items(self, page: Mapping[str, Any], *, leasable_only: bool) -> Iterator[LeaseItem]:
        """A page's rows as items (lazily): rows without the key skipped, malformed if asked."""
        for raw in page.get("Items", []):
            item = rows.item(self.schema, raw)
            if item is None or (leasable_only and self.skip_malformed(item.lease_id, raw)):
                continue
            yield item

    async def check_rows(self, page: Mapping[str, Any]) -> None:
        """Rows without the configured hash key: the table is keyed otherwise. Say so."""
        if self._key_checked:
            return
        items = page.get("Items") or []
        if any(rows.string(raw, self.schema.hash_key) is None for raw in items):
            await self.describe()  # raises, naming the table's real key
        if items:
            self._key_checked = True

    async def describe(self) -> dict[str, Any]:
        """The table's description; :class:`LeaseStoreError` if missing or keyed otherwise."""
        request = {"TableName": self.schema.table_name}
        return rows.check_table(self.schema, await self.calls.call("describe_table", request))

    # -- malformed rows -------------------------------------------------------------------

    def known_malformed(self, lease_id: str) -> bool:
        """Whether ``lease_id`` was found malformed: read it before writing it."""
        return lease_id in self._malformed

    def forget_malformed(self, lease_id: str) -> None:
        self._malformed.discard(lease_id)

    def skip_malformed(self, lease_id: str, row: Mapping[str, Any]) -> bool:
        """True (and logged once) for a row an acquisition could never take."""
        if rows.leasable(self.schema, row):
            return False
        self.note_malformed(lease_id, row)
        return True

    def note_malformed(self, lease_id: str, row: Mapping[str, Any]) -> None:
        """Remember (and log once per item) a row with a malformed token."""
        self._malformed.add(lease_id)
        if lease_id in self._warned_malformed:
            return
        if len(self._warned_malformed) >= MAX_FLOORS:
            self._warned_malformed.clear()
        self._warned_malformed.add(lease_id)
        get_logger().warning(
            "table %r: item %r has a malformed %s (%r, not a whole number); it is never "
            "leased until it is fixed",
            self.schema.table_name,
            lease_id,
            self.schema.token_attribute,
            row.get(self.schema.token_attribute),
            extra={"lease_id": lease_id},
        )

    # -- messages -------------------------------------------------------------------------

    def describe_row(self, row: Mapping[str, Any] | None) -> str:
        """Why a row refused a write, read on this table's clock."""
        return rows.describe(self.schema, row, self.clock.wall_ns())

    def not_obtained(self, lease_id: str, row: Mapping[str, Any] | None) -> LeaseNotObtainedError:
        if row is None:
            return LeaseNotObtainedError(
                f"no item {lease_id!r} in table {self.schema.table_name!r}; "
                "register it with add_item()",
                lease_id=lease_id,
                item_exists=False,
            )
        error = LeaseNotObtainedError(
            f"{lease_id!r} is {self.describe_row(row)}",
            lease_id=lease_id,
            holder=rows.string(row, self.schema.lessee_attribute),
        )
        error._item = rows.item(self.schema, row)
        return error
