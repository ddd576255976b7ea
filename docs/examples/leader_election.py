"""Leader election: candidates compete for one named lease; the holder leads.

Each candidate waits for the ``leader`` item, leads while it holds it, and steps down by
leaving the ``async with`` (which releases it, so the next candidate takes over at once).
The fencing token is the leader's term number. Runs against ``AIOLEASE_ENDPOINT_URL`` if
set, else against an embedded moto server.
"""

import asyncio

from aiolease import LeaseRequest, Locker, LockStore


async def lead(term: int) -> None:
    await asyncio.sleep(0.5)  # a real leader runs until it is stopped or loses the lease


# --8<-- [start:election]
async def candidate(locker: Locker, name: str) -> None:
    request = LeaseRequest(name, duration=2)
    # Waits (polling every wait_period) until the "leader" item is free or expired.
    async with locker.lease(request, "leader", wait_period=0.2) as lease:
        print(f"{name} leads, term {lease.fencing_token}")
        await lead(term=lease.fencing_token)  # cancelled if leadership is lost
    print(f"{name} steps down")


async def main(endpoint_url: str | None = None) -> None:
    async with LockStore.connect("election", endpoint_url=endpoint_url) as store:
        await store.create_table()
        await store.add_item("leader")  # a named lease is an item like any other
        locker = Locker(store, max_clock_skew=0.5)
        await asyncio.gather(*(candidate(locker, f"node-{n}") for n in range(3)))
        # --8<-- [end:election]


if __name__ == "__main__":
    from aiolease.testing import run_with_dynamodb

    run_with_dynamodb(main)
