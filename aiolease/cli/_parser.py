"""The ``aiolease`` argument parser: the demo, a local server and four operator commands.

The exit codes are listed once, in the top-level help; each command's help has its own
examples and points there.
"""

from __future__ import annotations

import argparse
import os
from typing import TypeAlias

from aiolease import __version__
from aiolease.demo import add_demo_arguments

from ._commands import add, create_table, ls, release
from ._server import server

__all__ = ["COMMAND_EPILOG", "EPILOG", "build_parser"]

EPILOG = """\
exit codes:
  0  success
  1  the operation failed: no such item, release not confirmed or the item changed
     meanwhile, demo exclusion check failed, server port in use
  2  usage error: bad arguments, or a missing optional dependency
  3  the table, the credentials or the endpoint cannot be used (table missing or keyed
     otherwise, access denied, no credentials or region, endpoint unreachable)
  130  interrupted (Ctrl-C)

Connection settings come from the options or the usual AWS environment (AWS_PROFILE,
AWS_ACCESS_KEY_ID, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL, ...). AIOLEASE_TABLE and
AIOLEASE_ENDPOINT_URL set defaults for --table and --endpoint-url.

examples:
  python -m aiolease demo                                   # everything local, ~30 s
  python -m aiolease demo --balance                         # a pool served, rebalanced
  aiolease server --table leases                            # a local server for other shells
  aiolease create-table --table leases --endpoint-url http://127.0.0.1:8000
  aiolease add shard-7 --attr region=eu-west-1 --attr weight:=3 --table leases
  aiolease ls --table leases --json
  aiolease release shard-7 --table leases --yes

Each command's --help has its own examples.
"""

# Under each command's help: where the settings come from, and where the exit codes are.
COMMAND_EPILOG = """\
Connection settings come from the options or the usual AWS environment; AIOLEASE_TABLE
and AIOLEASE_ENDPOINT_URL set defaults for --table and --endpoint-url.
Exit codes: see aiolease --help.
"""

_FORMATTER = argparse.RawDescriptionHelpFormatter
# What add_subparsers() returns: argparse has no public name for its type.
_Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


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
    parser = argparse.ArgumentParser(
        prog="aiolease",
        description=(
            "asyncio leases on DynamoDB: an embedded demo, a local server and operator commands."
        ),
        epilog=EPILOG,
        formatter_class=_FORMATTER,
    )
    parser.add_argument("--version", action="version", version=f"aiolease {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_demo(commands)
    operator = _connection_options(table_default=os.environ.get("AIOLEASE_TABLE"))
    _add_create_table(commands, operator)
    _add_add(commands, operator)
    _add_ls(commands, operator)
    _add_release(commands, operator)
    _add_watch(commands, operator)
    _add_server(commands)
    for command in commands.choices.values():
        # main() reports a usage error found after parsing with the command's own usage.
        command.set_defaults(command_parser=command)
    return parser


def _add_demo(commands: _Commands) -> None:
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
            "With --balance the workers serve a pool of 24 items with session.serve()\n"
            "instead: two more join, one is stopped, one is killed, and the live table\n"
            "shows the items per worker converging; --report writes the time to balance\n"
            "after each of those moments, the handoffs and the overlaps (0) as JSON.\n\n"
            "examples:\n  python -m aiolease demo --duration 20 --timeline run.svg\n"
            "  python -m aiolease demo --balance --report run.json --timeline run.png"
        ),
        epilog="Exit codes: see aiolease --help.",
        formatter_class=_FORMATTER,
    )
    add_demo_arguments(demo)


def _add_create_table(
    commands: _Commands,
    operator: argparse.ArgumentParser,
) -> None:
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
        epilog=COMMAND_EPILOG,
        formatter_class=_FORMATTER,
    )
    create.set_defaults(run=create_table)


def _add_add(
    commands: _Commands,
    operator: argparse.ArgumentParser,
) -> None:
    command = commands.add_parser(
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
        epilog=COMMAND_EPILOG,
        formatter_class=_FORMATTER,
    )
    command.add_argument("id", help="the item's ID (its hash key value)")
    command.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a user attribute; repeat for more (KEY:=JSON for a typed value)",
    )
    command.set_defaults(run=add)


def _add_ls(
    commands: _Commands,
    operator: argparse.ArgumentParser,
) -> None:
    command = commands.add_parser(
        "ls",
        parents=[operator],
        help="list every item: holder, expiry, fencing token, attributes",
        description=(
            "List every item of the table (all scan pages, strongly consistent): its\n"
            "holder, how long until the holder's lease expires, its fencing token and its\n"
            "user attributes. --json prints a JSON array for scripts.\n\n"
            "example:\n  aiolease ls --table leases --json"
        ),
        epilog=COMMAND_EPILOG,
        formatter_class=_FORMATTER,
    )
    command.add_argument(
        "--json", action="store_true", help="print a JSON array instead of a table"
    )
    command.add_argument(
        "--sessions", action="store_true", help="list the session rows instead of the items"
    )
    command.set_defaults(run=ls)


def _add_release(
    commands: _Commands,
    operator: argparse.ArgumentParser,
) -> None:
    command = commands.add_parser(
        "release",
        parents=[operator],
        help="an operator's forced release of a stuck item (asks first)",
        description=(
            "Free an item whoever holds it, e.g. one whose holder is stuck. The row, its\n"
            "fencing token and its attributes are kept, so the next holder still gets a\n"
            "larger token. A holder that is still alive loses its lease at its next\n"
            "renewal and has its work cancelled. Asks for confirmation unless --yes.\n\n"
            "Because the token is kept, a stuck holder's fenced writes still pass\n"
            "downstream until someone takes the item (its acquisition raises the token).\n"
            "To fence the stuck holder off now, let a worker take the item right after.\n\n"
            "example:\n  aiolease release shard-7 --table leases --yes"
        ),
        epilog=COMMAND_EPILOG,
        formatter_class=_FORMATTER,
    )
    command.add_argument("id", help="the item's ID")
    command.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    command.set_defaults(run=release)


# -- watch (self-contained: its options live in _watch.py) ---------------------------------


def _add_watch(
    commands: _Commands,
    operator: argparse.ArgumentParser,
) -> None:
    from ._watch import add_arguments, watch

    command = commands.add_parser(
        "watch",
        parents=[operator],
        help="a live view of the table: holders, time to expiry, tokens, changes highlighted",
        description=(
            "Show the table as ls does and refresh it in place every --interval seconds.\n"
            "Rows whose holder or fencing token changed since the previous refresh are\n"
            "highlighted (marked * in plain output). Uses rich on a terminal when it is\n"
            "installed (the server extra), else redraws plainly; piped, it prints one\n"
            "snapshot after another. Ctrl-C ends it (exit code 0).\n\n"
            "example:\n  aiolease watch --table leases --interval 2"
        ),
        epilog=COMMAND_EPILOG,
        formatter_class=_FORMATTER,
    )
    add_arguments(command)
    command.set_defaults(run=watch)


def _add_server(commands: _Commands) -> None:
    command = commands.add_parser(
        "server",
        help="run an embedded DynamoDB-compatible server (moto) until Ctrl-C or SIGTERM",
        description=(
            "Serve moto's DynamoDB on this machine, one request at a time (so conditional\n"
            "writes are atomic, as on DynamoDB), until Ctrl-C or SIGTERM. It prints its\n"
            "endpoint and the environment other processes export to use it: throwaway\n"
            "credentials, AIOLEASE_ENDPOINT_URL and, with --table, AIOLEASE_TABLE. Tables\n"
            "live in memory and are gone when it stops. Needs the server extra.\n\n"
            "example:\n  aiolease server --table leases --port 8000\n"
            "  # then, in another shell:\n"
            "  aiolease ls --table leases --endpoint-url http://127.0.0.1:8000"
        ),
        epilog="Exit codes: see aiolease --help.",
        formatter_class=_FORMATTER,
    )
    command.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)"
    )
    command.add_argument(
        "--port", type=int, default=8000, help="the port (default: 8000; 0: any free port)"
    )
    command.add_argument(
        "--table",
        default=os.environ.get("AIOLEASE_TABLE"),
        help="create this lease table once serving (default: $AIOLEASE_TABLE, else none)",
    )
    command.add_argument(
        "--hash-key", default="LeaseID", help="the table's string hash key (default: LeaseID)"
    )
    command.add_argument(
        "--log-requests",
        action="store_true",
        help="print one access line per request on stderr (default: quiet)",
    )
    command.set_defaults(run=server)
