"""Bad input and abuse: wrong types, hostile IDs and names, hand-written rows, other lessees.

Complements tests/test_store.py (which covers bad IDs on add_item/lease/acquire, bad
requests, and bookkeeping names with the default configuration): every case here must
raise a clear ValueError/TypeError/LeaseError and leave the table as it was.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError

from aiolease import (
    Lease,
    LeaseError,
    LeaseLostError,
    LeaseNotObtainedError,
    LeaseRequest,
    LeaseStoreError,
    Locker,
    LockStore,
)

from . import faults
from .faults import FaultyClient

A = LeaseRequest("worker-a", 2)
B = LeaseRequest("worker-b", 2)
HUGE = "x" * 2049  # one byte over DynamoDB's key limit


async def raw_item(client: Any, store: LockStore, lease_id: str) -> dict[str, Any] | None:
    response = await client.get_item(
        TableName=store.table_name, Key={store.hash_key: {"S": lease_id}}, ConsistentRead=True
    )
    return response.get("Item")


async def snapshot(client: Any, store: LockStore) -> list[dict[str, Any]]:
    """Every row of the table, in key order: to prove that nothing changed."""
    response = await client.scan(TableName=store.table_name, ConsistentRead=True)
    return sorted(response["Items"], key=lambda row: row[store.hash_key]["S"])


def forged(lease_id: str, request: LeaseRequest = A, token: int = 1) -> Lease:
    """A Lease built by hand, as a confused or malicious caller could."""
    return Lease(lease_id, request, datetime.now(UTC) + timedelta(seconds=30), token)


# -- wrong types and values at every public entry point ----------------------------------------


async def _noop(lease: Lease) -> None:
    return None


LOCKER_CALLS: list[tuple[str, Any, type[Exception], str]] = [
    ("obtain_lease", lambda lk: lk.obtain_lease("worker-a"), TypeError, "request"),
    ("obtain_lease", lambda lk: lk.obtain_lease(None), TypeError, "request"),
    ("wait", lambda lk: lk.wait_until_lease_obtained("worker-a", 1), TypeError, "request"),
    ("wait", lambda lk: lk.wait_until_lease_obtained(A, 0), ValueError, "wait_period"),
    ("wait", lambda lk: lk.wait_until_lease_obtained(A, "1"), TypeError, "wait_period"),
    ("heartbeat", lambda lk: lk.heartbeat("a", 1), TypeError, "lease"),
    ("heartbeat", lambda lk: lk.heartbeat(forged("a"), 5), ValueError, "heartbeat_period"),
    ("heartbeat", lambda lk: lk.heartbeat(forged("a"), -1), ValueError, "heartbeat_period"),
    ("run", lambda lk: lk.run(A, "not callable"), TypeError, "work"),
    ("run", lambda lk: lk.run("worker-a", _noop), TypeError, "request"),
    ("run", lambda lk: lk.run(A, _noop, 42), TypeError, "lease_id"),
    ("run", lambda lk: lk.run(A, _noop, timeout=-1), ValueError, "timeout"),
]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [pytest.param(c, e, m, id=f"{name}-{i}") for i, (name, c, e, m) in enumerate(LOCKER_CALLS)],
)
async def test_locker_entry_points_refuse_bad_arguments_before_any_request(
    faulty: tuple[LockStore, FaultyClient], call: Any, error: type[Exception], match: str
) -> None:
    store, proxy = faulty
    await store.add_item("a")
    locker = Locker(store)
    proxy.calls.clear()
    with pytest.raises(error, match=match):
        await call(locker)
    assert not proxy.calls, f"sent {dict(proxy.calls)} for a bad argument"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"request": "worker-a"}, TypeError, "request"),
        ({"lease_id": 7}, TypeError, "lease_id"),
        ({"wait_period": 0}, ValueError, "wait_period"),
        ({"timeout": float("nan")}, ValueError, "timeout"),
        ({"heartbeat_period": "1"}, TypeError, "heartbeat_period"),
        ({"heartbeat_period": 2}, ValueError, "heartbeat_period"),
    ],
)
def test_lease_scope_refuses_bad_arguments_at_once(
    store: LockStore, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    args: dict[str, Any] = {"request": A, **kwargs}
    with pytest.raises(error, match=match):
        Locker(store).lease(**args)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"store": "a store"}, TypeError, "store"),
        ({"max_clock_skew": "1"}, TypeError, "max_clock_skew"),
        ({"max_clock_skew": True}, TypeError, "max_clock_skew"),
        ({"max_clock_skew": -1}, ValueError, "max_clock_skew"),
        ({"max_clock_skew": float("inf")}, ValueError, "max_clock_skew"),
        ({"takeover": "steal"}, ValueError, "takeover"),
        ({"safety_margin": 0}, ValueError, "safety_margin"),
    ],
)
def test_locker_refuses_bad_configuration(
    store: LockStore, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    args: dict[str, Any] = {"store": store, **kwargs}
    with pytest.raises(error, match=match):
        Locker(**args)


@pytest.mark.parametrize(
    ("lease_id", "error"), [("", ValueError), (HUGE, ValueError), (b"a", TypeError)]
)
async def test_renew_release_and_force_release_refuse_bad_ids_before_any_request(
    faulty: tuple[LockStore, FaultyClient], lease_id: Any, error: type[Exception]
) -> None:
    store, proxy = faulty
    proxy.calls.clear()
    with pytest.raises(error, match="lease_id"):
        await store.renew(forged(lease_id))
    with pytest.raises(error, match="lease_id"):
        await store.release(forged(lease_id))
    with pytest.raises(error, match="lease_id"):
        await store.force_release(lease_id)
    with pytest.raises(error, match="lease_id"):
        await Locker(store).run(A, _noop, lease_id)
    assert not proxy.calls, f"sent {dict(proxy.calls)} for a bad lease_id"


async def test_a_huge_id_through_the_scope_is_refused_and_nothing_is_written(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a")
    before = await snapshot(client, store)
    with pytest.raises(ValueError, match="2048"):
        async with Locker(store).lease(A, HUGE, timeout=1):
            pytest.fail("entered a scope on an impossible ID")
    assert await snapshot(client, store) == before


async def test_a_non_callable_clock_is_refused_at_construction(client: Any) -> None:
    with pytest.raises(TypeError, match="clock"):
        LockStore(client, "leases", clock=12345)  # type: ignore[arg-type]


# -- attribute names ------------------------------------------------------------------------------


async def test_configured_bookkeeping_names_are_refused_and_the_defaults_become_user_names(
    client: Any, table_name: str
) -> None:
    store = LockStore(
        client,
        table_name,
        "Key",
        lessee_attribute="Owner",
        until_attribute="Expiry",
        token_attribute="Epoch",
    )
    await store.create_table()
    for name in ("Key", "Owner", "Expiry", "Epoch"):
        with pytest.raises(ValueError, match=name):
            await store.add_item("x", {name: "boom"})
    assert await raw_item(client, store, "x") is None
    # The default names mean nothing to this store: they are the user's, kept intact.
    user = {"ProcessID": "mine", "LeaseUntil": 5, "LeaseToken": "t"}
    await store.add_item("x", user)
    lease = await store.lease("x", A)
    assert lease.attributes == {"ProcessID": "mine", "LeaseUntil": 5, "LeaseToken": "t"}
    assert await store.release(lease)
    row = await raw_item(client, store, "x")
    assert row is not None and row["ProcessID"] == {"S": "mine"}


async def test_attribute_names_that_look_like_expression_syntax_are_plain_names(
    client: Any, store: LockStore
) -> None:
    odd = {"#k": 1, ":u": 2, "a.b": 3, "SET x = y": 4, "size": 5, "é": 6}
    await store.add_item("x", odd)
    lease = await store.lease("x", A)
    assert lease.attributes == odd
    row = await raw_item(client, store, "x")
    assert row is not None and row["ProcessID"] == {"S": "worker-a"}


async def test_non_string_attribute_names_are_refused(client: Any, store: LockStore) -> None:
    with pytest.raises(ValueError, match="names"):
        await store.add_item("x", {1: "one"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="names"):
        await store.add_item("x", {"": "empty"})
    assert await raw_item(client, store, "x") is None


# -- rows written by hand ----------------------------------------------------------------------


MALFORMED_ROWS: dict[str, dict[str, Any]] = {
    "token-is-a-string": {"LeaseUntil": {"N": "0"}, "LeaseToken": {"S": "seven"}},
    "token-is-fractional": {"LeaseUntil": {"N": "0"}, "LeaseToken": {"N": "1.5"}},
    "held-without-until": {"ProcessID": {"S": "go"}, "LeaseToken": {"N": "4"}},
    "held-until-a-string": {"ProcessID": {"S": "go"}, "LeaseUntil": {"S": "soon"}},
    "held-until-a-bool": {"ProcessID": {"S": "go"}, "LeaseUntil": {"BOOL": True}},
    "held-lessee-a-number": {"ProcessID": {"N": "9"}, "LeaseUntil": {"N": str(2**62)}},
}


async def _write_rows(client: Any, store: LockStore, lease_id: str | None = None) -> list[str]:
    """Write the malformed rows the server accepts; their IDs. Skips the test if the row
    ``lease_id`` is one it refuses (a wrongly typed index key: DynamoDB refuses those in
    the indexed layout, and moto does not)."""
    written = []
    for key, row in MALFORMED_ROWS.items():
        try:
            await client.put_item(
                TableName=store.table_name, Item={"LeaseID": {"S": key}, "v": {"S": "x"}, **row}
            )
        except ClientError as exc:
            if not faults.refused_index_key(exc):
                raise
            continue
        written.append(key)
    if lease_id is not None and lease_id not in written:
        pytest.skip(f"the server refuses the row {lease_id!r} in this layout, as DynamoDB does")
    return written


def assert_unchanged(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> None:
    """The rows are as written, but for the fractional token's row (see below)."""
    for old, new in zip(before, after, strict=True):
        if old["LeaseID"]["S"] == "token-is-fractional":
            # Only detectable once an acquisition landed: it is undone at once, and only
            # the token, which may only grow, keeps the increment.
            assert "ProcessID" not in new, "an acquisition of a malformed row was not undone"
            old, new = dict(old), dict(new)
            assert Decimal(new.pop("LeaseToken")["N"]) >= Decimal(old.pop("LeaseToken")["N"])
        assert new == old


@pytest.mark.parametrize("lease_id", sorted(MALFORMED_ROWS))
@pytest.mark.parametrize("operation", ["lease", "acquire"])
async def test_acquiring_a_malformed_row_fails_clearly_and_changes_nothing(
    client: Any, store: LockStore, lease_id: str, operation: str
) -> None:
    await _write_rows(client, store, lease_id)
    before = await snapshot(client, store)
    with pytest.raises((LeaseNotObtainedError, LeaseStoreError)) as info:
        await getattr(store, operation)(lease_id, A)
    assert lease_id in str(info.value) or store.table_name in str(info.value)
    assert_unchanged(before, await snapshot(client, store))


@pytest.mark.parametrize("lease_id", sorted(MALFORMED_ROWS))
async def test_renewing_or_releasing_a_malformed_row_fails_clearly_and_changes_nothing(
    client: Any, store: LockStore, lease_id: str
) -> None:
    await _write_rows(client, store, lease_id)
    before = await snapshot(client, store)
    # Callers that do not hold the row: another lessee, or the row's lessee with a wrong token
    for lease in (forged(lease_id, LeaseRequest("go", 2), 99), forged(lease_id, A, 1)):
        with pytest.raises(LeaseLostError, match=repr(lease_id)):
            await store.renew(lease)
        assert await store.release(lease) is False
    assert await snapshot(client, store) == before


async def test_obtain_lease_and_list_over_only_malformed_rows(
    client: Any, store: LockStore
) -> None:
    written = await _write_rows(client, store)
    before = await snapshot(client, store)
    assert sorted(await store.list_lease_ids()) == sorted(written)
    for _ in range(5):  # the candidates are tried in random order
        with pytest.raises(LeaseError) as info:
            await Locker(store).obtain_lease(A)
        assert isinstance(info.value, LeaseNotObtainedError | LeaseStoreError)
    assert_unchanged(before, await snapshot(client, store))


# -- one lessee never renews or releases another's lease -------------------------------------------


async def test_another_lessee_can_neither_renew_nor_release_a_held_lease(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a", {"payload": "p"})
    held = await store.lease("a", A)
    before = await raw_item(client, store, "a")
    impostors = [
        forged("a", B, held.fencing_token),  # another lessee, the right token
        forged("a", B, held.fencing_token + 1),  # another lessee, a future token
        forged("a", A, held.fencing_token + 1),  # the same lessee, another tenure
        forged("a", A, held.fencing_token - 1),  # the same lessee, an older tenure
    ]
    for lease in impostors:
        with pytest.raises(LeaseLostError, match="worker-a"):
            await store.renew(lease)
        assert await store.release(lease) is False, f"{lease} released another's lease"
    with pytest.raises(LeaseNotObtainedError, match="worker-a"):
        await store.lease("a", B)
    with pytest.raises(LeaseNotObtainedError, match="worker-a"):
        await store.acquire("a", B, max_clock_skew=0)
    with pytest.raises(LeaseNotObtainedError):
        await Locker(store).obtain_lease(B)
    assert await raw_item(client, store, "a") == before
    assert (await store.renew(held)).fencing_token == held.fencing_token, "the holder still can"


# -- logs ----------------------------------------------------------------------------------------

SECRET = "wJalrXUtnFEMI-chaos-test-SECRET-do-not-log"


async def test_logs_carry_no_credentials_and_no_request_bodies(
    dynamodb_endpoint: str, table_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    import aioboto3

    session = aioboto3.Session(
        aws_access_key_id="AKIACHAOSTESTKEY", aws_secret_access_key=SECRET, region_name="us-east-1"
    )
    caplog.set_level(logging.DEBUG, logger="aiolease")
    async with session.client("dynamodb", endpoint_url=dynamodb_endpoint) as client:
        proxy = FaultyClient(client)
        store = LockStore(proxy, table_name)
        await store.create_table()
        await store.add_item("a", {"payload": "PAYLOAD-VALUE"})
        await store.add_item("b")
        for fault in (faults.throttle, faults.server_error, faults.drop_response):
            proxy.inject("update_item", fault)
            proxy.inject("scan", faults.throttle)
        with pytest.raises(LeaseLostError):  # noqa: PT012
            async with Locker(store).lease(A, "a", heartbeat_period=0.3):
                proxy.inject("update_item", faults.throttle, faults.drop_response)
                await asyncio.sleep(1)
                await client.update_item(  # taken over: the scope logs the loss
                    TableName=table_name,
                    Key={"LeaseID": {"S": "a"}},
                    UpdateExpression="SET ProcessID = :b, LeaseToken = LeaseToken + :one",
                    ExpressionAttributeValues={":b": {"S": "worker-b"}, ":one": {"N": "1"}},
                )
                await asyncio.sleep(30)
        proxy.inject("update_item", *[faults.server_error] * store.max_attempts)
        with pytest.raises(LeaseError):
            await store.lease("b", A)
        await client.put_item(
            TableName=table_name,
            Item={"LeaseID": {"S": "m"}, "LeaseUntil": {"N": "0"}, "LeaseToken": {"S": "x"}},
        )
        with pytest.raises(LeaseStoreError):
            await store.lease("m", A)
    formatter = logging.Formatter("%(message)s %(exc_info)s")
    text = "\n".join(formatter.format(r) for r in caplog.records if r.name.startswith("aiolease"))
    assert len(caplog.records) >= 5, "the run logged too little to prove anything"
    for forbidden in (
        SECRET,
        "AKIACHAOSTESTKEY",
        "PAYLOAD-VALUE",
        "ExpressionAttributeValues",
        "UpdateExpression",
        '{"S"',
        "Authorization",
    ):
        assert forbidden not in text, f"{forbidden!r} appeared in the logs:\n{text}"
