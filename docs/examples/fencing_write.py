"""Fencing tokens: a downstream table that refuses writes from an older lease holder.

Worker A takes a 1 s lease and stalls (a long GC pause, a frozen VM); its lease expires and
worker B takes the item with a larger fencing token. When A wakes up and writes, the
downstream conditional write rejects it. Runs against ``AIOLEASE_ENDPOINT_URL`` if set,
else against an embedded moto server.
"""

import asyncio
import contextlib
from typing import Any

from aiolease import LeaseRequest, LockStore


# --8<-- [start:fenced]
async def fenced_put(client: Any, shard: str, fencing_token: int, value: str) -> bool:
    """Write ``value`` for ``shard`` unless a holder with a newer token wrote already."""
    try:
        await client.update_item(
            TableName="reports",
            Key={"Shard": {"S": shard}},
            UpdateExpression="SET #value = :value, #fence = :token",
            # Accept the writer that holds the newest lease seen so far, refuse older ones.
            ConditionExpression="attribute_not_exists(#fence) OR #fence <= :token",
            ExpressionAttributeNames={"#value": "Value", "#fence": "FencingToken"},
            ExpressionAttributeValues={
                ":value": {"S": value},
                ":token": {"N": str(fencing_token)},
            },
        )
    except client.exceptions.ConditionalCheckFailedException:
        return False  # a newer holder has written: this writer's lease is over
    return True
    # --8<-- [end:fenced]


async def main(endpoint_url: str | None = None) -> None:
    async with LockStore.connect("fencing", endpoint_url=endpoint_url) as store:
        await store.create_table()
        await store.add_item("shard-1")
        client = store.client
        await create_reports_table(client)

        a = await store.acquire("shard-1", LeaseRequest("worker-a", duration=1))
        ok = await fenced_put(client, "shard-1", a.fencing_token, "from a")
        print(f"A writes with token {a.fencing_token}: {'accepted' if ok else 'refused'}")
        await asyncio.sleep(1.2)  # A stalls past its expiry, and B takes the item over
        b = await store.acquire("shard-1", LeaseRequest("worker-b", duration=1))
        ok = await fenced_put(client, "shard-1", b.fencing_token, "from b")
        print(f"B writes with token {b.fencing_token}: {'accepted' if ok else 'refused'}")
        ok = await fenced_put(client, "shard-1", a.fencing_token, "from a, late")
        print(f"A wakes up, writes with token {a.fencing_token}: {'accepted' if ok else 'refused'}")


async def create_reports_table(client: Any) -> None:
    with contextlib.suppress(client.exceptions.ResourceInUseException):  # already there
        await client.create_table(
            TableName="reports",
            KeySchema=[{"AttributeName": "Shard", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "Shard", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    await client.get_waiter("table_exists").wait(TableName="reports")


if __name__ == "__main__":
    from aiolease.testing import run_with_dynamodb

    run_with_dynamodb(main)
