"""One worker process of the "several processes on one machine" example (local_processes.sh).

``python pool_worker.py worker-1`` leases any free item of ``$AIOLEASE_TABLE`` (default
``leases``) at ``$AIOLEASE_ENDPOINT_URL`` (unset: AWS), holds it for two seconds, releases it.
"""

import asyncio
import os
import sys

from aiolease import LeaseRequest, Locker, LockStore


async def main(endpoint_url: str | None = None, lessee_id: str = "worker-1") -> None:
    table = os.environ.get("AIOLEASE_TABLE", "leases")
    async with LockStore.connect(table, endpoint_url=endpoint_url) as store:
        await store.create_table()  # fine if it exists
        for n in (1, 2):
            await store.add_item(f"shard-{n}")  # an item that exists is left as it is
        locker = Locker(store, max_clock_skew=0.5)  # one per process, shared by its tasks
        request = LeaseRequest(lessee_id, duration=3)  # the lessee ID: unique per process
        async with locker.lease(request, timeout=10) as lease:
            print(f"{lessee_id} holds {lease.lease_id}, fencing token {lease.fencing_token}")
            await asyncio.sleep(2)  # long enough for both processes to hold at once
        print(f"{lessee_id} released {lease.lease_id}")


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else f"worker-{os.getpid()}"
    asyncio.run(main(os.environ.get("AIOLEASE_ENDPOINT_URL"), name))
