"""Table administration: create the table, add the layout's index, backfill buckets, wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from ._errors import LeaseError, LeaseStoreError, LeaseUnavailableError
from ._layout import IndexedLayout, TableLayout
from ._log import get_logger
from ._table import Table
from ._wire import requests, rows
from ._wire.codes import Expected, store_error

__all__ = ["add_index", "add_item", "backfill_buckets", "create_table", "wait_active"]


async def create_table(table: Table, layout: TableLayout, timeout: float | None) -> None:
    """Create the table (with the layout's index) unless it exists, then wait until active."""
    request = requests.create_table(table.schema, layout.index_name)
    with contextlib.suppress(Expected):  # already there: its schema is checked below
        await table.calls.call("create_table", request, expect={"ResourceInUseException"})
    await wait_active(table, layout, timeout, "table")


async def add_index(table: Table, layout: IndexedLayout, timeout: float | None) -> None:
    """Add the layout's index to an existing table unless it has it, then wait until active."""
    assert layout.index_name is not None
    description = await table.describe()
    if not layout.find_index(description):
        throughput = _throughput(description)
        request = requests.add_index(table.schema, layout.index_name, throughput=throughput)
        try:
            answer = await table.calls.call(
                "update_table", request, expect={"ResourceInUseException"}
            )
        except Expected:
            pass  # created meanwhile by someone else
        except LeaseStoreError as exc:
            # dynalite wants a throughput even for an on-demand table's index, where DynamoDB
            # refuses one: it cannot add the index to such a table at all.
            if throughput is not None or "provisionedThroughput" not in str(exc):
                raise
            raise _cannot_add(table, layout.index_name) from exc
        else:
            # DynamoDB shows the new index (CREATING) in its answer. dynalite accepts the
            # update and ignores it: say so, rather than wait for an index that never comes.
            if not layout.find_index(answer.get("TableDescription", {})):
                raise _cannot_add(table, layout.index_name)
    await wait_active(table, layout, timeout, f"index {layout.index_name!r} of table")


def _cannot_add(table: Table, index_name: str) -> LeaseStoreError:
    return LeaseStoreError(
        f"the server cannot add an index to an existing table ({index_name!r} to "
        f"{table.schema.table_name!r}); create the table with the index instead",
        table=table.schema.table_name,
        hash_key=table.schema.hash_key,
    )


def _throughput(description: dict[str, Any]) -> dict[str, int] | None:
    """A provisioned table's capacity, which DynamoDB wants for a new index too; None for an
    on-demand table (a table described without a billing mode is provisioned)."""
    mode = description.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED")
    capacity = description.get("ProvisionedThroughput", {})
    units = {k: int(capacity.get(k, 0)) for k in ("ReadCapacityUnits", "WriteCapacityUnits")}
    if mode == "PAY_PER_REQUEST" or not all(units.values()):
        return None
    return units


async def wait_active(table: Table, layout: TableLayout, timeout: float | None, what: str) -> None:
    """Wait until the table, and the layout's index if the table has it, are active."""
    try:
        async with asyncio.timeout(timeout):
            await _poll_active(table, layout)
    except TimeoutError:
        raise LeaseUnavailableError(
            f"{what} {table.schema.table_name!r} not active within {timeout} s; try again later"
        ) from None


async def _poll_active(table: Table, layout: TableLayout) -> None:
    pause = 0.05
    while True:
        description = await table.describe()
        index = layout.find_index(description)
        if description.get("TableStatus") == "ACTIVE" and (
            index is None or index.get("IndexStatus", "ACTIVE") == "ACTIVE"
        ):
            if layout.index_name is not None and index is None:
                get_logger().warning(
                    "table %r has no index %r: obtain_lease scans the table; "
                    "add it with LockStore.add_index()",
                    table.schema.table_name,
                    layout.index_name,
                )
            return
        await asyncio.sleep(pause)
        pause = min(pause * 2, 2.0)


async def backfill_buckets(table: Table, layout: IndexedLayout, concurrency: int) -> int:
    """Write the bucket on every row that lacks it (or has a wrong one); the rows updated."""
    schema = table.schema
    gate = asyncio.Semaphore(concurrency)
    updated = 0

    async def fix(lease_id: str, bucket: int) -> None:
        nonlocal updated
        async with gate:
            try:
                await table.calls.call(
                    "update_item",
                    requests.backfill_bucket(schema, lease_id, bucket),
                    lease_id=lease_id,
                    expect={"ConditionalCheckFailedException", "ValidationException"},
                )
            except Expected as refused:
                if refused.code == "ValidationException":
                    # DynamoDB refuses a row the index cannot hold (a LeaseUntil that is
                    # not a number): leave it, as the index would, and go on.
                    get_logger().warning(
                        "table %r: cannot give %r a bucket: its %s does not fit the index",
                        schema.table_name,
                        lease_id,
                        schema.until_attribute,
                    )
                return  # or deleted meanwhile: nothing to fix
            updated += 1

    async for page in table.pages("scan", requests.backfill_scan(schema)):
        try:
            async with asyncio.TaskGroup() as tg:
                for raw in page.get("Items", []):
                    lease_id = rows.string(raw, schema.hash_key)
                    if lease_id is None:
                        continue
                    bucket = requests.bucket_of(lease_id, layout.buckets)
                    if raw.get(schema.bucket_attribute) != {"N": str(bucket)}:
                        tg.create_task(fix(lease_id, bucket))
        except BaseExceptionGroup as group:
            # One clean error, not a group: the first of ours, else a store error.
            raise _first_error(table, group) from group
    return updated


def _first_error(table: Table, group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first LeaseError in ``group`` (nested too), else a store error describing it."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            exc = _first_error(table, exc)
        if isinstance(exc, LeaseError | KeyboardInterrupt | SystemExit):
            return exc
    first = group.exceptions[0]
    error: LeaseStoreError = store_error(table.schema, first, None)
    return error


async def add_item(
    table: Table, layout: TableLayout, lease_id: str, attributes: Mapping[str, Any] | None
) -> bool:
    """Create the row, free, unless it exists; whether this call created it."""
    schema = table.schema
    schema.key(lease_id)
    user = requests.user_attributes(schema, attributes)
    request, written = requests.add_item(schema, lease_id, layout.row_attributes(lease_id), user)
    failed = await table.update(request, lease_id)
    if failed is not None:
        if not failed.retried:
            return False
        # An attempt whose answer was lost may have created the row: it is ours if it has
        # our key, attributes and bucket; not the bookkeeping, which a pool worker may have
        # leased since. Residual ambiguity: an identical row registered by someone else in
        # between also reads as ours.
        row = await table.read_row(lease_id, full=True)
        return row is not None and rows.registered(schema, row) == rows.registered(schema, written)
    return True
