"""A first lease: register an item, hold it for the body of an ``async with``, release it.

The README's "Use it" example is the ``readme`` section of this file, copied verbatim (a
test checks that they match, and another runs the README's block as pasted). Runs against
``AIOLEASE_ENDPOINT_URL`` if set (``aiolease server`` prints it), else against AWS.
"""

# --8<-- [start:readme]
import asyncio
import os

from aiolease import LeaseLostError, LeaseRequest, Locker, LockStore

# A local server such as `aiolease server`; unset, AWS (credentials from the environment).
ENDPOINT_URL = os.environ.get("AIOLEASE_ENDPOINT_URL")


async def process(shard: str, fencing_token: int) -> None:
    """Your work. Pass the fencing token along with every write it makes downstream."""
    print(f"processing {shard} with fencing token {fencing_token}")
    await asyncio.sleep(0.5)


async def main(endpoint_url: str | None = ENDPOINT_URL) -> None:
    async with LockStore.connect("leases", endpoint_url=endpoint_url) as store:
        await store.create_table()
        await store.add_item("shard-7", {"region": "eu-west-1"})
        locker = Locker(store, max_clock_skew=1.0)
        try:
            async with locker.lease(LeaseRequest("worker-1", duration=30)) as lease:
                # Renewed every 10 s in the background. If the lease is lost, this block is
                # cancelled and LeaseLostError raised from the `async with`.
                await process(lease.lease_id, fencing_token=lease.fencing_token)
            print(f"released {lease.lease_id}; attributes were {lease.attributes}")
        except LeaseLostError:
            print("lost the lease: another worker has the item; the work may be partial")


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:readme]
