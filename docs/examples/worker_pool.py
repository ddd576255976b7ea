"""Worker pool: a few workers share a pool of shards, each holding one shard at a time.

Each worker takes any free (or expired) shard, processes a few batches under the lease,
releases it and takes another. Runs against ``AIOLEASE_ENDPOINT_URL`` if set, else
against an embedded moto server.
"""

import asyncio
import uuid

from aiolease import LeaseLostError, LeaseRequest, Locker, LockStore

SHARDS = [f"shard-{n}" for n in range(4)]


async def process_batch(shard: str, fencing_token: int, batch: int) -> None:
    await asyncio.sleep(0.1)  # read the shard's next batch, write results with the token


# --8<-- [start:worker]
async def worker(locker: Locker, rounds: int) -> None:
    # Unique per process and task: two workers sharing an ID would be one lessee.
    request = LeaseRequest(f"worker-{uuid.uuid4().hex[:8]}", duration=3)
    for _ in range(rounds):
        scope = locker.lease(request, timeout=30)  # any free shard, waiting up to 30 s
        try:
            async with scope as lease:
                for batch in range(3):
                    if scope.time_left() < 1.0:
                        break  # too little lease left to finish a batch: stop here
                    await process_batch(lease.lease_id, lease.fencing_token, batch)
            print(f"{request.lessee_id} did {lease.lease_id} (token {lease.fencing_token})")
        except LeaseLostError as exc:
            print(f"{request.lessee_id} lost {exc.lease_id}; taking another shard")


async def main(endpoint_url: str | None = None) -> None:
    async with LockStore.connect("pool", endpoint_url=endpoint_url) as store:
        await store.create_table()
        for shard in SHARDS:
            await store.add_item(shard)
        locker = Locker(store, max_clock_skew=0.5)
        async with asyncio.TaskGroup() as workers:
            for _ in range(2):
                workers.create_task(worker(locker, rounds=3))
        # --8<-- [end:worker]


if __name__ == "__main__":
    from aiolease.testing import run_with_dynamodb

    run_with_dynamodb(main)
