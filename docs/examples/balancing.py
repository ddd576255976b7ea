"""Fair share: 3 workers serve 12 shards with session.serve(); a 4th joins, one leaves.

Each worker holds its share of the pool (12 shards / live workers, counts differing by at
most one) and processes each shard in a task of its own until told to drain. Runs against
``AIOLEASE_ENDPOINT_URL`` if set, else against an embedded moto server.
"""

import asyncio
import contextlib

import aiolease
from aiolease import Lease, LeaseRequest, Locker, LockStore

SHARDS = [f"shard-{n:02}" for n in range(12)]
held: dict[str, set[str]] = {}  # what each worker processes now (for the printout)
changed = asyncio.Event()  # set whenever a worker starts or stops processing a shard


# --8<-- [start:serve]
async def process(lessee: str, lease: Lease) -> None:
    """Process one shard until serve() wants it back (a rebalance or a shutdown)."""
    held[lessee].add(lease.lease_id)
    changed.set()
    try:
        drain = aiolease.draining()
        while not drain.is_set():
            # one batch, written downstream with lease.fencing_token
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drain.wait(), 0.05)
        # checkpoint here: the next holder starts where this one stopped
    finally:
        held[lessee].discard(lease.lease_id)
        changed.set()


async def worker(locker: Locker, lessee: str) -> None:
    held[lessee] = set()
    async with locker.session(LeaseRequest(lessee, duration=6)) as session:
        # Runs until cancelled; cancelling drains and releases every shard first.
        await session.serve(lambda lease: process(lessee, lease), wait_period=0.5)
        # --8<-- [end:serve]


def counts(workers: list[str]) -> list[int]:
    return sorted(len(held.get(w, ())) for w in workers)  # () until its task starts


async def balanced(workers: list[str]) -> None:
    """Until the workers hold every shard, their counts differing by at most one."""
    while sum(counts(workers)) != len(SHARDS) or max(counts(workers)) - min(counts(workers)) > 1:
        changed.clear()
        await changed.wait()
    print(f"{len(workers)} workers hold {counts(workers)} shards")


async def main(endpoint_url: str | None = None) -> None:
    async with LockStore.connect("balancing", endpoint_url=endpoint_url) as store:
        await store.create_table()
        for shard in SHARDS:
            await store.add_item(shard)
        locker = Locker(store, max_clock_skew=0.5)
        tasks = {n: asyncio.create_task(worker(locker, f"worker-{n}")) for n in range(3)}
        await asyncio.wait_for(balanced([f"worker-{n}" for n in range(3)]), 20)
        tasks[3] = asyncio.create_task(worker(locker, "worker-3"))  # a worker joins
        await asyncio.wait_for(balanced([f"worker-{n}" for n in range(4)]), 20)
        tasks.pop(0).cancel()  # a graceful stop: its shards are drained and released
        await asyncio.wait_for(balanced([f"worker-{n}" for n in (1, 2, 3)]), 20)
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


if __name__ == "__main__":
    from aiolease.testing import run_with_dynamodb

    run_with_dynamodb(main)
