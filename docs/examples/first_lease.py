"""A first lease: register an item, hold it for the body of an ``async with``, release it.

The README's "Use it" example is the ``readme`` section of this file, copied verbatim (a
test checks that they match). Runs against ``AIOLEASE_ENDPOINT_URL`` if set, else against
an embedded moto server.
"""

# --8<-- [start:readme]
import asyncio

from aiolease import LeaseLostError, LeaseRequest, Locker, LockStore


async def process(shard: str, fencing_token: int) -> None:
    """Your work. Pass the fencing token along with every write it makes downstream."""
    print(f"processing {shard} with fencing token {fencing_token}")
    await asyncio.sleep(0.5)


async def main(endpoint_url: str | None = None) -> None:  # None: AWS, from the environment
    async with LockStore.connect("leases", endpoint_url=endpoint_url) as store:
        await store.create_table()
        await store.add_item("shard-7", {"region": "eu-west-1"})
        locker = Locker(store, max_clock_skew=1.0)
        try:
            async with locker.lease(LeaseRequest("worker-1", duration=30)) as lease:
                # Renewed every 10 s in the background. If the lease is lost, this block is
                # cancelled and LeaseLostError raised from the `async with`.
                await process(lease.lease_id, fencing_token=lease.fencing_token)
        except LeaseLostError:
            ...  # another worker has the item now; whatever ran above may be partial
        # --8<-- [end:readme]
        print(f"released {lease.lease_id}; attributes were {lease.attributes}")


if __name__ == "__main__":
    from aiolease.testing import run_with_dynamodb

    run_with_dynamodb(main)
