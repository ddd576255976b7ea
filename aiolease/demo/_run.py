"""``aiolease demo``'s options and its run: check them, set up server and table, go.

The order matters: the workers are spawned first, since their imports take as long as the
embedded server's start, and both happen at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

from aiolease import LockStore
from aiolease._aws import make_session, wants_fake_credentials
from aiolease.testing import FAKE_CREDENTIALS, MotoServer, fake_session

from ._balance import first_workers, orchestrate_balance, summarize_balance
from ._config import (
    BALANCE_ITEMS,
    BALANCE_MIN_WORKERS,
    BALANCE_WORKERS,
    DEFAULT_DURATION,
    DEFAULT_ITEMS,
    DEFAULT_WORKERS,
    MIN_DURATION,
)
from ._orchestrator import kill_all, orchestrate, spawn_workers, start_workers, stop_all
from ._report import summarize
from ._state import Demo, Worker
from ._views import make_view, print_header

__all__ = ["add_demo_arguments", "run_demo"]


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's own options (the connection options come from the CLI)."""
    parser.add_argument(
        "--duration",
        type=float,
        default=DEFAULT_DURATION,
        help=f"seconds to run the workers (default: {DEFAULT_DURATION:.0f}, "
        f"at least {MIN_DURATION:.0f})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help=f"worker processes (default: {DEFAULT_WORKERS}, at least 3; with --balance "
        f"{BALANCE_WORKERS}, at least {BALANCE_MIN_WORKERS}, two of which join later)",
    )
    parser.add_argument(
        "--items",
        type=int,
        help=f"work items (default: {DEFAULT_ITEMS}; with --balance {BALANCE_ITEMS})",
    )
    parser.add_argument(
        "--balance",
        action="store_true",
        help="workers serve a fair share of the pool (session.serve()); two join, one is "
        "stopped, one killed, and the pool rebalances each time",
    )
    parser.add_argument(
        "--report",
        metavar="FILE",
        help="write the run's figures as JSON (with --balance: time to balance after each "
        "moment, handoffs, overlaps)",
    )
    parser.add_argument(
        "--timeline",
        metavar="FILE",
        help="write a picture of who held what when (.svg or .png; needs matplotlib)",
    )
    parser.add_argument(
        "--aws",
        action="store_true",
        help="use AWS's own endpoint (credentials and region from the environment) "
        "instead of an embedded server",
    )
    parser.set_defaults(run=run_demo)


def _usage(message: str) -> int:
    print(f"aiolease demo: error: {message}", file=sys.stderr)
    return 2


def _check_options(args: argparse.Namespace) -> str | None:
    """What is wrong with the demo's own options, or ``None``; fills in the defaults."""
    if args.workers is None:
        args.workers = BALANCE_WORKERS if args.balance else DEFAULT_WORKERS
    if args.items is None:
        args.items = BALANCE_ITEMS if args.balance else DEFAULT_ITEMS
    if not args.duration >= MIN_DURATION:
        return f"--duration must be at least {MIN_DURATION:.0f} seconds"
    if args.balance and not BALANCE_MIN_WORKERS <= args.workers <= 20:
        return (
            f"--workers must be between {BALANCE_MIN_WORKERS} and 20 with --balance "
            "(two join, one stops, one is killed)"
        )
    if not args.balance and not 3 <= args.workers <= 20:
        return "--workers must be between 3 and 20 (one crashes, one stops)"
    if args.items < 1 or args.items > 100:
        return "--items must be between 1 and 100"
    if args.timeline:
        if Path(args.timeline).suffix.lower() not in (".svg", ".png"):
            return "--timeline must name a .svg or .png file"
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return '--timeline needs matplotlib: pip install "aiolease[timeline]"'
    return None


def _worker_environment(
    args: argparse.Namespace, endpoint: str | None, embedded: bool
) -> dict[str, str]:
    """The workers' environment: throwaway credentials for a local server, else the profile.

    Also clears ``args.profile`` when the credentials are throwaway ones.
    """
    env = dict(os.environ)
    if embedded or wants_fake_credentials(profile=args.profile, endpoint_url=endpoint):
        # A local server accepts any credentials: give everyone throwaway ones.
        env.update(
            AWS_ACCESS_KEY_ID=FAKE_CREDENTIALS["aws_access_key_id"],
            AWS_SECRET_ACCESS_KEY=FAKE_CREDENTIALS["aws_secret_access_key"],
            AWS_DEFAULT_REGION=FAKE_CREDENTIALS["region_name"],
        )
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            env.pop(name, None)
        args.profile = None
    elif args.profile:
        env["AWS_PROFILE"] = args.profile
    return env


async def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit code (0 only if the exclusion check passed)."""
    problem = _check_options(args)
    if problem is not None:
        return _usage(problem)
    endpoint = (
        args.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    embedded = endpoint is None and not args.aws
    if embedded:
        try:
            import moto  # noqa: F401
        except ImportError:
            return _usage('the embedded server needs moto: pip install -e ".[server]"')
    env = _worker_environment(args, endpoint, embedded)
    args.endpoint_url = endpoint
    session = (
        None
        if embedded
        else make_session(
            profile=args.profile,
            endpoint_url=args.endpoint_url,
            table=args.table,
            hash_key=args.hash_key,
        )
    )
    async with AsyncExitStack() as stack:
        records = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aiolease-demo-")))
        demo = Demo(
            args,
            [f"item-{i}" for i in range(1, args.items + 1)],
            [
                Worker(f"worker-{i}", records / f"worker-{i}.jsonl", records / f"worker-{i}.log")
                for i in range(1, args.workers + 1)
            ],
        )
        stack.push_async_callback(kill_all, demo)
        # The workers' imports take as long as the server's start: do both at once.
        await spawn_workers(demo, env)
        if embedded:
            server = MotoServer()
            endpoint = await asyncio.to_thread(server.start)
            stack.callback(server.stop)
            session = fake_session()
        demo.endpoint = endpoint
        store = await stack.enter_async_context(
            LockStore.connect(
                args.table,
                args.hash_key,
                endpoint_url=endpoint,
                region_name=args.region,
                session=session,
            )
        )
        if not await _prepare_table(demo, store):
            return 1
        print_header(demo, embedded)
        if not await start_workers(demo, first_workers(demo) if args.balance else None):
            return 1
        interrupted = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
        stack.callback(loop.remove_signal_handler, signal.SIGINT)
        view = make_view(demo)
        try:
            if args.balance:
                await orchestrate_balance(demo, store, view, interrupted)
            else:
                await orchestrate(demo, store, view, interrupted)
            await stop_all(demo, store, view, interrupted=interrupted.is_set())
        finally:
            view.close()
        if args.balance:
            return summarize_balance(demo, interrupted.is_set())
        return summarize(demo, interrupted.is_set())
    raise AssertionError("unreachable")  # pragma: no cover


async def _prepare_table(demo: Demo, store: LockStore) -> bool:
    """Create the table and the demo's items; refuse a table holding anything else."""
    await store.create_table()
    for item in demo.items:
        await store.add_item(item, {"demo": True})
    strangers = sorted(set(await store.list_lease_ids()) - set(demo.items))
    if strangers:
        print(
            f"aiolease demo: error: table {demo.args.table!r} holds items the demo did not "
            f"create ({', '.join(strangers[:3])}...); pick another --table",
            file=sys.stderr,
        )
        return False
    return True
