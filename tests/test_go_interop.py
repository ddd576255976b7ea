"""Python and Go workers sharing one table: the Go package's own UpdateItem, replayed.

``go_lease`` sends exactly the request of the Go package's ``LockStore.Lease`` (attribute
names written inline, as Go does; moto accepts that, and so does DynamoDB for these names).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from aiolease import LeaseLostError, LeaseNotObtainedError, LeaseRequest, Locker, LockStore


async def go_lease(
    client: Any, store: LockStore, lease_id: str, lessee: str, seconds: float
) -> bool:
    """The Go package's Lease(): True if it obtained or renewed the lease."""
    now = time.time_ns()
    try:
        await client.update_item(
            TableName=store.table_name,
            Key={store.hash_key: {"S": lease_id}},
            UpdateExpression="SET ProcessID=:process_id, LeaseUntil=:lease_until",
            ExpressionAttributeValues={
                ":process_id": {"S": lessee},
                ":lease_until": {"N": str(now + int(seconds * 1e9))},
                ":time_now": {"N": str(now)},
            },
            ConditionExpression=(
                f"(attribute_exists({store.hash_key})) and "
                "(LeaseUntil < :time_now or ProcessID = :process_id)"
            ),
            ReturnValues="ALL_NEW",
        )
    except client.exceptions.ConditionalCheckFailedException:
        return False
    return True


async def test_go_workers_can_lease_items_registered_by_python(
    client: Any, store: LockStore
) -> None:
    await store.add_item("shard-1", {"region": "eu"})
    assert await go_lease(client, store, "shard-1", "go-worker", 30)
    with pytest.raises(LeaseNotObtainedError, match="go-worker"):
        await store.lease("shard-1", LeaseRequest("py-worker", 30))


async def test_go_cannot_take_a_python_lease_until_it_is_released(
    client: Any, store: LockStore
) -> None:
    await store.add_item("shard-1")
    lease = await store.lease("shard-1", LeaseRequest("py-worker", 30))
    assert not await go_lease(client, store, "shard-1", "go-worker", 30)
    assert await store.release(lease)
    assert await go_lease(client, store, "shard-1", "go-worker", 30), (
        "a released row is free for Go"
    )


async def test_python_takes_an_expired_go_lease_with_a_new_token(
    client: Any, store: LockStore
) -> None:
    await store.add_item("shard-1")
    first = await store.lease("shard-1", LeaseRequest("py-1", 30))
    await store.release(first)
    assert await go_lease(client, store, "shard-1", "go-worker", 0.2)
    locker = Locker(store, max_clock_skew=0.1)
    with pytest.raises(LeaseNotObtainedError):
        await locker.obtain_lease(LeaseRequest("py-2", 5))
    await asyncio.sleep(0.4)  # let the Go lease expire (and the skew pass)
    lease = await locker.obtain_lease(LeaseRequest("py-2", 5))
    assert lease.fencing_token > first.fencing_token, "tokens still grow past a Go tenure"
    assert lease.attributes == {}


async def test_a_go_takeover_is_a_loss_for_the_python_holder(client: Any, store: LockStore) -> None:
    await store.add_item("shard-1")
    lease = await store.lease("shard-1", LeaseRequest("py-worker", 0.2))
    await asyncio.sleep(0.3)  # the Python lease expires without a heartbeat
    assert await go_lease(client, store, "shard-1", "go-worker", 30)
    with pytest.raises(LeaseLostError, match="go-worker"):
        await store.renew(lease)
    assert await store.release(lease) is False


async def test_go_rows_keep_their_attribute_names(client: Any, store: LockStore) -> None:
    await store.add_item("shard-1")
    assert await go_lease(client, store, "shard-1", "go-worker", 30)
    items = [item async for item in store.scan()]
    assert [(i.lease_id, i.lessee_id, i.fencing_token) for i in items] == [
        ("shard-1", "go-worker", 0)
    ]
    assert items[0].until is not None
