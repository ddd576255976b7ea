"""Graceful shutdown: on SIGTERM, finish the current unit of work and release the lease.

Releasing hands the item to another worker at once, instead of after the lease expires.
Prints ``holding ID`` once it holds a lease and ``released ID`` when it let go; exits 0.
Runs against ``AIOLEASE_ENDPOINT_URL`` if set, else against an embedded moto server.
"""

import asyncio
import signal

from aiolease import LeaseRequest, Locker, LockStore


async def do_one_unit(shard: str, fencing_token: int) -> None:
    await asyncio.sleep(0.2)  # short units of work, so that shutting down is quick


# --8<-- [start:shutdown]
async def main(endpoint_url: str | None = None) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async with LockStore.connect("shutdown", endpoint_url=endpoint_url) as store:
        await store.create_table()
        await store.add_item("shard-1")
        locker = Locker(store, max_clock_skew=0.5)
        async with locker.lease(LeaseRequest("worker-1", duration=5)) as lease:
            print(f"holding {lease.lease_id}", flush=True)
            while not stop.is_set():  # checked between units: a unit is never cut short
                await do_one_unit(lease.lease_id, lease.fencing_token)
        # Leaving the block released the item: another worker can take it now.
        print(f"released {lease.lease_id}", flush=True)
        # --8<-- [end:shutdown]


if __name__ == "__main__":
    from aiolease.testing import run_with_dynamodb

    run_with_dynamodb(main)
