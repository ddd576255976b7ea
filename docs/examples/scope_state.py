"""The scope's current lease: ``as lease`` is the lease as obtained, the scope follows renewals.

Runs against ``AIOLEASE_ENDPOINT_URL`` if set, else against an embedded moto server.
"""

import asyncio

from aiolease import LeaseRequest, Locker, LockStore


async def main(endpoint_url: str | None = None) -> None:
    async with LockStore.connect("scope-state", endpoint_url=endpoint_url) as store:
        await store.create_table()
        await store.add_item("shard-1")
        locker = Locker(store, max_clock_skew=0.5)
        request = LeaseRequest("worker-1", duration=1.5)
        # --8<-- [start:scope]
        scope = locker.lease(request, "shard-1")
        async with scope as lease:
            token = lease.fencing_token  # fixed for the scope: send it with every write
            await asyncio.sleep(1.2)  # the heartbeat renews meanwhile
            assert scope.lease.fencing_token == token
            moved = scope.until > lease.until  # scope.until: the latest renewal's expiry
            print(f"expiry moved with the renewals: {moved}")
            if scope.time_left() > 0.5:  # seconds before the body would be cancelled
                print(f"the next step fits under token {token}")
        # --8<-- [end:scope]


if __name__ == "__main__":
    from aiolease.testing import run_with_dynamodb

    run_with_dynamodb(main)
