"""A lease holder in its own process, for the SIGKILL scenarios.

``python -m tests.chaos.holder_process ENDPOINT TABLE ITEM DURATION`` leases ITEM, then
prints ``held TOKEN START`` and, each time its local deadline moves (a renewal), a line
``deadline D``; times are ``time.monotonic()``, which all processes of a host share. It
works until killed.

``python -m tests.chaos.holder_process ENDPOINT TABLE ITEM,ITEM,... DURATION session``
holds every ITEM under one ``locker.session()`` (DURATION is the session's time to live)
and prints ``held ITEM TOKEN START`` per item, then the same ``deadline D`` lines (the
session's deadline, which every item shares).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time

from aiolease import LeaseRequest, Locker, LockStore
from aiolease.testing import fake_session


async def print_deadlines(time_left: object) -> None:
    """Print the local deadline each time it moves, forever."""
    assert callable(time_left)
    last = 0.0
    while True:
        deadline = time.monotonic() + time_left()
        if deadline > last + 0.01:
            print(f"deadline {deadline}", flush=True)
            last = deadline
        await asyncio.sleep(0.02)


async def main(endpoint: str, table: str, item: str, duration: float) -> None:
    async with LockStore.connect(table, endpoint_url=endpoint, session=fake_session()) as store:
        scope = Locker(store, max_clock_skew=0.5).lease(
            LeaseRequest(f"process-{os.getpid()}", duration), item, wait_period=0.1
        )
        async with scope as lease:
            print(f"held {lease.fencing_token} {time.monotonic()}", flush=True)
            await print_deadlines(scope.time_left)


async def main_session(endpoint: str, table: str, items: list[str], duration: float) -> None:
    async with LockStore.connect(table, endpoint_url=endpoint, session=fake_session()) as store:
        locker = Locker(store, max_clock_skew=0.5)
        request = LeaseRequest(f"process-{os.getpid()}", duration)
        async with locker.session(request) as session, contextlib.AsyncExitStack() as stack:
            scopes = [session.lease(item, wait_period=0.1) for item in items]
            for scope in scopes:
                lease = await stack.enter_async_context(scope)
                print(f"held {lease.lease_id} {lease.fencing_token} {time.monotonic()}", flush=True)
            await print_deadlines(scopes[0].time_left)


if __name__ == "__main__":
    endpoint, table, item, duration = sys.argv[1:5]
    if sys.argv[5:6] == ["session"]:
        asyncio.run(main_session(endpoint, table, item.split(","), float(duration)))
    else:
        asyncio.run(main(endpoint, table, item, float(duration)))
