"""A lease holder in its own process, for the SIGKILL scenario.

``python -m tests.chaos.holder_process ENDPOINT TABLE ITEM DURATION`` leases ITEM, then
prints ``held TOKEN START`` and, each time its local deadline moves (a renewal), a line
``deadline D``; times are ``time.monotonic()``, which all processes of a host share. It
works until killed.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from aiolease import LeaseRequest, Locker, LockStore
from aiolease.testing import fake_session


async def main(endpoint: str, table: str, item: str, duration: float) -> None:
    async with LockStore.connect(table, endpoint_url=endpoint, session=fake_session()) as store:
        scope = Locker(store, max_clock_skew=0.5).lease(
            LeaseRequest(f"process-{os.getpid()}", duration), item, wait_period=0.1
        )
        async with scope as lease:
            print(f"held {lease.fencing_token} {time.monotonic()}", flush=True)
            last = 0.0
            while True:
                deadline = time.monotonic() + scope.time_left()
                if deadline > last + 0.01:
                    print(f"deadline {deadline}", flush=True)
                    last = deadline
                await asyncio.sleep(0.02)


if __name__ == "__main__":
    endpoint, table, item, duration = sys.argv[1:5]
    asyncio.run(main(endpoint, table, item, float(duration)))
