"""Table layouts: how candidates for an acquisition are found, and what that needs of a table.

A layout is chosen once, when the store is made. :class:`ScanLayout` reads the whole table
with a filtered scan; :class:`IndexedLayout` (docs/scaling.md) spreads rows over buckets of
a global secondary index on (bucket, ``LeaseUntil``) and queries only rows that look free
or expired. A new layout implements :class:`TableLayout` and is picked in ``LockStore``.
"""

from __future__ import annotations

import random
from contextlib import aclosing
from typing import Any, Protocol

from ._errors import LeaseStoreError
from ._log import get_logger
from ._table import Table
from ._types import LeaseItem
from ._wire import requests, rows
from ._wire.codes import is_missing_index, short
from ._wire.schema import TABLE_NAME, Schema

__all__ = ["IndexedLayout", "ScanLayout", "TableLayout", "layout_for"]

# The indexed layout: rows spread over this many index partitions by a hash of their ID.
# 16 keeps an obtain on a busy table to at most 16 small queries, and leaves room for
# 16 x 1,000 lease writes per second before one index partition throttles.
DEFAULT_BUCKETS = 16
# More buckets only make every "nothing free" answer cost more queries.
MAX_BUCKETS = 1024
# After the index was found missing (not created yet, or still backfilling), scan instead
# for this long before asking the index again.
INDEX_RECHECK = 60.0


class TableLayout(Protocol):
    """What the store asks of a table layout."""

    @property
    def index_name(self) -> str | None:
        """The layout's index (``create_table`` makes it, ``add_index`` adds it), if any."""
        ...

    def row_attributes(self, lease_id: str) -> dict[str, Any]:
        """The layout's own attributes that ``add_item`` writes on a new row (DynamoDB values)."""
        ...

    def find_index(self, table: dict[str, Any]) -> dict[str, Any] | None:
        """The layout's index in a table description (checked), or None."""
        ...

    async def find_available(self, table: Table, cutoff_ns: int, limit: int) -> list[LeaseItem]:
        """Up to ``limit`` rows that look free or expired (``LeaseUntil < cutoff_ns``); if there
        are none, up to ``limit`` items held under a session (judged by their sessions)."""
        ...

    async def find_session_held(self, table: Table, limit: int) -> list[LeaseItem]:
        """Up to ``limit`` items held under a session: the candidates of a second pass."""
        ...


class ScanLayout:
    """A plain table: candidates come from a scan filtered on ``LeaseUntil``."""

    @property
    def index_name(self) -> str | None:
        return None

    def row_attributes(self, lease_id: str) -> dict[str, Any]:
        return {}

    def find_index(self, table: dict[str, Any]) -> dict[str, Any] | None:
        return None

    async def find_available(self, table: Table, cutoff_ns: int, limit: int) -> list[LeaseItem]:
        # Free and expired rows only: live session-held items never crowd them out.
        found = await _scan_into(table, requests.scan(table.schema, cutoff_ns=cutoff_ns), limit)
        return found or await self.find_session_held(table, limit)

    async def find_session_held(self, table: Table, limit: int) -> list[LeaseItem]:
        return await _scan_into(table, requests.scan_session_held(table.schema), limit)


class IndexedLayout:
    """Rows carry a bucket (a hash of their ID); candidates come from the index's buckets.

    Queries the buckets in random order for rows whose ``LeaseUntil`` is older than the
    cutoff (free rows carry 0), so the cost does not grow with the table. While the index
    does not exist yet (or is still being built), it scans like :class:`ScanLayout`.
    """

    def __init__(self, schema: Schema, index_name: str, buckets: int) -> None:
        self._schema = schema
        self._index_name = index_name
        self.buckets = buckets
        self._scan = ScanLayout()
        # Monotonic time until which find_available scans because the index was found missing.
        self._scan_until = 0.0

    @property
    def index_name(self) -> str | None:
        return self._index_name

    def row_attributes(self, lease_id: str) -> dict[str, Any]:
        bucket = requests.bucket_of(lease_id, self.buckets)
        return {self._schema.bucket_attribute: {"N": str(bucket)}}

    def find_index(self, table: dict[str, Any]) -> dict[str, Any] | None:
        return rows.check_index(self._schema, table, self._index_name)

    async def find_available(self, table: Table, cutoff_ns: int, limit: int) -> list[LeaseItem]:
        if table.clock.monotonic() >= self._scan_until:
            try:
                return await self._query(table, cutoff_ns, limit)
            except LeaseStoreError as exc:
                if not is_missing_index(exc.__cause__):
                    raise
                self._scan_until = table.clock.monotonic() + INDEX_RECHECK
                get_logger().warning(
                    "table %r: cannot query index %r yet (%s); scanning instead",
                    self._schema.table_name,
                    self._index_name,
                    short(exc.__cause__),  # type: ignore[arg-type]
                )
        return await self._scan.find_available(table, cutoff_ns, limit)

    async def find_session_held(self, table: Table, limit: int) -> list[LeaseItem]:
        if table.clock.monotonic() >= self._scan_until:
            try:
                return await self._query_session_held(table, limit, self._order())
            except LeaseStoreError as exc:
                if not is_missing_index(exc.__cause__):
                    raise
                self._scan_until = table.clock.monotonic() + INDEX_RECHECK
        return await self._scan.find_session_held(table, limit)

    def _order(self) -> list[int]:
        order = list(range(self.buckets))
        random.shuffle(order)  # waiters spread over the buckets instead of all reading one
        return order

    async def _query_session_held(
        self, table: Table, limit: int, order: list[int]
    ) -> list[LeaseItem]:
        found: list[LeaseItem] = []
        for bucket in order:
            request = requests.query_session_held(self._schema, self._index_name, bucket)
            if await _read_into(table, request, found, limit):
                break
        return found

    async def _query(self, table: Table, cutoff_ns: int, limit: int) -> list[LeaseItem]:
        found: list[LeaseItem] = []
        order = self._order()
        for bucket in order:
            request = requests.query_available(self._schema, self._index_name, bucket, cutoff_ns)
            if await _read_into(table, request, found, limit):
                return found
        # Nothing free or expired: items held under a session are the candidates left, for
        # the takeover rule to judge by their sessions.
        return found or await self._query_session_held(table, limit, order)


async def _scan_into(table: Table, request: dict[str, Any], limit: int) -> list[LeaseItem]:
    """Up to ``limit`` leasable rows of a filtered scan, stopping as soon as it has them."""
    found: list[LeaseItem] = []
    # aclosing: leaving early closes the pager now, not when the loop collects it.
    async with aclosing(table.pages("scan", request)) as pages:
        async for page in pages:
            for item in table.items(page, leasable_only=True):
                found.append(item)
                if len(found) >= limit:
                    return found
    return found


async def _read_into(
    table: Table, request: dict[str, Any], found: list[LeaseItem], limit: int
) -> bool:
    """Add a query's rows to ``found`` until ``limit``; whether it was reached."""
    request["Limit"] = limit - len(found)
    async with aclosing(table.pages("query", request)) as pages:
        async for page in pages:
            found.extend(table.items(page, leasable_only=True))
            if len(found) >= limit:
                return True
            request["Limit"] = limit - len(found)
    return False


def layout_for(schema: Schema, index_name: str | None, buckets: int) -> TableLayout:
    """The layout a store's options select: indexed if ``index_name`` is given, else a scan."""
    if index_name is not None and (
        not isinstance(index_name, str) or not TABLE_NAME.match(index_name)
    ):
        raise ValueError(
            f"index_name {index_name!r} is not a valid DynamoDB index name "
            "(3-255 characters of letters, digits, '_', '-', '.')"
        )
    if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= MAX_BUCKETS:
        raise ValueError(f"buckets must be an int from 1 to {MAX_BUCKETS}, not {buckets!r}")
    return ScanLayout() if index_name is None else IndexedLayout(schema, index_name, buckets)
