"""Sharing a table with Go workers: a Python worker takes over an item a Go worker held.

The Go ``lease`` package writes ``ProcessID`` (S) and ``LeaseUntil`` (N, Unix epoch
nanoseconds) and no ``LeaseToken``; aiolease reads and writes the same attributes. Here
the row a Go worker leaves behind is written by hand. Runs against
``AIOLEASE_ENDPOINT_URL`` if set, else against an embedded moto server.
"""

import time

from aiolease import LeaseRequest, Locker, LockStore


async def main(endpoint_url: str | None = None) -> None:
    # --8<-- [start:store]
    # The table and hash key given to lease.NewLockStore(ddb, "lock_table_name",
    # "LockHashKeyName") on the Go side; the bookkeeping attribute names are the defaults.
    async with LockStore.connect(
        "lock_table_name", "LockHashKeyName", endpoint_url=endpoint_url
    ) as store:
        # --8<-- [end:store]
        await store.create_table()
        # What a Go worker's Lease() call leaves on the row: its ID and a 1 s expiry.
        go_until = time.time_ns() + 1_000_000_000
        await store.client.put_item(
            TableName="lock_table_name",
            Item={
                "LockHashKeyName": {"S": "shard-1"},
                "ProcessID": {"S": "go-worker-7"},
                "LeaseUntil": {"N": str(go_until)},
            },
        )
        locker = Locker(store, max_clock_skew=0.5)
        request = LeaseRequest("py-worker-1", duration=3)
        # Waits until the Go lease has expired (plus max_clock_skew), then takes it over.
        async with locker.lease(request, "shard-1", wait_period=0.2, timeout=10) as lease:
            print(f"took {lease.lease_id} over from the Go worker: token {lease.fencing_token}")
        for item in [item async for item in store.scan()]:
            print(f"{item.lease_id}: free={item.lessee_id is None} token={item.fencing_token}")


if __name__ == "__main__":
    from aiolease.testing import run_with_dynamodb

    run_with_dynamodb(main)
