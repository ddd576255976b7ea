"""Everyday use (issue 19): the scope's current lease, named waits, who holds an item, reasons."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

import pytest

from aiolease import LeaseLostError, LeaseNotObtainedError, LeaseRequest, Locker, LockStore

SHORT = 1.5


def request(name: str = "worker-a", duration: float = SHORT) -> LeaseRequest:
    return LeaseRequest(name, duration)


async def test_the_scope_exposes_the_latest_renewed_lease_and_its_expiry(store: LockStore) -> None:
    await store.add_item("a")
    scope = Locker(store).lease(request(), "a", heartbeat_period=0.3)
    async with scope as first:
        assert scope.lease == first and scope.until == first.until
        await asyncio.sleep(1.0)  # about three renewals
        assert scope.lease.until > first.until, "scope.lease did not follow the renewals"
        assert scope.until == scope.lease.until
        assert scope.lease.fencing_token == first.fencing_token


async def test_wait_until_lease_obtained_waits_for_a_named_item(store: LockStore) -> None:
    await store.add_item("leader")
    await store.add_item("other")
    locker = Locker(store, max_clock_skew=0.1)
    held = await store.acquire("leader", request("w1", 1))
    lease = await asyncio.wait_for(
        locker.wait_until_lease_obtained(request("w2"), 0.2, lease_id="leader"), 10
    )
    assert lease.lease_id == "leader" and lease.fencing_token == held.fencing_token + 1


async def test_wait_until_lease_obtained_on_a_missing_item_raises_at_once(store: LockStore) -> None:
    with pytest.raises(LeaseNotObtainedError) as info:
        await asyncio.wait_for(
            Locker(store).wait_until_lease_obtained(request(), lease_id="nope"), 5
        )
    assert info.value.item_exists is False


async def test_heartbeat_period_defaults_to_a_third_of_the_lease(store: LockStore) -> None:
    await store.add_item("a")
    locker = Locker(store)
    lease = await locker.wait_until_lease_obtained(request(duration=1.5))
    task = asyncio.create_task(locker.heartbeat(lease))
    await asyncio.sleep(2.5)  # longer than the lease: only renewals keep it
    assert not task.done(), "the heartbeat stopped"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    item = await store.get_item("a")
    assert item is not None and item.lessee_id == "worker-a"
    with pytest.raises(ValueError, match="heartbeat_period"):
        await locker.heartbeat(lease, 1.5)


async def test_a_named_wait_that_times_out_names_the_holder(store: LockStore) -> None:
    await store.add_item("leader")
    await store.acquire("leader", request("w1", 30))
    with pytest.raises(LeaseNotObtainedError, match="w1") as info:
        async with Locker(store).lease(request("w2"), "leader", wait_period=0.2, timeout=1):
            pytest.fail("entered a held lease")
    assert info.value.holder == "w1"
    assert info.value.lease_id == "leader"


async def test_holder_reads_who_holds_an_item(store: LockStore) -> None:
    await store.add_item("leader")
    locker = Locker(store, max_clock_skew=0.1)
    assert await locker.holder("leader") is None
    lease = await store.acquire("leader", request("w1", 1))
    holder = await locker.holder("leader")
    assert holder is not None
    assert (holder.lessee_id, holder.fencing_token) == ("w1", lease.fencing_token)
    assert holder.until == lease.until
    await asyncio.sleep(1.3)  # expired by the clock rule (1 s + 0.1 s skew)
    assert await locker.holder("leader") is None
    with pytest.raises(LeaseNotObtainedError) as info:
        await locker.holder("nope")
    assert info.value.item_exists is False


async def test_watch_holder_yields_each_change_of_holder(store: LockStore) -> None:
    await store.add_item("leader")
    locker = Locker(store, max_clock_skew=0.1)
    seen: list[tuple[str, int] | None] = []
    first = await store.acquire("leader", request("w1", 30))
    async with aclosing(locker.watch_holder("leader", poll=0.1)) as changes:
        async for holder in changes:
            seen.append(None if holder is None else (holder.lessee_id, holder.fencing_token))
            if len(seen) == 1:
                await store.renew(first)  # a renewal is no change
                await asyncio.sleep(0.3)
                await store.release(first)
            elif len(seen) == 2:
                await store.acquire("leader", request("w2", 30))
            else:
                break
    assert seen == [("w1", 1), None, ("w2", 2)]


async def test_watch_holder_is_cancellable_and_leaves_no_task(store: LockStore) -> None:
    await store.add_item("leader")
    locker = Locker(store)
    before = len(asyncio.all_tasks())

    async def watch() -> None:
        async for _ in locker.watch_holder("leader", poll=0.1):
            pass

    task = asyncio.create_task(watch())
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(asyncio.all_tasks()) == before


async def steal(client: Any, store: LockStore, lease_id: str, thief: str) -> None:
    await client.update_item(
        TableName=store.table_name,
        Key={store.hash_key: {"S": lease_id}},
        UpdateExpression="SET #l = :l, #t = #t + :one",
        ExpressionAttributeNames={"#l": store.lessee_attribute, "#t": store.token_attribute},
        ExpressionAttributeValues={":l": {"S": thief}, ":one": {"N": "1"}},
    )


async def test_lost_reason_is_a_few_words_and_the_message_the_whole_story(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a")
    with pytest.raises(LeaseLostError) as info:  # noqa: PT012
        async with Locker(store).lease(request(), "a", heartbeat_period=0.3):
            await steal(client, store, "a", "w2")
            await asyncio.sleep(30)
    assert info.value.reason == "taken over by 'w2'"
    assert "w2" in str(info.value) and "token" in str(info.value)
