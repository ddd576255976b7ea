"""The indexed layout: a table with a bucket index, rows registered two ways, a backfill.

Runs against ``AIOLEASE_ENDPOINT_URL`` if set, else against an embedded moto server.
"""

import hashlib
from typing import Any

from aiolease import LeaseRequest, Locker, LockStore


def bucket(lease_id: str, buckets: int = 16) -> int:
    """The bucket formula, for tools that register rows without aiolease."""
    # --8<-- [start:bucket]
    digest = hashlib.blake2b(lease_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % buckets
    # --8<-- [end:bucket]


# --8<-- [start:by-hand]
TABLE_BY_HAND: dict[str, Any] = {
    "KeySchema": [{"AttributeName": "LeaseID", "KeyType": "HASH"}],
    "AttributeDefinitions": [
        {"AttributeName": "LeaseID", "AttributeType": "S"},
        {"AttributeName": "LeaseBucket", "AttributeType": "N"},
        {"AttributeName": "LeaseUntil", "AttributeType": "N"},
    ],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": "LeaseBuckets",
            "KeySchema": [
                {"AttributeName": "LeaseBucket", "KeyType": "HASH"},
                {"AttributeName": "LeaseUntil", "KeyType": "RANGE"},
            ],
            "Projection": {
                "ProjectionType": "INCLUDE",
                "NonKeyAttributes": ["ProcessID", "LeaseToken"],
            },
        }
    ],
    "BillingMode": "PAY_PER_REQUEST",
}
# --8<-- [end:by-hand]


async def main(endpoint_url: str | None = None) -> None:
    async with LockStore.connect(
        "indexed-leases", endpoint_url=endpoint_url, index_name="LeaseBuckets", buckets=16
    ) as store:
        # --8<-- [start:usage]
        await store.create_table()  # the table and its index
        await store.add_item("shard-7")  # writes LeaseBucket too
        lease = await Locker(store).obtain_lease(LeaseRequest("worker-1", 30))  # no scan
        # --8<-- [end:usage]
        print(f"obtained {lease.lease_id} through the index")
        assert store.bucket_of("shard-7") == bucket("shard-7")

        # A row registered by another tool, without a bucket: the index cannot see it...
        await store.client.put_item(
            TableName=store.table_name,
            Item={"LeaseID": {"S": "shard-8"}, "LeaseUntil": {"N": "0"}},
        )
        # --8<-- [start:backfill]
        fixed = await store.backfill_buckets()  # rows it gave a bucket
        # --8<-- [end:backfill]
        print(f"backfilled {fixed} row(s)")
        lease = await Locker(store).obtain_lease(LeaseRequest("worker-2", 30))
        print(f"then obtained {lease.lease_id} through the index")

    async with LockStore.connect("by-hand", endpoint_url=endpoint_url) as store:
        await store.client.create_table(TableName="by-hand", **TABLE_BY_HAND)
        indexed = LockStore(store.client, "by-hand", index_name="LeaseBuckets")
        await indexed.create_table()  # checks the hand-made index's key schema
        print("the hand-made table has the right index")


if __name__ == "__main__":
    from aiolease.testing import run_with_dynamodb

    run_with_dynamodb(main)
