"""The two takeover modes: a crashed holder's item is taken over by an observing waiter.

Runs against ``AIOLEASE_ENDPOINT_URL`` if set, else against an embedded moto server.
"""

import time

from aiolease import LeaseRequest, Locker, LockStore


async def main(endpoint_url: str | None = None) -> None:
    async with LockStore.connect("takeover-modes", endpoint_url=endpoint_url) as store:
        await store.create_table()
        await store.add_item("shard-1")
        # --8<-- [start:modes]
        clock_locker = Locker(store)  # takeover="clock", the default
        observing_locker = Locker(store, takeover="observe")  # the observed-expiry mode
        # --8<-- [end:modes]
        # A holder takes shard-1 for 1 s and "crashes": it never renews nor releases.
        crashed = await clock_locker.obtain_lease(LeaseRequest("crashed-worker", 1))
        started = time.monotonic()
        lease = await observing_locker.wait_until_lease_obtained(
            LeaseRequest("observer", 1), wait_period=0.25
        )
        waited = time.monotonic() - started
        assert lease.fencing_token == crashed.fencing_token + 1
        print(f"observer took {lease.lease_id} after {waited:.1f} s (lease: 1 s)")


if __name__ == "__main__":
    from aiolease.testing import run_with_dynamodb

    run_with_dynamodb(main)
