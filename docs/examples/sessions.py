"""Sessions: one worker holds many shards under one session, with one write per heartbeat.

The worker starts a session, takes three shards under it (concurrently, in a TaskGroup) and
processes them; only the session row is renewed while they are held. Runs against
``AIOLEASE_ENDPOINT_URL`` if set, else against an embedded moto server.
"""

import asyncio

from aiolease import Lease, LeaseRequest, LeaseSession, Locker, LockStore

SHARDS = [f"shard-{n}" for n in range(3)]


async def process(lease: Lease) -> str:
    await asyncio.sleep(0.2)  # write results downstream, fenced with lease.fencing_token
    return f"{lease.lease_id} (token {lease.fencing_token})"


# --8<-- [start:session]
async def consume(session: LeaseSession, shard: str) -> None:
    # Taken under the session: no writes of its own while held, released on exit.
    async with session.lease(shard, timeout=10) as lease:
        print(f"{session.lessee_id} took {lease.lease_id} under its session")
        print(f"processed {await process(lease)}")


async def worker(locker: Locker) -> None:
    request = LeaseRequest("worker-1", duration=6)  # the session's time to live
    async with locker.session(request) as session:  # one heartbeat for all its items
        async with asyncio.TaskGroup() as tg:
            for shard in SHARDS:
                tg.create_task(consume(session, shard))
        # Or one call per item, like locker.run():
        print("again:", await session.run(process, "shard-0"))
    print("session ended; every shard released")
    # --8<-- [end:session]


async def main(endpoint_url: str | None = None) -> None:
    async with LockStore.connect("sessions", endpoint_url=endpoint_url) as store:
        await store.create_table()
        for shard in SHARDS:
            await store.add_item(shard)
        await worker(Locker(store, max_clock_skew=0.5))
        held = [row async for row in store.scan(consistent_read=True) if row.lessee_id]
        print(f"items still held: {len(held)}")


if __name__ == "__main__":
    from aiolease.testing import run_with_dynamodb

    run_with_dynamodb(main)
