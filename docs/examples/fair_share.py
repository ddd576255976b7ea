"""Every shard processed: each worker holds its share of the pool at once, for as long as it runs.

A worker that takes one shard, processes a batch and releases it leaves the choice of the
next shard to chance (the pool hands out a random free one, and the worker that just
released is often the first to ask again), so in a short run some shards never come up.
Here each of 3 workers runs 4 slots, a task each, and each slot holds one shard and keeps
processing it: the 12 shards are all held, and all processed, at once.
Runs against ``AIOLEASE_ENDPOINT_URL`` if set, else against an embedded moto server.
"""

import asyncio
import math
from collections import Counter

from aiolease import LeaseRequest, Locker, LockStore

SHARDS = [f"shard-{n:02}" for n in range(12)]
WORKERS = 3


async def process(shard: str, fencing_token: int) -> None:
    await asyncio.sleep(0.05)  # one batch of the shard, written with the fencing token


# --8<-- [start:share]
class Progress:
    """Batches done per shard; ``all_done`` is set once every shard has had one."""

    def __init__(self) -> None:
        self.batches: Counter[str] = Counter()
        self.all_done = asyncio.Event()

    def count(self, shard: str) -> None:
        self.batches[shard] += 1
        if len(self.batches) == len(SHARDS):
            self.all_done.set()


async def slot(locker: Locker, lessee_id: str, stop: asyncio.Event, progress: Progress) -> None:
    """Hold one shard of the pool and process it until ``stop`` is set."""
    async with locker.lease(LeaseRequest(lessee_id, duration=3)) as lease:
        while not stop.is_set():  # keep the shard: no release, no re-draw
            await process(lease.lease_id, lease.fencing_token)
            progress.count(lease.lease_id)


async def worker(locker: Locker, n: int, stop: asyncio.Event, progress: Progress) -> None:
    share = math.ceil(len(SHARDS) / WORKERS)  # 4 of 12 shards for each of 3 workers
    async with asyncio.TaskGroup() as slots:
        for k in range(share):  # a lessee ID per slot: each holds its own lease
            slots.create_task(slot(locker, f"worker-{n}-slot-{k}", stop, progress))


async def main(endpoint_url: str | None = None) -> None:
    async with LockStore.connect("fair-share", endpoint_url=endpoint_url) as store:
        await store.create_table()
        for shard in SHARDS:
            await store.add_item(shard)
        locker = Locker(store, max_clock_skew=0.5)  # one per process, shared by its tasks
        stop, progress = asyncio.Event(), Progress()
        async with asyncio.TaskGroup() as workers:
            for n in range(WORKERS):
                workers.create_task(worker(locker, n, stop, progress))
            await progress.all_done.wait()
            stop.set()  # a real service runs until SIGTERM instead
        # --8<-- [end:share]
        print(f"shards processed: {len(progress.batches)} of {len(SHARDS)}")


if __name__ == "__main__":
    from aiolease.testing import run_with_dynamodb

    run_with_dynamodb(main)
