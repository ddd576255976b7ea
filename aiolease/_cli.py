"""The ``aiolease`` command: the embedded demo and the operator commands on a lease table.

Every command prints one-line errors (``aiolease: error: ...``) and returns an exit code that
scripts can rely on (see :data:`EPILOG`). DynamoDB is only reached through :class:`LockStore`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from decimal import Decimal
from typing import Any

from ._errors import LeaseError, LeaseNotObtainedError, LeaseStoreError, LeaseUnavailableError
from ._store import LockStore
from ._types import LeaseItem

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_STORE", "EXIT_USAGE", "main"]

EXIT_OK = 0
#: The operation did not happen or did not pass (no such item, refused, exclusion check failed).
EXIT_FAILED = 1
#: Bad arguments (argparse's own code), or a missing optional dependency.
EXIT_USAGE = 2
#: The table, the credentials or the endpoint cannot be used; retrying as is will not help.
EXIT_STORE = 3

EPILOG = """\
exit codes:
  0  success
  1  the operation failed: no such item, release not confirmed or the item changed
     meanwhile, demo exclusion check failed
  2  usage error: bad arguments, or a missing optional dependency
  3  the table, the credentials or the endpoint cannot be used (table missing or keyed
     otherwise, access denied, no credentials or region, endpoint unreachable)
  130  interrupted (Ctrl-C)

Connection settings come from the options or the usual AWS environment (AWS_PROFILE,
AWS_ACCESS_KEY_ID, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL, ...). AIOLEASE_TABLE and
AIOLEASE_ENDPOINT_URL set defaults for --table and --endpoint-url.

examples:
  python -m aiolease demo                                   # everything local, ~30 s
  aiolease create-table --table leases --endpoint-url http://127.0.0.1:8000
  aiolease add shard-7 --attr region=eu-west-1 --attr weight:=3 --table leases
  aiolease ls --table leases --json
  aiolease release shard-7 --table leases --yes
"""


class _UsageError(Exception):
    """Bad input found after parsing: reported like an argparse error, exit code 2."""


class _Failed(Exception):
    """The operation did not happen: exit code 1."""


# -- argument parsing ---------------------------------------------------------------------


def _connection_options(
    *, table_default: str | None, endpoint_fallback: str = "AWS's own"
) -> argparse.ArgumentParser:
    """The options every command shares: where the table is and how to reach it."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("table and connection")
    table_help = "the lease table's name"
    if table_default is None:
        table_help += " (default: $AIOLEASE_TABLE; required)"
    else:
        table_help += f" (default: {table_default})"
    group.add_argument("--table", default=table_default, help=table_help)
    group.add_argument(
        "--hash-key", default="LeaseID", help="the table's string hash key (default: LeaseID)"
    )
    group.add_argument(
        "--endpoint-url",
        default=os.environ.get("AIOLEASE_ENDPOINT_URL"),
        help="a DynamoDB-compatible endpoint, e.g. http://127.0.0.1:8000 "
        f"(default: $AIOLEASE_ENDPOINT_URL, else {endpoint_fallback})",
    )
    group.add_argument("--region", help="AWS region (default: from the AWS environment)")
    group.add_argument("--profile", help="AWS profile from ~/.aws (default: $AWS_PROFILE)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The ``aiolease`` argument parser with its five commands."""
    from . import __version__

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="aiolease",
        description="asyncio leases on DynamoDB: an embedded demo and operator commands.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"aiolease {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    operator = _connection_options(table_default=os.environ.get("AIOLEASE_TABLE"))

    from ._demo import add_demo_arguments

    demo = commands.add_parser(
        "demo",
        parents=[
            _connection_options(
                table_default="aiolease-demo", endpoint_fallback="an embedded moto server"
            )
        ],
        help="watch worker processes share items under leases, with a crash and a failover",
        description=(
            "Start an embedded DynamoDB-compatible server (moto) on 127.0.0.1, register work\n"
            "items, and run worker processes that lease them. Midway one worker is killed\n"
            "(SIGKILL) and another stopped gracefully (SIGTERM); a live table shows leases\n"
            "being taken, renewed and taken over. At the end a summary lists the failovers\n"
            "and checks, from the workers' own records, that no two workers ever held one\n"
            "item at once. Exit code 0 only if that check passed.\n\n"
            "With --endpoint-url (or AWS_ENDPOINT_URL) the demo uses that server instead;\n"
            "with --aws, AWS itself (credentials and region from the environment).\n\n"
            "example:\n  python -m aiolease demo --duration 20 --timeline run.svg"
        ),
        epilog=EPILOG,
        formatter_class=formatter,
    )
    add_demo_arguments(demo)

    create = commands.add_parser(
        "create-table",
        parents=[operator],
        help="create the lease table (on-demand billing); fine if it exists",
        description=(
            "Create the lease table with a string hash key and on-demand billing, and wait\n"
            "until it is active. An existing table with the same key is fine; one keyed\n"
            "otherwise is an error (exit code 3).\n\n"
            "example:\n  aiolease create-table --table leases --endpoint-url http://127.0.0.1:8000"
        ),
        epilog=EPILOG,
        formatter_class=formatter,
    )
    create.set_defaults(run=_create_table)

    add = commands.add_parser(
        "add",
        parents=[operator],
        help="register a leasable item, with optional user attributes",
        description=(
            "Register a work item so that workers can lease it. The item starts free.\n"
            "An item that exists already is left untouched (exit code 0, and says so).\n\n"
            "--attr KEY=VALUE stores a string; --attr KEY:=JSON stores a typed value\n"
            "(number, boolean, null, list, object).\n\n"
            "example:\n  aiolease add shard-7 --attr region=eu-west-1 --attr weight:=3 "
            "--table leases"
        ),
        epilog=EPILOG,
        formatter_class=formatter,
    )
    add.add_argument("id", help="the item's ID (its hash key value)")
    add.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a user attribute; repeat for more (KEY:=JSON for a typed value)",
    )
    add.set_defaults(run=_add)

    ls = commands.add_parser(
        "ls",
        parents=[operator],
        help="list every item: holder, expiry, fencing token, attributes",
        description=(
            "List every item of the table (all scan pages, strongly consistent): its\n"
            "holder, how long until the holder's lease expires, its fencing token and its\n"
            "user attributes. --json prints a JSON array for scripts.\n\n"
            "example:\n  aiolease ls --table leases --json"
        ),
        epilog=EPILOG,
        formatter_class=formatter,
    )
    ls.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    ls.set_defaults(run=_ls)

    release = commands.add_parser(
        "release",
        parents=[operator],
        help="an operator's forced release of a stuck item (asks first)",
        description=(
            "Free an item whoever holds it, e.g. one whose holder is stuck. The row, its\n"
            "fencing token and its attributes are kept, so the next holder still gets a\n"
            "larger token. A holder that is still alive loses its lease at its next\n"
            "renewal and has its work cancelled. Asks for confirmation unless --yes.\n\n"
            "example:\n  aiolease release shard-7 --table leases --yes"
        ),
        epilog=EPILOG,
        formatter_class=formatter,
    )
    release.add_argument("id", help="the item's ID")
    release.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    release.set_defaults(run=_release)
    return parser


# -- the commands -------------------------------------------------------------------------


@asynccontextmanager
async def _open_store(args: argparse.Namespace) -> AsyncIterator[LockStore]:
    """A store on the table the options name; checks the table exists and is keyed right."""
    if not args.table:
        raise _UsageError("--table is required (or set AIOLEASE_TABLE)")
    session = make_session(args)
    try:
        connection = LockStore.connect(
            args.table,
            args.hash_key,
            endpoint_url=args.endpoint_url,
            region_name=args.region,
            session=session,
        )
    except ValueError as exc:  # a malformed table name or hash key
        raise _UsageError(str(exc)) from None
    async with connection as store:
        if args.run is not _create_table:
            await store.describe_table()
        yield store


def make_session(args: argparse.Namespace) -> Any:
    """The ``aioboto3.Session`` the options ask for, or ``None`` for the default one.

    A loopback endpoint (moto, DynamoDB Local) with no credentials configured gets
    throwaway ones: such servers accept anything, and botocore would refuse to sign.
    """
    import aioboto3
    import botocore.exceptions as bce

    if args.profile:
        try:
            return aioboto3.Session(profile_name=args.profile)
        except bce.ProfileNotFound as exc:
            raise LeaseStoreError(str(exc), table=args.table, hash_key=args.hash_key) from None
    if _is_loopback(args.endpoint_url) and not _has_credentials():
        from .testing import fake_session

        return fake_session()
    return None


def _is_loopback(url: str | None) -> bool:
    from urllib.parse import urlsplit

    if not url:
        return False
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def _has_credentials() -> bool:
    """Whether botocore finds credentials without asking the EC2/ECS metadata services."""
    import botocore.exceptions as bce
    import botocore.session

    session = botocore.session.get_session()
    resolver = session.get_component("credential_provider")
    for name in ("iam-role", "container-role"):
        with suppress(ValueError):
            resolver.remove(name)
    try:
        return session.get_credentials() is not None
    except bce.BotoCoreError:
        return False


async def _create_table(args: argparse.Namespace) -> None:
    async with _open_store(args) as store:
        await store.create_table()
    print(f"table {args.table!r} is ready (hash key {args.hash_key!r})")


def _parse_attributes(pairs: Sequence[str]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for pair in pairs:
        typed = ":=" in pair and pair.index(":=") <= pair.find("=")
        key, sep, raw = pair.partition(":=" if typed else "=")
        if not sep or not key:
            raise _UsageError(f"--attr {pair!r}: expected KEY=VALUE or KEY:=JSON")
        if typed:
            try:
                attributes[key] = json.loads(raw, parse_float=Decimal)
            except json.JSONDecodeError as exc:
                raise _UsageError(f"--attr {pair!r}: the value is not JSON ({exc})") from None
        else:
            attributes[key] = raw
    return attributes


async def _add(args: argparse.Namespace) -> None:
    attributes = _parse_attributes(args.attr)
    async with _open_store(args) as store:
        try:
            created = await store.add_item(args.id, attributes)
        except (TypeError, ValueError) as exc:
            raise _UsageError(str(exc)) from None
    if created:
        print(f"added {args.id!r} to {args.table!r}")
    else:
        print(f"{args.id!r} already exists in {args.table!r}; left untouched")


async def _ls(args: argparse.Namespace) -> None:
    async with _open_store(args) as store:
        items = [item async for item in store.scan(consistent_read=True)]
    items.sort(key=lambda item: item.lease_id)
    now_ns = time.time_ns()
    if args.json:
        print(json.dumps([_item_json(item, now_ns) for item in items], indent=2))
        return
    if not items:
        print(f"no items in {args.table!r}")
        return
    rows = [("ID", "HOLDER", "EXPIRES IN", "TOKEN", "ATTRIBUTES")]
    for item in items:
        attributes = ", ".join(
            f"{k}={json.dumps(_plain(v))}" for k, v in sorted(item.attributes.items())
        )
        rows.append(
            (
                item.lease_id,
                item.lessee_id or "-",
                _expires_in(item, now_ns),
                str(item.fencing_token),
                attributes,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


async def _release(args: argparse.Namespace) -> None:
    async with _open_store(args) as store:
        try:
            current = await _find(store, args.id)
        except (TypeError, ValueError) as exc:
            raise _UsageError(str(exc)) from None
        if current is None:
            raise _Failed(f"no item {args.id!r} in table {args.table!r}")
        if current.lessee_id is None:
            print(f"{args.id!r} is already free (fencing token {current.fencing_token})")
            return
        if not args.yes:
            question = (
                f"{args.id!r} is held by {current.lessee_id!r} (fencing token "
                f"{current.fencing_token}, expires in {_expires_in(current, time.time_ns())}).\n"
                "A live holder keeps working until its next renewal finds the item released "
                "(within one heartbeat period), then loses the lease and has its work "
                "cancelled. Release it? [y/N] "
            )
            try:
                answer = await asyncio.to_thread(input, question)
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                raise _Failed(f"{args.id!r} not released (not confirmed; --yes skips the question)")
        try:
            # Conditioned on the holder and token shown: never frees a holder the operator
            # did not see (the lease may have changed hands while the question was open).
            before = await store.force_release(args.id, expect=current)
        except LeaseNotObtainedError as exc:
            raise _Failed(f"{exc}; nothing changed, run the command again") from None
    if before is None:
        raise _Failed(f"no item {args.id!r} in table {args.table!r} (deleted meanwhile?)")
    if before.lessee_id is None:
        print(f"{args.id!r} was already free (fencing token {before.fencing_token})")
    else:
        print(
            f"released {args.id!r} (was held by {before.lessee_id!r}; "
            f"fencing token {before.fencing_token} kept); a live holder stops at its next "
            "renewal"
        )


async def _find(store: LockStore, lease_id: str) -> LeaseItem | None:
    """One item by ID, read consistently."""
    return await store.get_item(lease_id, consistent_read=True)


# -- formatting ---------------------------------------------------------------------------


def _expires_in(item: LeaseItem, now_ns: int) -> str:
    """How long the holder's lease has left, for people: '2.9s', 'expired 1.2s ago', '-'."""
    if item.lessee_id is None:
        return "-"
    if item.until_ns <= 0:
        return "never set"
    left = (item.until_ns - now_ns) / 1e9
    if left < 0:
        return f"expired {_seconds(-left)} ago"
    return _seconds(left)


def _seconds(value: float) -> str:
    if value < 100:
        return f"{value:.1f}s"
    minutes, seconds = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def _item_json(item: LeaseItem, now_ns: int) -> dict[str, Any]:
    held = item.lessee_id is not None
    return {
        "id": item.lease_id,
        "holder": item.lessee_id,
        "until": item.until.isoformat() if held and item.until is not None else None,
        "until_ns": item.until_ns,
        "expires_in": round((item.until_ns - now_ns) / 1e9, 3) if held else None,
        "fencing_token": item.fencing_token,
        "attributes": _plain(item.attributes),
    }


def _plain(value: Any) -> Any:
    """DynamoDB values (Decimal, sets, Binary) as JSON-friendly Python values."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_plain(v) for v in value), key=repr)
    raw = getattr(value, "value", value)  # boto3's Binary wraps bytes
    if isinstance(raw, bytes | bytearray):
        return base64.b64encode(bytes(raw)).decode("ascii")
    return value


# -- entry point --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (see :data:`EPILOG`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = asyncio.run(args.run(args))
    except _UsageError as exc:
        parser.error(str(exc))  # exits with EXIT_USAGE
    except _Failed as exc:
        _error(str(exc))
        return EXIT_FAILED
    except (LeaseStoreError, LeaseUnavailableError) as exc:
        message = str(exc)
        if "does not exist" in message:
            message += " (aiolease create-table makes it)"
        _error(message)
        return EXIT_STORE
    except LeaseError as exc:
        _error(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head`, which has gone: not worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    return int(result) if isinstance(result, int) else EXIT_OK


def _error(message: str) -> None:
    print(f"aiolease: error: {' '.join(message.split())}", file=sys.stderr)
