"""Testing code that uses aiolease, with the fixtures of ``aiolease.testing``'s pytest plugin.

``lock_store`` is a :class:`aiolease.LockStore` on a fresh table of an embedded moto
server (``dynamodb_endpoint``, one per test session). Needs ``aiolease[server]`` and
pytest-asyncio; written for ``asyncio_mode = "auto"`` (in strict mode, mark the tests with
``@pytest.mark.asyncio``). Run: ``pytest docs/examples/test_my_worker.py``.
"""

import asyncio

import pytest

from aiolease import Lease, LeaseLostError, LeaseNotObtainedError, LeaseRequest, Locker, LockStore


# --8<-- [start:tests]
async def test_a_held_item_is_not_handed_to_a_second_worker(lock_store: LockStore) -> None:
    await lock_store.add_item("job-1")
    locker = Locker(lock_store, max_clock_skew=0.5)
    async with locker.lease(LeaseRequest("worker-a", duration=2)) as lease:
        assert lease.lease_id == "job-1"
        with pytest.raises(LeaseNotObtainedError):
            await locker.obtain_lease(LeaseRequest("worker-b", duration=2))


async def test_the_work_is_cancelled_when_the_lease_is_taken(lock_store: LockStore) -> None:
    await lock_store.add_item("job-1")
    locker = Locker(lock_store, max_clock_skew=0.5)
    finished = []

    async def work(lease: Lease) -> None:
        await lock_store.force_release(lease.lease_id)  # an operator frees the item...
        await lock_store.acquire(lease.lease_id, LeaseRequest("worker-b", duration=2))
        await asyncio.sleep(10)  # ...so the next heartbeat fails, and cancels this
        finished.append(lease.lease_id)

    with pytest.raises(LeaseLostError):
        await locker.run(LeaseRequest("worker-a", duration=2), work, "job-1")
    assert finished == []
    # --8<-- [end:tests]
