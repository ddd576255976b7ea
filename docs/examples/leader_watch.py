"""Leader election, the other side: who leads, and being told when it changes.

A leader holds the ``leader`` item; a follower asks ``locker.holder("leader")`` and follows
``locker.watch_holder("leader")``, which yields the new holder (or ``None`` while nobody
leads) each time the tenure changes. Runs against ``AIOLEASE_ENDPOINT_URL`` if set, else
against an embedded moto server.
"""

import asyncio
from contextlib import aclosing

from aiolease import LeaseRequest, Locker, LockStore


# --8<-- [start:watch]
async def lead(locker: Locker, name: str, steps_down: asyncio.Event) -> None:
    async with locker.lease(LeaseRequest(name, duration=2), "leader", wait_period=0.2) as lease:
        print(f"{name} leads, term {lease.fencing_token}")
        await steps_down.wait()  # a real leader runs until stopped or the lease is lost


async def follow(locker: Locker, until_leader: str) -> None:
    holder = await locker.holder("leader")  # who leads now (None: nobody)
    print(f"at start: {holder.lessee_id if holder else 'nobody'} leads")
    async with aclosing(locker.watch_holder("leader", poll=0.2)) as changes:
        async for holder in changes:  # first value at once, then one per change
            if holder is None:
                print("nobody leads")
            else:
                print(f"now {holder.lessee_id} leads, term {holder.fencing_token}")
            if holder is not None and holder.lessee_id == until_leader:
                break


async def main(endpoint_url: str | None = None) -> None:
    async with LockStore.connect("watch", endpoint_url=endpoint_url) as store:
        await store.create_table()
        await store.add_item("leader")
        locker = Locker(store, max_clock_skew=0.5)
        first, second = asyncio.Event(), asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            follower = tg.create_task(follow(locker, until_leader="node-2"))
            tg.create_task(lead(locker, "node-1", first))
            await asyncio.sleep(0.6)
            first.set()  # node-1 steps down (releases): the follower sees the change
            await asyncio.sleep(0.6)
            tg.create_task(lead(locker, "node-2", second))
            await follower
            second.set()
        # --8<-- [end:watch]


if __name__ == "__main__":
    from aiolease.testing import run_with_dynamodb

    run_with_dynamodb(main)
