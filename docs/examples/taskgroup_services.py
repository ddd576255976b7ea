"""TaskGroup services: run a heartbeat next to the services that need the lease.

``locker.heartbeat(lease, period)`` renews forever and raises ``LeaseLostError`` when the
lease is lost, so in a ``TaskGroup`` a loss cancels every sibling service. Runs against
``AIOLEASE_ENDPOINT_URL`` if set, else against an embedded moto server.
"""

import asyncio

from aiolease import LeaseLostError, LeaseRequest, Locker, LockStore


async def consume(shard: str) -> None:
    for n in range(3):
        await asyncio.sleep(0.2)
        print(f"consumed message {n} from {shard}")


async def report(shard: str) -> None:
    await asyncio.sleep(0.3)
    print(f"reported progress of {shard}")


# --8<-- [start:services]
async def serve(locker: Locker, store: LockStore) -> None:
    request = LeaseRequest("service-1", duration=3)
    lease = await locker.wait_until_lease_obtained(request, wait_period=1)
    try:
        async with asyncio.TaskGroup() as tg:
            heartbeat = tg.create_task(locker.heartbeat(lease, period=1))
            async with asyncio.TaskGroup() as services:  # ends when every service ends
                services.create_task(consume(lease.lease_id))
                services.create_task(report(lease.lease_id))
            heartbeat.cancel()  # the services are done: stop renewing
    except* LeaseLostError:
        print(f"lost {lease.lease_id}: every service was cancelled")
    finally:
        await store.release(lease)  # no-op (False) if the lease was lost meanwhile
    print(f"released {lease.lease_id}")
    # --8<-- [end:services]


async def main(endpoint_url: str | None = None) -> None:
    async with LockStore.connect("services", endpoint_url=endpoint_url) as store:
        await store.create_table()
        await store.add_item("queue-1")
        await serve(Locker(store, max_clock_skew=0.5), store)


if __name__ == "__main__":
    from aiolease.testing import run_with_dynamodb

    run_with_dynamodb(main)
