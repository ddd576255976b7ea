"""Quickstart: three workers share a pool of items; each holds one at a time under a lease.

Runs against an embedded moto server (needs the ``server`` extra), or against the DynamoDB
at ``AIOLEASE_ENDPOINT_URL`` if that is set.
"""

import asyncio
import os

from aiolease import LeaseRequest, Locker, LockStore
from aiolease.testing import local_dynamodb


async def worker(store: LockStore, name: str) -> None:
    locker = Locker(store, max_clock_skew=0.5)
    request = LeaseRequest(lessee_id=name, duration=3)
    async with locker.lease(request, timeout=10) as lease:
        print(f"{name} holds {lease.lease_id} (fencing token {lease.fencing_token})")
        await asyncio.sleep(1)  # the work; a heartbeat renews the lease meanwhile
    print(f"{name} released {lease.lease_id}")


async def main(endpoint_url: str) -> None:
    async with LockStore.connect("quickstart", endpoint_url=endpoint_url) as store:
        await store.create_table()
        for shard in ("shard-1", "shard-2", "shard-3"):
            await store.add_item(shard, {"region": "eu-west-1"})
        await asyncio.gather(*(worker(store, f"worker-{i}") for i in range(3)))


# --8<-- [start:local]
async def run() -> None:
    if url := os.environ.get("AIOLEASE_ENDPOINT_URL"):
        await main(url)
    else:
        async with local_dynamodb() as url:  # an embedded moto server on 127.0.0.1
            await main(url)
        # --8<-- [end:local]


if __name__ == "__main__":
    asyncio.run(run())
