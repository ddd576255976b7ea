"""The operator commands: create-table, add, ls and release, each one coroutine on a store.

Each takes the parsed options and raises :class:`UsageError` or :class:`Failed` (or lets a
:class:`LeaseError` through) for ``main()`` to turn into a message and an exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from decimal import Decimal
from typing import Any

from aiolease import LeaseItem, LeaseNotObtainedError, LockStore
from aiolease._aws import make_session
from aiolease._release import FORCE_SESSION
from aiolease._types import refuse_session_row

from ._exit import Failed, UsageError
from ._format import expires_in, item_json, session_json, session_lines, table_lines

__all__ = ["add", "create_table", "ls", "parse_attributes", "release"]


@asynccontextmanager
async def _open_store(args: argparse.Namespace) -> AsyncIterator[LockStore]:
    """A store on the table the options name; checks the table exists and is keyed right."""
    if not args.table:
        raise UsageError("--table is required (or set AIOLEASE_TABLE)")
    session = make_session(
        profile=args.profile,
        endpoint_url=args.endpoint_url,
        table=args.table,
        hash_key=args.hash_key,
    )
    async with AsyncExitStack() as stack:
        connection = LockStore.connect(
            args.table,
            args.hash_key,
            endpoint_url=args.endpoint_url,
            region_name=args.region,
            session=session,
        )
        try:
            # connect() validates the names when it is entered, not when it is called.
            store = await stack.enter_async_context(connection)
        except ValueError as exc:  # a malformed table name or hash key
            raise UsageError(str(exc)) from None
        if args.run is not create_table:
            await store.describe_table()
        yield store


async def create_table(args: argparse.Namespace) -> None:
    """``aiolease create-table``: create the table (an existing one keyed alike is fine)."""
    async with _open_store(args) as store:
        await store.create_table()
    print(f"table {args.table!r} is ready (hash key {args.hash_key!r})")


def parse_attributes(pairs: Sequence[str]) -> dict[str, Any]:
    """``--attr KEY=VALUE`` (a string) and ``--attr KEY:=JSON`` (a typed value) as a dict."""
    attributes: dict[str, Any] = {}
    for pair in pairs:
        typed = ":=" in pair and pair.index(":=") <= pair.find("=")
        key, sep, raw = pair.partition(":=" if typed else "=")
        if not sep or not key:
            raise UsageError(f"--attr {pair!r}: expected KEY=VALUE or KEY:=JSON")
        if typed:
            try:
                attributes[key] = json.loads(raw, parse_float=Decimal)
            except json.JSONDecodeError as exc:
                raise UsageError(f"--attr {pair!r}: the value is not JSON ({exc})") from None
        else:
            attributes[key] = raw
    return attributes


async def add(args: argparse.Namespace) -> None:
    """``aiolease add``: register a free item; an existing one is left untouched."""
    attributes = parse_attributes(args.attr)
    async with _open_store(args) as store:
        try:
            created = await store.add_item(args.id, attributes)
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc)) from None
    if created:
        print(f"added {args.id!r} to {args.table!r}")
    else:
        print(f"{args.id!r} already exists in {args.table!r}; left untouched")


async def ls(args: argparse.Namespace) -> None:
    """``aiolease ls``: every item (all scan pages, strongly consistent), as a table or JSON;
    with ``--sessions``, the session rows instead."""
    if getattr(args, "sessions", False):
        await _ls_sessions(args)
        return
    async with _open_store(args) as store:
        items = [item async for item in store.scan(consistent_read=True)]
    items.sort(key=lambda item: item.lease_id)
    now_ns = time.time_ns()
    if args.json:
        print(json.dumps([item_json(item, now_ns) for item in items], indent=2))
        return
    if not items:
        print(f"no items in {args.table!r}")
        return
    for line in table_lines(items, now_ns):
        print(line)


async def _ls_sessions(args: argparse.Namespace) -> None:
    async with _open_store(args) as store:
        sessions = sorted(await store.list_sessions(), key=lambda row: row.session_id)
    now_ns = time.time_ns()
    if args.json:
        print(json.dumps([session_json(row, now_ns) for row in sessions], indent=2))
    elif not sessions:
        print(f"no sessions in {args.table!r}")
    else:
        for line in session_lines(sessions, now_ns):
            print(line)


async def release(args: argparse.Namespace) -> None:
    """``aiolease release``: an operator's forced release, of the holder shown and asked about."""
    try:
        refuse_session_row(args.id, FORCE_SESSION)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    async with _open_store(args) as store:
        try:
            current = await _find(store, args.id)
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        if current is None:
            raise Failed(f"no item {args.id!r} in table {args.table!r}")
        if current.lessee_id is None:
            print(f"{args.id!r} is already free (fencing token {current.fencing_token})")
            return
        if not args.yes:
            await _confirm(args.id, current)
        try:
            # Conditioned on the holder and token shown: never frees a holder the operator
            # did not see (the lease may have changed hands while the question was open).
            before = await store.force_release(args.id, expect=current)
        except LeaseNotObtainedError as exc:
            raise Failed(f"{exc}; nothing changed, run the command again") from None
    if before is None:
        raise Failed(f"no item {args.id!r} in table {args.table!r} (deleted meanwhile?)")
    if before.lessee_id is None:
        print(f"{args.id!r} was already free (fencing token {before.fencing_token})")
    else:
        print(
            f"released {args.id!r} (was held by {before.lessee_id!r}; "
            f"fencing token {before.fencing_token} kept); a live holder stops at its next "
            "renewal"
        )


async def _confirm(lease_id: str, current: LeaseItem) -> None:
    """Ask the operator; raises :class:`Failed` unless the answer is yes."""
    question = (
        f"{lease_id!r} is held by {current.lessee_id!r} (fencing token "
        f"{current.fencing_token}, expires in {expires_in(current, time.time_ns())}).\n"
        "A live holder keeps working until its next renewal finds the item released "
        "(within one heartbeat period), then loses the lease and has its work "
        "cancelled. Release it? [y/N] "
    )
    try:
        answer = await asyncio.to_thread(input, question)
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise Failed(f"{lease_id!r} not released (not confirmed; --yes skips the question)")


async def _find(store: LockStore, lease_id: str) -> LeaseItem | None:
    """One item by ID, read consistently."""
    return await store.get_item(lease_id, consistent_read=True)
