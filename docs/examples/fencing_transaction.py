"""Fencing with TransactWriteItems: a write that lands only while the lease row says we hold it.

The transaction checks the lease row (this lessee, this fencing token) and writes the
result in one atomic step: if another worker has taken the item since, nothing is written.
Runs against ``AIOLEASE_ENDPOINT_URL`` if set, else against an embedded moto server.
"""

import asyncio
import contextlib
from typing import Any

from aiolease import Lease, LeaseLostError, LeaseRequest, LockStore


# --8<-- [start:transaction]
async def write_under_lease(store: LockStore, lease: Lease, result: str) -> None:
    """Store ``result`` for the leased item, atomically with a check that we still hold it.

    Raises LeaseLostError, and writes nothing, if the item has another holder or token.
    """
    client = store.client
    try:
        await client.transact_write_items(
            TransactItems=[
                {
                    "ConditionCheck": {  # the lease row: still ours, still this tenure?
                        "TableName": store.table_name,
                        "Key": {store.hash_key: {"S": lease.lease_id}},
                        "ConditionExpression": "#lessee = :me AND #token = :token",
                        "ExpressionAttributeNames": {
                            "#lessee": store.lessee_attribute,  # "ProcessID"
                            "#token": store.token_attribute,  # "LeaseToken"
                        },
                        "ExpressionAttributeValues": {
                            ":me": {"S": lease.lessee_id},
                            ":token": {"N": str(lease.fencing_token)},
                        },
                    }
                },
                {
                    "Put": {  # the downstream write: any Put, Update or Delete
                        "TableName": "results",
                        "Item": {
                            "Shard": {"S": lease.lease_id},
                            "Result": {"S": result},
                            "FencingToken": {"N": str(lease.fencing_token)},
                        },
                    }
                },
            ]
        )
    except client.exceptions.TransactionCanceledException as exc:
        reasons = exc.response.get("CancellationReasons", [])
        if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
            raise LeaseLostError(
                f"{lease.lease_id!r} has another holder; result not written",
                lease_id=lease.lease_id,
            ) from exc
        raise  # the Put itself failed, or a conflicting transaction: retry or report
    # --8<-- [end:transaction]


async def main(endpoint_url: str | None = None) -> None:
    async with LockStore.connect("transactions", endpoint_url=endpoint_url) as store:
        await store.create_table()
        await store.add_item("shard-1")
        await create_results_table(store.client)

        a = await store.acquire("shard-1", LeaseRequest("worker-a", duration=1))
        await write_under_lease(store, a, "from a")
        print(f"A wrote its result under token {a.fencing_token}")
        await asyncio.sleep(1.2)  # A stalls past its expiry, and B takes the item over
        b = await store.acquire("shard-1", LeaseRequest("worker-b", duration=1))
        print(f"B took shard-1 over with token {b.fencing_token}")
        try:
            await write_under_lease(store, a, "from a, late")
        except LeaseLostError as exc:
            print(f"A's late write was refused: {exc}")


async def create_results_table(client: Any) -> None:
    with contextlib.suppress(client.exceptions.ResourceInUseException):  # already there
        await client.create_table(
            TableName="results",
            KeySchema=[{"AttributeName": "Shard", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "Shard", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    await client.get_waiter("table_exists").wait(TableName="results")


if __name__ == "__main__":
    from aiolease.testing import run_with_dynamodb

    run_with_dynamodb(main)
