"""Against a real DynamoDB table, as the Go package's integration mode: set LEASETESTTABLENAME
and LEASETESTHASHKEY (and the usual AWS credentials/region). Skipped otherwise."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest

from aiolease import LeaseLostError, LeaseNotObtainedError, LeaseRequest, Locker, LockStore

TABLE = os.environ.get("LEASETESTTABLENAME")
HASH_KEY = os.environ.get("LEASETESTHASHKEY")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (TABLE and HASH_KEY), reason="set LEASETESTTABLENAME and LEASETESTHASHKEY"
    ),
]


@pytest.fixture
async def real_store() -> AsyncIterator[LockStore]:
    assert TABLE and HASH_KEY
    async with LockStore.connect(TABLE, HASH_KEY) as store:
        await store.create_table()
        yield store


async def test_lease_renew_release_on_real_dynamodb(real_store: LockStore) -> None:
    item = f"aiolease-it-{uuid.uuid4().hex}"
    assert await real_store.add_item(item, {"Status": "new"})
    a, b = LeaseRequest(f"a-{uuid.uuid4().hex}", 5), LeaseRequest(f"b-{uuid.uuid4().hex}", 5)
    lease = await real_store.lease(item, a)
    with pytest.raises(LeaseNotObtainedError):
        await real_store.lease(item, b)
    renewed = await real_store.renew(lease)
    assert renewed.fencing_token == lease.fencing_token
    assert await real_store.release(renewed)
    with pytest.raises(LeaseLostError):
        await real_store.renew(renewed)
    again = await real_store.lease(item, b)
    assert again.fencing_token == lease.fencing_token + 1
    assert again.attributes == {"Status": "new"}
    assert await real_store.release(again)


async def test_lease_scope_on_real_dynamodb(real_store: LockStore) -> None:
    item = f"aiolease-it-{uuid.uuid4().hex}"
    await real_store.add_item(item)
    async with Locker(real_store).lease(LeaseRequest(uuid.uuid4().hex, 6), item) as lease:
        assert lease.lease_id == item
