"""``aiolease server``: an embedded DynamoDB-compatible server (moto) that stays up.

For trying things across processes on one machine: workers, the operator commands and
your own scripts all point at the endpoint it prints, with the environment it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
import threading

from aiolease import LockStore
from aiolease._connect import FAKE_CREDENTIALS, fake_session

from ._exit import Failed, UsageError

__all__ = ["environment", "server"]


def environment(endpoint_url: str, table: str | None) -> dict[str, str]:
    """What another process exports to use the server: throwaway credentials and the URL."""
    env = {
        "AWS_ACCESS_KEY_ID": FAKE_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": FAKE_CREDENTIALS["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": FAKE_CREDENTIALS["region_name"],
        "AIOLEASE_ENDPOINT_URL": endpoint_url,
    }
    if table:
        env["AIOLEASE_TABLE"] = table
    return env


async def server(args: argparse.Namespace) -> None:
    """Serve until SIGTERM or Ctrl-C; with ``--table``, create that table first."""
    try:
        from aiolease.testing._server import make_server
    except ImportError:
        raise UsageError('aiolease server needs moto: pip install "aiolease[server]"') from None
    _check_address(args.host, args.port)
    if not args.log_requests:
        # werkzeug logs one access line per request at INFO: thousands a minute under leases.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        httpd = make_server(args.host, args.port)
    except SystemExit:  # werkzeug has said why on stderr (the port was taken meanwhile)
        raise Failed(f"cannot listen on {args.host}:{args.port}") from None
    thread = threading.Thread(target=httpd.serve_forever, name="aiolease-server", daemon=True)
    thread.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        host = f"[{args.host}]" if ":" in args.host else args.host
        endpoint_url = f"http://{host}:{httpd.port}"
        if args.table:
            await _create_table(args, endpoint_url)
        _announce(endpoint_url, args)
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await asyncio.to_thread(httpd.shutdown)
        httpd.server_close()
    print("aiolease server: stopped; its tables are gone", file=sys.stderr)


def _check_address(host: str, port: int) -> None:
    """A clear error for a port in use, before werkzeug prints its own and exits."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise Failed(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                "choose another --port (0: any free port)"
            ) from None


async def _create_table(args: argparse.Namespace, endpoint_url: str) -> None:
    """Create ``--table`` on the server (an existing one keyed alike is fine)."""
    try:
        connection = LockStore.connect(
            args.table, args.hash_key, endpoint_url=endpoint_url, session=fake_session()
        )
        async with connection as store:
            await store.create_table()
    except ValueError as exc:  # a table name or hash key DynamoDB refuses
        raise UsageError(str(exc)) from None


def _announce(endpoint_url: str, args: argparse.Namespace) -> None:
    """Say where the server is and what another shell exports to use it."""
    lines = [f"aiolease server: DynamoDB-compatible (moto) at {endpoint_url}"]
    if args.table:
        lines.append(f"table {args.table!r} is ready (hash key {args.hash_key!r})")
    lines.append("In another shell:")
    exports = environment(endpoint_url, args.table)
    lines += [f"  export {name}={value}" for name, value in exports.items()]
    lines.append("Serving until Ctrl-C or SIGTERM; the tables live in memory only.")
    print("\n".join(lines), flush=True)
