"""LockStore against the moto server: every row of the contract's store table."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError

from aiolease import (
    LeaseLostError,
    LeaseNotObtainedError,
    LeaseRequest,
    LeaseStoreError,
    LeaseUnavailableError,
    LockStore,
)
from aiolease.testing import fake_session

from . import faults
from .faults import FaultyClient

A = LeaseRequest("worker-a", 2)
B = LeaseRequest("worker-b", 2)


async def raw_item(client: Any, store: LockStore, lease_id: str) -> dict[str, Any] | None:
    response = await client.get_item(
        TableName=store.table_name, Key={store.hash_key: {"S": lease_id}}, ConsistentRead=True
    )
    return response.get("Item")


def layout_attributes(store: LockStore, lease_id: str) -> dict[str, Any]:
    """What the table layout adds to a row: the bucket, in the indexed layout."""
    if not store.indexed:
        return {}
    return {store.bucket_attribute: {"N": str(store.bucket_of(lease_id))}}


# -- create_table -----------------------------------------------------------------------


async def test_create_table_is_idempotent(store: LockStore) -> None:
    await store.create_table()  # already exists with the right key: fine
    description = await store.describe_table()
    assert description["TableStatus"] == "ACTIVE"
    assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


async def test_create_table_with_a_wrong_key_schema_names_table_and_key(
    client: Any, table_name: str
) -> None:
    await LockStore(client, table_name, "OtherKey").create_table()
    with pytest.raises(LeaseStoreError) as info:
        await LockStore(client, table_name, "LeaseID").create_table()
    assert table_name in str(info.value) and "LeaseID" in str(info.value)
    assert info.value.table == table_name and info.value.hash_key == "LeaseID"


async def test_writes_on_a_wrong_key_schema_raise_store_error(client: Any, table_name: str) -> None:
    await LockStore(client, table_name, "OtherKey").create_table()
    wrong = LockStore(client, table_name, "LeaseID")
    with pytest.raises(LeaseStoreError, match="LeaseID"):
        await wrong.add_item("x")
    with pytest.raises(LeaseStoreError, match=table_name):
        await wrong.lease("x", A)


@pytest.mark.parametrize("call", ["add_item", "lease", "list_lease_ids"])
async def test_missing_table_raises_store_error_naming_table_and_key(
    client: Any, call: str
) -> None:
    store = LockStore(client, "no-such-table", "LeaseID")
    calls = {
        "add_item": lambda: store.add_item("x"),
        "lease": lambda: store.lease("x", A),
        "list_lease_ids": store.list_lease_ids,
    }
    with pytest.raises(LeaseStoreError) as info:
        await calls[call]()
    message = str(info.value)
    assert "no-such-table" in message and "LeaseID" in message and "does not exist" in message


# -- add_item ---------------------------------------------------------------------------


async def test_add_item_creates_a_free_row_go_workers_can_lease(
    client: Any, store: LockStore
) -> None:
    assert await store.add_item("item-1", {"shard": "eu-1", "weight": 3}) is True
    row = await raw_item(client, store, "item-1")
    expected = {
        "LeaseID": {"S": "item-1"},
        "LeaseUntil": {"N": "0"},
        "shard": {"S": "eu-1"},
        "weight": {"N": "3"},
        **layout_attributes(store, "item-1"),  # a bucket, which Go workers never touch
    }
    assert row == expected


async def test_add_item_leaves_an_existing_row_untouched(client: Any, store: LockStore) -> None:
    await store.add_item("item-1", {"v": 1})
    lease = await store.lease("item-1", A)
    before = await raw_item(client, store, "item-1")
    assert await store.add_item("item-1", {"v": 2}) is False
    assert await raw_item(client, store, "item-1") == before
    assert before is not None and before["ProcessID"] == {"S": lease.lessee_id}


async def test_add_item_accepts_floats_and_nested_values(store: LockStore) -> None:
    await store.add_item("x", {"ratio": 0.25, "tags": ["a", 1.5], "meta": {"k": True}})
    lease = await store.lease("x", A)
    assert lease.attributes == {
        "ratio": Decimal("0.25"),
        "tags": ["a", Decimal("1.5")],
        "meta": {"k": True},
    }


@pytest.mark.parametrize("name", ["LeaseID", "ProcessID", "LeaseUntil", "LeaseToken"])
async def test_add_item_refuses_attributes_named_like_bookkeeping(
    client: Any, store: LockStore, name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        await store.add_item("x", {name: "boom"})
    assert await raw_item(client, store, "x") is None


async def test_add_item_refuses_bad_attribute_containers(store: LockStore) -> None:
    with pytest.raises(TypeError, match="attributes"):
        await store.add_item("x", [("a", 1)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'bad'"):
        await store.add_item("x", {"bad": object()})


# -- list_lease_ids ---------------------------------------------------------------------


async def test_list_lease_ids_reads_every_page_past_one_megabyte(
    client: Any, table_name: str
) -> None:
    proxy = FaultyClient(client)
    store = LockStore(proxy, table_name)
    await store.create_table()
    payload = "x" * 4000  # 300 rows x 4 kB = 1.2 MB: more than one 1 MB scan page
    ids = [f"item-{i:04d}" for i in range(300)]
    for start in range(0, len(ids), 25):
        await client.batch_write_item(
            RequestItems={
                table_name: [
                    {
                        "PutRequest": {
                            "Item": {
                                "LeaseID": {"S": i},
                                "LeaseUntil": {"N": "0"},
                                "payload": {"S": payload},
                            }
                        }
                    }
                    for i in ids[start : start + 25]
                ]
            }
        )
    proxy.calls.clear()
    assert sorted(await store.list_lease_ids()) == ids
    # list_lease_ids projects the key only; a full scan shows the paging itself.
    proxy.calls.clear()
    assert len([item async for item in store.scan()]) == 300
    assert proxy.calls["scan"] >= 2, "a >1 MB table must be read in several pages"


# -- lease (acquire or renew for the same lessee) -----------------------------------------


async def test_lease_on_a_free_item_acquires_with_token_one(client: Any, store: LockStore) -> None:
    await store.add_item("a")
    until = datetime.now(UTC) + timedelta(seconds=30)
    lease = await store.lease("a", A, until)
    assert (lease.lease_id, lease.lessee_id, lease.fencing_token) == ("a", "worker-a", 1)
    assert abs((lease.until - until).total_seconds()) < 0.001
    row = await raw_item(client, store, "a")
    assert row is not None
    assert row["ProcessID"] == {"S": "worker-a"}
    assert int(row["LeaseUntil"]["N"]) == lease.until_ns
    assert abs(int(row["LeaseUntil"]["N"]) / 1e9 - until.timestamp()) < 0.001, "epoch nanoseconds"


async def test_lease_held_by_another_is_not_obtained(store: LockStore) -> None:
    await store.add_item("a")
    await store.lease("a", A)
    with pytest.raises(LeaseNotObtainedError) as info:
        await store.lease("a", B)
    assert info.value.holder == "worker-a" and info.value.lease_id == "a"


async def test_lease_on_an_expired_item_takes_it_with_a_new_token(store: LockStore) -> None:
    await store.add_item("a")
    past = datetime.now(UTC) - timedelta(seconds=1)
    first = await store.lease("a", A, past)
    second = await store.lease("a", B)
    assert second.lessee_id == "worker-b"
    assert second.fencing_token == first.fencing_token + 1


async def test_lease_respects_max_clock_skew_before_taking_an_expired_item(
    store: LockStore,
) -> None:
    await store.add_item("a")
    await store.lease("a", A, datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(LeaseNotObtainedError):
        await store.lease("a", B, max_clock_skew=30)  # expired 1 s ago: within the skew
    assert (await store.lease("a", B, max_clock_skew=0.1)).lessee_id == "worker-b"


async def test_lease_by_the_same_lessee_renews_and_keeps_the_token(store: LockStore) -> None:
    await store.add_item("a")
    first = await store.lease("a", A)
    later = datetime.now(UTC) + timedelta(seconds=60)
    again = await store.lease("a", A, later)
    assert again.fencing_token == first.fencing_token
    assert again.until > first.until


async def test_lease_on_a_missing_item_fails_and_never_creates_it(
    client: Any, store: LockStore
) -> None:
    with pytest.raises(LeaseNotObtainedError, match="add_item") as info:
        await store.lease("ghost", A)
    assert info.value.item_exists is False
    assert await raw_item(client, store, "ghost") is None


async def test_acquire_never_reenters_a_lease_held_by_the_same_lessee(store: LockStore) -> None:
    await store.add_item("a")
    await store.acquire("a", A)
    with pytest.raises(LeaseNotObtainedError):
        await store.acquire("a", A)


# -- fencing tokens -------------------------------------------------------------------------


async def test_fencing_tokens_strictly_increase_from_holder_to_holder(store: LockStore) -> None:
    await store.add_item("a")
    tokens = []
    for request in (A, B, A, B):
        lease = await store.lease("a", request)
        tokens.append(lease.fencing_token)
        renewed = await store.renew(lease)
        assert renewed.fencing_token == lease.fencing_token, "a renewal keeps the token"
        assert await store.release(renewed) is True
    assert tokens == [1, 2, 3, 4]


# -- renew ------------------------------------------------------------------------------


async def test_renew_extends_the_lease(client: Any, store: LockStore) -> None:
    await store.add_item("a")
    lease = await store.lease("a", A)
    renewed = await store.renew(lease, datetime.now(UTC) + timedelta(seconds=120))
    assert renewed.until > lease.until and renewed.fencing_token == lease.fencing_token
    row = await raw_item(client, store, "a")
    assert row is not None and int(row["LeaseUntil"]["N"]) == renewed.until_ns


async def test_renew_defaults_to_now_plus_duration(store: LockStore) -> None:
    await store.add_item("a")
    lease = await store.lease("a", LeaseRequest("w", 100))
    renewed = await store.renew(lease)
    expected = datetime.now(UTC) + timedelta(seconds=100)
    assert abs((renewed.until - expected).total_seconds()) < 2


async def test_renew_after_takeover_raises_lease_lost(store: LockStore) -> None:
    await store.add_item("a")
    lease = await store.lease("a", A, datetime.now(UTC) - timedelta(seconds=1))
    await store.lease("a", B)
    with pytest.raises(LeaseLostError, match="worker-b"):
        await store.renew(lease)


async def test_renew_never_regains_a_lease_the_same_lessee_holds_under_a_newer_token(
    store: LockStore,
) -> None:
    await store.add_item("a")
    old = await store.lease("a", A)
    assert await store.release(old)
    new = await store.lease("a", A)  # A again, but a new tenure
    with pytest.raises(LeaseLostError):
        await store.renew(old)
    assert (await store.renew(new)).fencing_token == new.fencing_token


async def test_renew_after_release_raises_lease_lost(store: LockStore) -> None:
    await store.add_item("a")
    lease = await store.lease("a", A)
    await store.release(lease)
    with pytest.raises(LeaseLostError, match="free"):
        await store.renew(lease)


# -- release ----------------------------------------------------------------------------


async def test_release_frees_the_item_and_keeps_row_token_and_attributes(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a", {"payload": "keep me"})
    lease = await store.lease("a", A)
    assert await store.release(lease) is True
    assert await raw_item(client, store, "a") == {
        "LeaseID": {"S": "a"},
        "LeaseUntil": {"N": "0"},
        "LeaseToken": {"N": str(lease.fencing_token)},
        "payload": {"S": "keep me"},
        **layout_attributes(store, "a"),
    }
    assert (await store.lease("a", B)).lessee_id == "worker-b", "a released item is free"


async def test_release_of_a_lease_no_longer_held_returns_false_and_frees_nothing(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a")
    stale = await store.lease("a", A, datetime.now(UTC) - timedelta(seconds=1))
    current = await store.lease("a", B)
    assert await store.release(stale) is False
    row = await raw_item(client, store, "a")
    assert row is not None and row["ProcessID"] == {"S": "worker-b"}
    assert await store.release(current) is True
    assert await store.release(current) is False


# -- user attributes are never changed --------------------------------------------------------


async def test_lease_operations_preserve_user_attributes(client: Any, store: LockStore) -> None:
    attributes = {"Size": 7, "Status": "ready", "blob": b"\x00\x01", "set": {"x", "y"}}
    await store.add_item("a", attributes)
    expected = {
        k: v
        for k, v in (await raw_item(client, store, "a") or {}).items()
        if k not in ("LeaseID", "LeaseUntil")
    }
    lease = await store.lease("a", A)
    assert lease.attributes == {
        "Size": 7,
        "Status": "ready",
        "blob": lease.attributes["blob"],
        "set": {"x", "y"},
    }
    for step in ("lease", "renew", "release"):
        if step == "renew":
            lease = await store.renew(lease)
        elif step == "release":
            await store.release(lease)
        row = await raw_item(client, store, "a") or {}
        user = {
            k: v
            for k, v in row.items()
            if k not in ("LeaseID", "LeaseUntil", "ProcessID", "LeaseToken", "LeaseDuration")
        }
        assert user == expected, f"user attributes changed by {step}"


# -- names and values always go through placeholders ------------------------------------------


@pytest.mark.parametrize(
    "lease_id",
    ['it\'s "quoted"', "with spaces", "#hash", ":colon", "ünïcødé ✓ 日本", "a" * 2048],
)
async def test_odd_ids_work_end_to_end(store: LockStore, lease_id: str) -> None:
    assert await store.add_item(lease_id)
    lease = await store.lease(lease_id, A)
    assert lease.lease_id == lease_id
    await store.renew(lease)
    assert await store.release(lease)
    assert lease_id in await store.list_lease_ids()


async def test_reserved_words_as_configured_attribute_names(client: Any, table_name: str) -> None:
    store = LockStore(
        client,
        table_name,
        "Name",
        lessee_attribute="Status",
        until_attribute="Size",
        token_attribute="Count",
    )
    await store.create_table()
    await store.add_item("a", {"Date": "2026-11-26"})
    lease = await store.lease("a", A)
    with pytest.raises(LeaseNotObtainedError):
        await store.lease("a", B)
    await store.renew(lease)
    assert await store.release(lease)
    row = await raw_item(client, store, "a")
    assert row is not None and set(row) == {"Name", "Size", "Count", "Date"}


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lease_id", "error", "match"),
    [
        (None, TypeError, "lease_id"),
        (42, TypeError, "lease_id"),
        ("", ValueError, "lease_id"),
        ("é" * 1025, ValueError, "2048"),
    ],
)
async def test_bad_lease_ids_are_refused_before_any_request(
    faulty: tuple[LockStore, FaultyClient], lease_id: Any, error: type[Exception], match: str
) -> None:
    store, proxy = faulty
    proxy.calls.clear()
    for call in (store.add_item(lease_id), store.lease(lease_id, A), store.acquire(lease_id, A)):
        with pytest.raises(error, match=match):
            await call
    assert not proxy.calls, "nothing may be sent for a bad argument"


async def test_bad_requests_and_untils_are_refused(store: LockStore) -> None:
    await store.add_item("a")
    with pytest.raises(TypeError, match="request"):
        await store.lease("a", "worker-a")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone"):
        await store.lease("a", A, datetime.now())  # naive
    with pytest.raises(TypeError, match="until"):
        await store.lease("a", A, 12345)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="lease"):
        await store.renew("a")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="lease"):
        await store.release(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"table_name": "x"}, ValueError, "table_name"),
        ({"table_name": 5}, TypeError, "table_name"),
        ({"hash_key": ""}, ValueError, "hash_key"),
        ({"lessee_attribute": "LeaseUntil"}, ValueError, "differ"),
        ({"token_attribute": None}, TypeError, "token_attribute"),
        ({"max_attempts": 0}, ValueError, "max_attempts"),
    ],
)
def test_bad_store_configuration_names_the_argument(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    class FakeClient:
        async def update_item(self, **kwargs: Any) -> None: ...

    args: dict[str, Any] = {"table_name": "leases", **kwargs}
    with pytest.raises(error, match=match):
        LockStore(FakeClient(), **args)  # type: ignore[arg-type]


def test_a_store_needs_a_client() -> None:
    with pytest.raises(TypeError, match="client"):
        LockStore(None, "leases")  # type: ignore[arg-type]


async def test_malformed_until_on_a_held_row_is_reported_and_left_alone(
    client: Any, store: LockStore
) -> None:
    try:
        await client.put_item(
            TableName=store.table_name,
            Item={
                "LeaseID": {"S": "m"},
                "ProcessID": {"S": "go-worker"},
                "LeaseUntil": {"S": "soon"},
            },
        )
    except ClientError as exc:
        if not faults.refused_index_key(exc):
            raise
        pytest.skip("the server refuses this row in the indexed layout, as DynamoDB does")
    before = await raw_item(client, store, "m")
    with pytest.raises(LeaseNotObtainedError, match="malformed LeaseUntil"):
        await store.lease("m", A)
    assert await raw_item(client, store, "m") == before


async def test_malformed_token_raises_store_error_and_changes_nothing(
    client: Any, store: LockStore
) -> None:
    await client.put_item(
        TableName=store.table_name,
        Item={"LeaseID": {"S": "m"}, "LeaseUntil": {"N": "0"}, "LeaseToken": {"S": "seven"}},
    )
    before = await raw_item(client, store, "m")
    with pytest.raises(LeaseStoreError, match=store.table_name):
        await store.lease("m", A)
    assert await raw_item(client, store, "m") == before


# -- errors and retries -----------------------------------------------------------------------


async def test_access_denied_becomes_store_error_without_retries(
    faulty: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = faulty
    await store.add_item("a")
    proxy.inject("update_item", lambda call: _raise(faults.client_error("AccessDeniedException")))
    proxy.calls.clear()
    with pytest.raises(LeaseStoreError, match="denied") as info:
        await store.lease("a", A)
    assert store.table_name in str(info.value)
    assert proxy.calls["update_item"] == 1, "access denied is not retried"


async def test_transient_errors_are_retried(faulty: tuple[LockStore, FaultyClient]) -> None:
    store, proxy = faulty
    await store.add_item("a")
    proxy.inject("update_item", faults.throttle, faults.server_error)
    lease = await store.lease("a", A)
    assert lease.fencing_token == 1


async def test_transient_errors_surface_once_retries_are_exhausted(
    faulty: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = faulty
    await store.add_item("a")
    proxy.inject("update_item", *[faults.throttle] * store.max_attempts)
    with pytest.raises(LeaseUnavailableError, match="ThrottlingException") as info:
        await store.lease("a", A)
    assert info.value.__cause__ is not None


async def test_an_unreachable_endpoint_is_unavailable_not_a_traceback() -> None:
    async with LockStore.connect(
        "leases", endpoint_url="http://127.0.0.1:9", session=fake_session(), connect_timeout=0.5
    ) as store:
        with pytest.raises(LeaseUnavailableError, match="leases"):
            await store.add_item("a")


# -- lost responses and cancellation ------------------------------------------------------------


async def test_an_acquisition_whose_response_was_lost_is_recognised_as_ours(
    client: Any, faulty: tuple[LockStore, FaultyClient]
) -> None:
    store, proxy = faulty
    await store.add_item("a")
    proxy.inject("update_item", faults.drop_response)
    lease = await store.acquire("a", A)
    assert lease.fencing_token == 1, "the retry must not bump the token a second time"
    assert proxy.calls["update_item"] >= 2
    row = await raw_item(client, store, "a")
    assert row is not None and row["ProcessID"] == {"S": "worker-a"}


async def test_a_renewal_whose_response_was_lost_is_still_a_renewal(
    faulty: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = faulty
    await store.add_item("a")
    lease = await store.lease("a", A)
    proxy.inject("update_item", faults.drop_response)
    renewed = await store.renew(lease)
    assert renewed.fencing_token == lease.fencing_token


async def test_a_release_whose_response_was_lost_reports_true(
    client: Any, faulty: tuple[LockStore, FaultyClient]
) -> None:
    store, proxy = faulty
    await store.add_item("a")
    lease = await store.lease("a", A)
    proxy.inject("update_item", faults.drop_response)
    assert await store.release(lease) is True
    row = await raw_item(client, store, "a")
    assert row is not None and "ProcessID" not in row


async def test_a_lost_release_answer_is_still_true_when_the_item_was_taken_meanwhile(
    client: Any, faulty: tuple[LockStore, FaultyClient]
) -> None:
    store, proxy = faulty
    await store.add_item("a")
    lease = await store.lease("a", LeaseRequest("worker-a", 30))
    other = LockStore(client, store.table_name, **_layout_of(store))

    def land_then_taken(call: Any) -> Any:
        async def run() -> Any:
            await call()  # the release lands...
            await other.lease("a", B)  # ...another worker takes the free item...
            raise faults.ReadTimeoutError(endpoint_url="injected")  # ...and the answer is lost

        return run()

    proxy.inject("update_item", land_then_taken)
    assert await store.release(lease) is True


async def test_a_lost_release_answer_is_false_when_the_lease_had_expired_and_was_taken(
    client: Any, faulty: tuple[LockStore, FaultyClient]
) -> None:
    store, proxy = faulty
    await store.add_item("a")
    lease = await store.lease("a", A, datetime.now(UTC) - timedelta(seconds=1))
    taken = await LockStore(client, store.table_name, **_layout_of(store)).lease("a", B)
    proxy.inject("update_item", faults.server_error)  # the first attempt's fate is unknown
    assert await store.release(lease) is False
    row = await raw_item(client, store, "a")
    assert row is not None and row["ProcessID"] == {"S": "worker-b"}
    assert int(row["LeaseToken"]["N"]) == taken.fencing_token


def _layout_of(store: LockStore) -> dict[str, Any]:
    return {"index_name": store.index_name, "buckets": store.buckets}


async def test_an_acquisition_cancelled_after_it_landed_is_undone(
    client: Any, faulty: tuple[LockStore, FaultyClient]
) -> None:
    store, proxy = faulty
    await store.add_item("a")
    landed = asyncio.Event()
    proxy.inject("update_item", faults.land_then_hang(landed))
    task = asyncio.create_task(store.acquire("a", A))
    await landed.wait()
    row = await raw_item(client, store, "a")
    assert row is not None and row["ProcessID"] == {"S": "worker-a"}, "the write did land"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.aclose()  # waits for the background undo
    row = await raw_item(client, store, "a")
    assert row is not None and "ProcessID" not in row, "a cancelled acquisition left the row held"
    assert (await store.lease("a", B)).lessee_id == "worker-b"


# -- connect ----------------------------------------------------------------------------------


async def test_connect_opens_a_lease_friendly_client_and_closes_it(dynamodb_endpoint: str) -> None:
    events: list[str] = []
    session = fake_session()
    real_client = session.client

    class Tracked:
        def __init__(self, cm: Any) -> None:
            self.cm = cm

        async def __aenter__(self) -> Any:
            events.append("open")
            return await self.cm.__aenter__()

        async def __aexit__(self, *exc: Any) -> Any:
            events.append("close")
            return await self.cm.__aexit__(*exc)

    session.client = lambda *a, **k: Tracked(real_client(*a, **k))
    async with LockStore.connect(
        "connect-test", endpoint_url=dynamodb_endpoint, session=session
    ) as store:
        await store.create_table()
        config = store.client.meta.config
        assert config.retries is not None and config.retries["total_max_attempts"] == 1
        assert config.connect_timeout <= 5 and config.read_timeout <= 10
        assert await store.add_item("a") is True
        assert events == ["open"]
    assert events == ["open", "close"]


async def test_the_store_never_closes_a_client_it_was_given(client: Any, store: LockStore) -> None:
    await store.add_item("a")
    await store.aclose()
    assert (await client.describe_table(TableName=store.table_name))["Table"]


def _raise(exc: BaseException) -> Any:
    async def run() -> Any:
        raise exc

    return run()


async def test_time_spent_queueing_for_a_request_slot_is_not_charged_to_the_lease(
    client: Any, table_name: str
) -> None:
    proxy = FaultyClient(client)
    store = LockStore(proxy, table_name, max_in_flight=1)
    await store.create_table()
    await store.add_item("a")
    await store.add_item("b")
    proxy.inject("update_item", faults.delay(1.0))  # the first write holds the only slot 1 s
    loop = asyncio.get_running_loop()
    started = loop.time()
    first, second = await asyncio.gather(store.acquire("a", A), store.acquire("b", A))
    assert first._sent_at - started < 0.2
    assert second._sent_at - started >= 1.0, "the queued write was stamped before it was sent"
    assert second.until_ns - first.until_ns >= 0.9e9, "its LeaseUntil too"


async def test_an_explicit_until_sooner_than_the_duration_bounds_the_local_deadline(
    store: LockStore,
) -> None:
    await store.add_item("a")
    loop = asyncio.get_running_loop()
    before = loop.time()
    soon = datetime.now(UTC) + timedelta(seconds=1)
    lease = await store.lease("a", LeaseRequest("w", 30), soon)
    # The holder's deadline is sent_at + duration: it must not outlast the stored expiry.
    assert lease._sent_at + 30 <= before + 1.1, "the local deadline outlasts an explicit until"
    renewed = await store.renew(lease, datetime.now(UTC) + timedelta(seconds=2))
    assert renewed._sent_at + 30 <= loop.time() + 2.1
