"""The wire format, without a server: each request's expressions, names and values, the
parsing of answers (malformed rows too), the error-code mapping and the call engine."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from aiolease import (
    Lease,
    LeaseItem,
    LeaseRequest,
    LeaseStoreError,
    LeaseUnavailableError,
    LockStore,
)
from aiolease._stamps import Stamps
from aiolease._types import MAX_NS, SESSION_HELD_FLOOR, SessionRow
from aiolease._wire import codes, handoff, pool, requests, rows, sessions
from aiolease._wire.calls import NO_DEADLINE_WAIT, Calls, Slots, deadline_first
from aiolease._wire.schema import Schema

S = Schema("leases")
SESSION_HELD = SESSION_HELD_FLOOR + 5_000_000_000  # an item held under a session: floor + stamp
EXPRESSIONS = (
    "UpdateExpression",
    "ConditionExpression",
    "KeyConditionExpression",
    "FilterExpression",
    "ProjectionExpression",
)


def placeholders(request: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The name and value placeholders the request's expressions use."""
    text = " ".join(request.get(e, "") for e in EXPRESSIONS)
    return set(re.findall(r"#\w+", text)), set(re.findall(r":\w+", text))


def assert_declared_exactly(request: dict[str, Any]) -> None:
    names, values = placeholders(request)
    declared_names = set(request.get("ExpressionAttributeNames", {}))
    declared_values = set(request.get("ExpressionAttributeValues", {}))
    assert names == declared_names, f"names used {names} != declared {declared_names}"
    assert values == declared_values, f"values used {values} != declared {declared_values}"


DURATION = requests.duration_value(2.0, 5_000_000_000, 3_000_000_000)
HELD = LeaseItem("a", "other", 1_000, 7, duration=2.0)
FREE = LeaseItem("a", None, 0, 7)
NEW = LeaseItem("a", None, 0, 0)


def every_request() -> dict[str, dict[str, Any]]:
    add, _ = requests.add_item(S, "a", {"LeaseBucket": {"N": "3"}}, {"colour": {"S": "red"}})
    out = {
        "request_handoff": handoff.request_handoff(S, "a", "w", 4, "sk", 9, 5),
        "withdraw_handoff": handoff.withdraw_handoff(S, "a", "sk"),
        "withdraw_handoff_as_read": handoff.withdraw_handoff(S, "a", "sk", 9),
        "scan_pool": pool.scan_pool(S),
        "add_item": add,
        "release": requests.release(S, "a", "w", 4),
        "release_go_row": requests.release(S, "a", "w", 0),
        "undo": requests.undo_acquire(S, "a", "w", 5, None),
        "undo_token": requests.undo_acquire(S, "a", "w", 5, 8),
        "renew": requests.renew(
            S, "a", "w", 4, until_ns=5, duration=DURATION, return_attributes=False
        ),
        "renew_go_row": requests.renew(
            S, "a", "w", 0, until_ns=5, duration=DURATION, return_attributes=True
        ),
        "backfill": requests.backfill_bucket(S, "a", 3),
        "backfill_scan": requests.backfill_scan(S),
        "get": requests.get_item(S, "a"),
        "get_projection": requests.get_item(S, "a", projection_only=True),
        "scan": requests.scan(S),
        "scan_projection": requests.scan(S, projection_only=True),
        "scan_available": requests.scan(S, cutoff_ns=9),
        "scan_session_held": requests.scan_session_held(S),
        "query": requests.query_available(S, "LeaseBuckets", 2, 9),
        "query_session_held": requests.query_session_held(S, "LeaseBuckets", 2),
        "undo_session": requests.undo_acquire(S, "a", "w", SESSION_HELD, 8, "sk"),
        "start_session": sessions.start_session(S, "sk", "w", until_ns=5, duration=DURATION),
        "renew_session": sessions.renew_session(S, "sk", "w", 1, until_ns=6, duration=DURATION),
        "end_session": sessions.end_session(S, "sk", "w", 1),
        "end_expired_session": sessions.end_expired_session(S, "sk", "w", 1, 5),
        "scan_sessions": sessions.scan_sessions(S),
    }
    for name, expect in {"none": None, "held": HELD, "free": FREE, "new": NEW}.items():
        for cutoff in (None, 9):
            out[f"acquire_{name}_{cutoff}"] = requests.acquire(
                S, "a", "w", until_ns=5, duration=DURATION, cutoff_ns=cutoff, expect=expect
            )
            out[f"acquire_session_{name}_{cutoff}"] = requests.acquire(
                S,
                "a",
                "w",
                until_ns=5,
                duration=DURATION,
                cutoff_ns=cutoff,
                expect=expect,
                session="sk",
            )
    return out


@pytest.mark.parametrize("name", list(every_request()))
def test_every_placeholder_used_is_declared_and_every_declared_one_is_used(name: str) -> None:
    assert_declared_exactly(every_request()[name])


@pytest.mark.parametrize("name", list(every_request()))
def test_every_name_travels_as_a_placeholder(name: str) -> None:
    request = every_request()[name]
    text = " ".join(request.get(e, "") for e in EXPRESSIONS)
    for attribute in (*S.attribute_names().values(), "colour"):
        assert attribute not in text, f"{attribute!r} inline in {name}: {text}"


def test_renew_pins_lessee_and_token_and_moves_only_forward() -> None:
    request = requests.renew(S, "a", "w", 4, until_ns=5, duration=DURATION, return_attributes=False)
    condition = request["ConditionExpression"]
    assert "#l = :l AND #t = :t" in condition
    assert "#u < :u" in condition and "attribute_type(#u, :n)" in condition
    assert request["UpdateExpression"] == "SET #u = :u, #d = :d", "a renewal changed the token"
    values = request["ExpressionAttributeValues"]
    assert values[":l"] == {"S": "w"} and values[":t"] == {"N": "4"} and values[":u"] == {"N": "5"}
    assert request["ReturnValues"] == "NONE"
    assert request["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"


def test_renewing_a_go_row_requires_it_to_have_no_token_or_a_zero() -> None:
    request = requests.renew(S, "a", "w", 0, until_ns=5, duration=DURATION, return_attributes=True)
    assert "#l = :l AND (attribute_not_exists(#t) OR #t = :zero)" in request["ConditionExpression"]
    assert request["ReturnValues"] == "ALL_NEW"


def test_acquire_raises_the_token_and_requires_the_row() -> None:
    request = requests.acquire(S, "a", "w", until_ns=5, duration=DURATION, cutoff_ns=9, expect=None)
    assert request["UpdateExpression"] == (
        "SET #l = :l, #u = :u, #t = if_not_exists(#t, :zero) + :one, #d = :d REMOVE #s, #h, #hu"
    ), "an acquisition outside a session drops any session key and handoff request"
    assert request["ConditionExpression"] == (
        "attribute_exists(#k) AND (attribute_not_exists(#t) OR attribute_type(#t, :n)) AND "
        "(attribute_not_exists(#l) OR (attribute_type(#u, :n) AND #u < :cutoff))"
    )
    assert request["ExpressionAttributeValues"][":cutoff"] == {"N": "9"}
    assert request["ReturnValues"] == "ALL_NEW"


def test_acquire_with_expect_pins_the_state_read() -> None:
    request = requests.acquire(
        S, "a", "w", until_ns=5, duration=DURATION, cutoff_ns=None, expect=HELD
    )
    assert request["ConditionExpression"] == (
        "attribute_exists(#k) AND #t = :ot AND "
        "(attribute_not_exists(#l) OR (#l = :ol AND #u = :ou))"
    )
    values = request["ExpressionAttributeValues"]
    assert values[":ol"] == {"S": "other"} and values[":ou"] == {"N": "1000"}
    assert values[":ot"] == {"N": "7"}


def test_acquire_of_a_free_row_read_ignores_the_clock_rule() -> None:
    request = requests.acquire(S, "a", "w", until_ns=5, duration=DURATION, cutoff_ns=9, expect=FREE)
    assert ":cutoff" not in request["ExpressionAttributeValues"]
    assert request["ConditionExpression"].endswith("AND #t = :ot AND (attribute_not_exists(#l))")
    never = requests.acquire(S, "a", "w", until_ns=5, duration=DURATION, cutoff_ns=9, expect=NEW)
    assert "(attribute_not_exists(#t) OR #t = :zero)" in never["ConditionExpression"]


def test_release_frees_the_tenure_and_keeps_the_token() -> None:
    request = requests.release(S, "a", "w", 4)
    assert request["UpdateExpression"] == "REMOVE #l, #d, #s SET #u = :zero"
    assert request["ConditionExpression"] == "#l = :l AND #t = :t"
    assert request["ExpressionAttributeValues"][":zero"] == {"N": "0"}


def test_undo_requires_exactly_our_write() -> None:
    assert requests.undo_acquire(S, "a", "w", 5, None)["ConditionExpression"] == (
        "#l = :l AND #u = :u"
    )
    assert requests.undo_acquire(S, "a", "w", 5, 8)["ConditionExpression"] == (
        "#l = :l AND #u = :u AND #t = :t"
    )


def test_add_item_writes_a_free_row_with_the_layouts_and_users_attributes() -> None:
    request, written = requests.add_item(S, "a", {"LeaseBucket": {"N": "3"}}, {"x": {"N": "1"}})
    assert request["ConditionExpression"] == "attribute_not_exists(#k)"
    assert request["UpdateExpression"] == "SET #u = :zero, #e0 = :e0, #a0 = :a0"
    assert written == {
        "LeaseID": {"S": "a"},
        "LeaseUntil": {"N": "0"},
        "LeaseBucket": {"N": "3"},
        "x": {"N": "1"},
    }


def test_custom_names_reach_every_request() -> None:
    custom = Schema("leases", "Id", lessee_attribute="Who", until_attribute="Until")
    request = requests.acquire(
        custom, "a", "w", until_ns=5, duration=DURATION, cutoff_ns=1, expect=None
    )
    assert request["Key"] == {"Id": {"S": "a"}}
    assert request["ExpressionAttributeNames"]["#l"] == "Who"
    assert request["ExpressionAttributeNames"]["#u"] == "Until"


def test_user_attributes_refuse_bookkeeping_names_and_serialise_floats() -> None:
    assert requests.user_attributes(S, {"f": 1.5}) == {"f": {"N": "1.5"}}
    with pytest.raises(ValueError, match="bookkeeping"):
        requests.user_attributes(S, {"LeaseToken": 1})
    with pytest.raises(TypeError, match="mapping"):
        requests.user_attributes(S, [("a", 1)])  # type: ignore[arg-type]


def test_duration_map_is_rounded_up_and_stretched_to_an_explicit_until() -> None:
    assert requests.duration_value(2.0, 10, 0) == {"M": {"ms": {"N": "2000"}, "until": {"N": "10"}}}
    stretched = requests.duration_value(2.0, 3_000_000_001, 0)
    assert stretched["M"]["ms"] == {"N": "3001"}


def test_bucket_of_is_the_documented_hash() -> None:
    assert [requests.bucket_of(f"item-{i}", 16) for i in range(3)] == [
        requests.bucket_of(f"item-{i}", 16) for i in range(3)
    ]
    assert all(0 <= requests.bucket_of(f"item-{i}", 4) < 4 for i in range(50))


# -- schema -------------------------------------------------------------------------------------


def test_schema_is_read_only_and_validated() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        S.until_attribute = "Other"  # type: ignore[misc]
    with pytest.raises(ValueError, match="must differ"):
        Schema("leases", lessee_attribute="LeaseUntil")
    with pytest.raises(TypeError, match="hash_key"):
        Schema("leases", 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="table_name"):
        Schema("x")


class _NoClient:
    update_item = None


def test_a_stores_names_cannot_be_reassigned() -> None:
    store = LockStore(_NoClient(), "leases")  # type: ignore[arg-type]
    for name in ("table_name", "hash_key", "until_attribute", "lessee_attribute", "index_name"):
        with pytest.raises(AttributeError):
            setattr(store, name, "Other")
    assert store.until_attribute == "LeaseUntil"


def test_lease_has_no_public_event_loop_field() -> None:
    public = [f.name for f in dataclasses.fields(Lease) if not f.name.startswith("_")]
    assert public == ["lease_id", "request", "until", "fencing_token", "attributes", "until_ns"]
    a = rows.lease(S, "a", LeaseRequest("w", 2), {"LeaseUntil": {"N": "5"}}, sent_at=1.0)
    assert a == dataclasses.replace(a, _sent_at=2.0), "the send time takes part in equality"
    assert "sent" not in repr(a)


# -- parsing ------------------------------------------------------------------------------------


def test_a_row_parses_into_an_item() -> None:
    raw = {
        "LeaseID": {"S": "a"},
        "ProcessID": {"S": "w"},
        "LeaseUntil": {"N": "5"},
        "LeaseToken": {"N": "3"},
        "LeaseDuration": {"M": {"ms": {"N": "2500"}, "until": {"N": "5"}}},
        "LeaseBucket": {"N": "1"},
        "colour": {"S": "red"},
    }
    assert rows.item(S, raw) == LeaseItem("a", "w", 5, 3, {"colour": "red"}, 2.5)


@pytest.mark.parametrize(
    ("raw", "until_ns", "token", "duration"),
    [
        ({"LeaseUntil": {"S": "soon"}}, 0, 0, None),
        ({"LeaseUntil": {"N": "1.5"}, "LeaseToken": {"N": "2.5"}}, 0, 0, None),
        ({"LeaseUntil": {"N": "5"}, "LeaseDuration": {"M": {"ms": {"N": "9"}}}}, 5, 0, None),
        (  # stale: written with another LeaseUntil (a Go worker took the row since)
            {
                "LeaseUntil": {"N": "6"},
                "LeaseDuration": {"M": {"ms": {"N": "9"}, "until": {"N": "5"}}},
            },
            6,
            0,
            None,
        ),
        (  # absurd: longer than the longest lease
            {
                "LeaseUntil": {"N": "6"},
                "LeaseDuration": {"M": {"ms": {"N": "1e12"}, "until": {"N": "6"}}},
            },
            6,
            0,
            None,
        ),
    ],
)
def test_malformed_bookkeeping_reads_leniently_in_items(
    raw: dict[str, Any], until_ns: int, token: int, duration: float | None
) -> None:
    item = rows.item(S, {"LeaseID": {"S": "a"}, **raw})
    assert item is not None
    assert (item.until_ns, item.fencing_token, item.duration) == (until_ns, token, duration)


def test_a_row_without_the_hash_key_is_no_item() -> None:
    assert rows.item(S, {"Id": {"S": "a"}}) is None


def test_a_lease_from_a_malformed_row_is_a_store_error_naming_it() -> None:
    with pytest.raises(LeaseStoreError, match=r"'LeaseToken'.*not an integer"):
        rows.lease(
            S, "a", LeaseRequest("w", 2), {"LeaseID": {"S": "a"}, "LeaseToken": {"N": "1.5"}}, 0.0
        )


def test_a_fractional_token_is_not_leasable_and_is_described() -> None:
    row = {"LeaseID": {"S": "a"}, "LeaseToken": {"N": "1.5"}}
    assert not rows.leasable(S, row)
    assert rows.describe(S, row, 0).startswith("malformed")
    error = rows.malformed_error(S, "a", row)
    assert error.item_exists is False and isinstance(error, LeaseStoreError)


def test_refusals_are_described_for_messages() -> None:
    assert rows.describe(S, None, 0) == "gone (no such item)"
    assert rows.describe(S, {"LeaseToken": {"N": "4"}}, 0) == "free (token 4)"
    held = {"ProcessID": {"S": "w"}, "LeaseUntil": {"N": "3000000000"}, "LeaseToken": {"N": "4"}}
    assert rows.describe(S, held, 1_000_000_000) == "held by 'w' (token 4, expires in 2.0 s)"


def test_tenure_and_own_write_recognition() -> None:
    lease = rows.lease(
        S, "a", LeaseRequest("w", 2), {"LeaseUntil": {"N": "5"}, "LeaseToken": {"N": "4"}}, 0.0
    )
    row = {"ProcessID": {"S": "w"}, "LeaseUntil": {"N": "5"}, "LeaseToken": {"N": "4"}}
    assert rows.holds(S, row, lease)
    assert not rows.holds(S, {**row, "LeaseToken": {"N": "5"}}, lease), "a newer tenure held"
    assert rows.is_ours(S, row, "w", 5, 4) and not rows.is_ours(S, row, "w", 6, 4)
    assert rows.stored_until(S, {"LeaseUntil": {"N": "1.5"}}) is None


def test_a_table_keyed_otherwise_is_a_store_error_naming_both_keys() -> None:
    described = {"Table": {"KeySchema": [{"AttributeName": "Id", "KeyType": "HASH"}]}}
    with pytest.raises(LeaseStoreError, match=r"keyed by 'Id'.*'LeaseID'"):
        rows.check_table(S, described)
    with pytest.raises(LeaseStoreError, match="without a table description"):
        rows.check_table(S, {})


# -- error codes --------------------------------------------------------------------------------


def client_error(code: str, status: int = 400, retries: int = 0) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"injected {code}"},
            "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": retries},
            "Item": {"LeaseID": {"S": "a"}},
        },
        "UpdateItem",
    )


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (client_error("ThrottlingException"), True),
        (client_error("SomethingNew", 503), True),
        (client_error("ConditionalCheckFailedException"), False),
        (client_error("AccessDeniedException"), False),
        (ReadTimeoutError(endpoint_url="x"), True),
        (ConnectionResetError(), True),
        (ValueError("bad"), False),
    ],
)
def test_transient_errors_are_told_apart(exc: BaseException, transient: bool) -> None:
    assert codes.is_transient(exc) is transient


def test_store_errors_name_the_table_and_the_cause() -> None:
    missing = codes.store_error(S, client_error("ResourceNotFoundException"), "a")
    assert "does not exist" in str(missing) and "'leases'" in str(missing) and "'a'" in str(missing)
    denied = codes.store_error(S, client_error("AccessDeniedException"), None)
    assert str(denied).startswith("access to table 'leases' (hash key 'LeaseID') denied")


def test_short_is_one_bounded_line() -> None:
    text = codes.short(RuntimeError("x\n" * 500))
    assert "\n" not in text and len(text) == 200 and text.endswith("...")


def test_an_expected_code_carries_the_old_row_and_the_retry_trace() -> None:
    expected = codes.Expected.of("ConditionalCheckFailedException", client_error("C", retries=1))
    assert expected.item == {"LeaseID": {"S": "a"}} and expected.retried


def test_a_missing_index_is_recognised() -> None:
    exc = ClientError(
        {
            "Error": {
                "Code": "ValidationException",
                "Message": "The table does not have the specified index",
            }
        },
        "Query",
    )
    assert codes.is_missing_index(exc)
    assert not codes.is_missing_index(client_error("ValidationException"))


def test_the_clients_own_retries_are_counted() -> None:
    class Config:
        retries: ClassVar[dict[str, Any]] = {"mode": "legacy", "max_attempts": 4}

    class Meta:
        config = Config()

    class Client:
        meta = Meta()

    assert codes.client_attempts(Client()) == 5
    assert codes.client_attempts(object()) == 1


# -- the call engine ----------------------------------------------------------------------------


class ScriptedClient:
    """Answers update_item from a script: an exception to raise, or a response to return."""

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.sent: list[dict[str, Any]] = []

    async def update_item(self, **request: Any) -> Any:
        self.sent.append(request)
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step


def engine(client: ScriptedClient, attempts: int = 3) -> Calls:
    return Calls(client, S, max_attempts=attempts, max_in_flight=1)


async def test_a_request_is_built_once_at_first_send_and_resent_as_built() -> None:
    client = ScriptedClient(client_error("ThrottlingException"), {"ok": True})
    built: list[int] = []

    def build() -> dict[str, Any]:
        built.append(1)
        return {"Key": len(built)}

    retries: list[int] = []
    assert await engine(client).call("update_item", build, on_retry=lambda: retries.append(1)) == {
        "ok": True
    }
    assert built == [1] and client.sent == [{"Key": 1}, {"Key": 1}] and retries == [1]


async def test_exhausted_retries_are_unavailable_and_other_errors_store_errors() -> None:
    client = ScriptedClient(*[client_error("InternalServerError", 500)] * 2)
    with pytest.raises(LeaseUnavailableError, match="after 2 attempt"):
        await engine(client, attempts=2).call("update_item", {})
    with pytest.raises(LeaseStoreError, match="does not exist"):
        await engine(ScriptedClient(client_error("ResourceNotFoundException"))).call(
            "update_item", {}
        )


async def test_an_expected_code_is_raised_at_once_with_its_row() -> None:
    client = ScriptedClient(client_error("ConditionalCheckFailedException"))
    with pytest.raises(codes.Expected) as refused:
        await engine(client).call("update_item", {}, expect={"ConditionalCheckFailedException"})
    assert refused.value.item == {"LeaseID": {"S": "a"}} and len(client.sent) == 1


async def test_a_request_waiting_for_a_slot_is_not_built_yet() -> None:
    gate = asyncio.Event()

    class Slow(ScriptedClient):
        async def update_item(self, **request: Any) -> Any:
            await gate.wait()
            return {}

    calls = engine(Slow())
    first = asyncio.create_task(calls.call("update_item", {}))
    built: list[int] = []
    second = asyncio.create_task(calls.call("update_item", lambda: built.append(1) or {}))  # type: ignore[func-returns-value]
    await asyncio.sleep(0.01)
    assert built == [], "stamped while queueing behind another request"
    gate.set()
    await asyncio.gather(first, second)
    assert built == [1]


# -- send stamps --------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, wall: int = 10**18, mono: float = 100.0) -> None:
        self.wall, self.mono = wall, mono

    def wall_ns(self) -> int:
        return self.wall

    def monotonic(self) -> float:
        return self.mono


def test_stamps_are_unique_per_row_and_never_stretch_other_rows() -> None:
    clock = FakeClock()
    stamps = Stamps(clock)
    sent, first = stamps.take("a", 2.0, None)
    assert sent == 100.0 and first == clock.wall + 2 * 10**9
    _, again = stamps.take("a", 2.0, None)
    assert again == first + 1, "a second write in the same instant repeated the expiry"
    _, other = stamps.take("b", 2.0, None)
    assert other == first, "another row's floor stretched this one"
    stamps.forget("a", again)
    stamps.forget("a", first)
    assert stamps.take("a", 2.0, None)[1] == first, "a forgotten value still lifted the next"


def test_issued_values_are_kept_until_they_expire() -> None:
    clock = FakeClock()
    stamps = Stamps(clock)
    _, first = stamps.take("a", 2.0, None)
    assert stamps.issue("a", first) == first + 1, "an issued value was reused"
    clock.wall = first + 2  # both expired
    assert stamps.issue("a", first + 1) == first + 1, "an expired value still lifted the next"


def test_an_explicit_sooner_until_moves_the_send_time_back() -> None:
    stamps = Stamps(FakeClock())
    sent, until = stamps.take("a", 10.0, 10**18 + 4 * 10**9)
    assert until == 10**18 + 4 * 10**9 and sent == pytest.approx(100.0 - 6.0)


def test_a_store_accepts_a_clock_object_or_a_wall_clock_function() -> None:
    clock = FakeClock()
    assert LockStore(_NoClient(), "leases", clock=clock).clock is clock  # type: ignore[arg-type]
    wall: Callable[[], int] = lambda: 42  # noqa: E731
    assert LockStore(_NoClient(), "leases", clock=wall).clock.wall_ns() == 42  # type: ignore[arg-type]


# -- sessions ---------------------------------------------------------------------------


def test_session_names_are_bookkeeping_with_their_placeholders() -> None:
    assert {"LeaseSession", "LeaseSessionUntil"} <= S.bookkeeping
    assert S.names("#s", "#su") == {"#s": "LeaseSession", "#su": "LeaseSessionUntil"}
    custom = Schema("leases", session_attribute="Sess", session_until_attribute="SessUntil")
    assert custom.names("#s", "#su") == {"#s": "Sess", "#su": "SessUntil"}
    with pytest.raises(ValueError, match="must differ"):
        Schema("leases", session_attribute="LeaseToken")
    with pytest.raises(ValueError, match="bookkeeping"):
        requests.user_attributes(S, {"LeaseSession": "x"})


def test_start_session_creates_a_live_row_that_go_sees_held_forever() -> None:
    request = sessions.start_session(S, "sk", "w", until_ns=5, duration=DURATION)
    assert request["ConditionExpression"] == "attribute_not_exists(#k)"
    assert request["UpdateExpression"] == "SET #l = :l, #u = :max, #t = :one, #su = :u, #d = :d"
    values = request["ExpressionAttributeValues"]
    assert values[":max"] == {"N": str(2**63 - 1)} and values[":u"] == {"N": "5"}
    assert values[":one"] == {"N": "1"} and values[":l"] == {"S": "w"}
    assert request["Key"] == {"LeaseID": {"S": "sk"}}


def test_renew_session_pins_the_tenure_and_moves_only_forward() -> None:
    request = sessions.renew_session(S, "sk", "w", 1, until_ns=6, duration=DURATION)
    assert request["ConditionExpression"] == (
        "#l = :l AND #t = :t AND attribute_type(#su, :n) AND #su < :u"
    )
    assert request["UpdateExpression"] == "SET #su = :u, #d = :d", "a renewal touched LeaseUntil"
    assert request["ExpressionAttributeValues"][":t"] == {"N": "1"}
    assert request["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"


def test_ending_a_session_writes_a_tombstone_holder_by_tenure_taker_pinned() -> None:
    holder = sessions.end_session(S, "sk", "w", 1)
    taker = sessions.end_expired_session(S, "sk", "w", 1, 5)
    tombstone = "SET #t = #t + :one, #su = :zero REMOVE #d"
    assert holder["UpdateExpression"] == taker["UpdateExpression"] == tombstone
    assert holder["ConditionExpression"] == "#l = :l AND #t = :t"
    assert taker["ConditionExpression"] == "#l = :ol AND #t = :ot AND #su = :ou"
    assert taker["ExpressionAttributeValues"][":ou"] == {"N": "5"}


def test_acquiring_under_a_session_writes_its_held_value_and_the_key_no_duration() -> None:
    request = requests.acquire(
        S,
        "a",
        "w",
        until_ns=SESSION_HELD,
        duration=DURATION,
        cutoff_ns=9,
        expect=None,
        session="sk",
    )
    assert request["UpdateExpression"] == (
        "SET #l = :l, #u = :u, #t = if_not_exists(#t, :zero) + :one, #s = :session "
        "REMOVE #d, #h, #hu"
    ), "an acquisition under a session drops any handoff request"
    values = request["ExpressionAttributeValues"]
    assert values[":u"] == {"N": str(SESSION_HELD)} and values[":session"] == {"S": "sk"}
    assert ":d" not in values
    # Taking an item of a dead session: pinned to the item as read, never by the clock.
    held = LeaseItem("a", "other", SESSION_HELD, 7, session="old")
    take = requests.acquire(
        S, "a", "w", until_ns=5, duration=DURATION, cutoff_ns=None, expect=held, session="sk"
    )
    assert take["ConditionExpression"] == (
        "attribute_exists(#k) AND #t = :ot AND "
        "(attribute_not_exists(#l) OR (#l = :ol AND #u = :ou))"
    )
    assert take["ExpressionAttributeValues"][":ou"] == {"N": str(SESSION_HELD)}


def test_undo_under_a_session_is_pinned_to_its_own_value_and_the_session_key() -> None:
    request = requests.undo_acquire(S, "a", "w", SESSION_HELD, 8, "sk")
    assert request["ConditionExpression"] == "#l = :l AND #u = :u AND #t = :t AND #s = :s"
    assert request["ExpressionAttributeValues"][":u"] == {"N": str(SESSION_HELD)}
    assert request["UpdateExpression"] == "REMOVE #l, #d, #s SET #u = :zero"


def test_scans_never_offer_session_rows_but_offer_session_held_items() -> None:
    assert requests.scan(S)["FilterExpression"] == "attribute_not_exists(#su)"
    assert requests.scan(S, projection_only=True)["ProjectionExpression"] == (
        "#k, #l, #u, #t, #d, #s"
    )
    # Free and expired items first; session-held ones only in a pass of their own.
    assert requests.scan(S, cutoff_ns=9)["FilterExpression"] == (
        "attribute_not_exists(#su) AND (attribute_not_exists(#l) OR "
        "(attribute_type(#u, :n) AND #u < :cutoff))"
    )
    held = requests.scan_session_held(S)
    assert held["FilterExpression"] == "attribute_not_exists(#su) AND attribute_exists(#s)"
    assert held["ProjectionExpression"] == "#k, #l, #u, #t, #d, #s"
    assert requests.backfill_scan(S)["FilterExpression"] == "attribute_not_exists(#su)"
    assert sessions.scan_sessions(S)["FilterExpression"] == "attribute_exists(#su)"
    query = requests.query_session_held(S, "LeaseBuckets", 2)
    assert query["KeyConditionExpression"] == "#b = :b AND #u >= :floor"
    assert query["ExpressionAttributeValues"][":floor"] == {"N": str(2**62)}


def test_a_session_row_parses_and_is_told_from_items() -> None:
    live = {
        "LeaseID": {"S": "sk"},
        "ProcessID": {"S": "w"},
        "LeaseUntil": {"N": str(MAX_NS)},
        "LeaseToken": {"N": "1"},
        "LeaseSessionUntil": {"N": "5000000000"},
        "LeaseDuration": requests.duration_value(2.0, 5_000_000_000, 3_000_000_000),
    }
    parsed = rows.session_row(S, live)
    assert parsed == SessionRow("sk", "w", 5_000_000_000, 1, duration=2.0, ended=False)
    assert parsed is not None and parsed.until is not None and parsed.until.year == 1970
    ended = {**live, "LeaseToken": {"N": "2"}, "LeaseSessionUntil": {"N": "0"}}
    tombstone = rows.session_row(S, ended)
    assert tombstone is not None and tombstone.ended and tombstone.until is None
    assert rows.session_refusal(S, ended) == "session ended"
    assert rows.session_refusal(S, None) == "session row deleted"
    item = {"LeaseID": {"S": "a"}, "ProcessID": {"S": "w"}, "LeaseUntil": {"N": str(SESSION_HELD)}}
    assert rows.session_row(S, item) is None, "an item is no session row"
    held = rows.item(S, {**item, "LeaseSession": {"S": "sk"}})
    assert held is not None and held.session == "sk"
    assert rows.item(S, item).session is None  # type: ignore[union-attr]
    assert "under session 'sk'" in rows.describe(S, {**item, "LeaseSession": {"S": "sk"}}, 0)


def test_own_write_recognition_under_a_session_needs_the_key() -> None:
    row = {
        "ProcessID": {"S": "w"},
        "LeaseUntil": {"N": str(SESSION_HELD)},
        "LeaseToken": {"N": "3"},
        "LeaseSession": {"S": "sk"},
    }
    assert rows.is_ours(S, row, "w", SESSION_HELD, 3, "sk")
    assert not rows.is_ours(S, row, "w", SESSION_HELD + 1, None, "sk"), (
        "another acquisition's write"
    )
    assert not rows.is_ours(S, row, "w", SESSION_HELD, 3, "other")
    assert not rows.is_ours(S, row, "w", SESSION_HELD, 3), "a session's write is not a plain one"


def test_a_lease_under_a_session_hides_its_session_key() -> None:
    lease = Lease("a", LeaseRequest("w", 2), rows.ns_to_datetime(5), 1, _session="sk")
    assert lease == dataclasses.replace(lease, _session=None)
    assert "sk" not in repr(lease)


class GatedClient:
    """Answers update_item once its gate opens; records the order requests were sent in."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.sent: list[Any] = []

    async def update_item(self, **request: Any) -> Any:
        self.sent.append(request["Key"])
        self.started.set()
        await self.gate.wait()
        return {}


async def _queue(calls: Calls, client: GatedClient, keys: list[tuple[str, float | None]]) -> None:
    """Occupy the only slot, queue ``keys`` (name, deadline) in that order, then let all run."""
    first = asyncio.create_task(calls.call("update_item", {"Key": "first"}))
    await client.started.wait()

    async def one(name: str, deadline: float | None) -> None:
        with deadline_first(deadline):
            await calls.call("update_item", {"Key": name})

    tasks = []
    for name, deadline in keys:
        tasks.append(asyncio.create_task(one(name, deadline)))
        await asyncio.sleep(0)  # queued in this order
    client.gate.set()
    await asyncio.gather(first, *tasks)


async def test_waiting_calls_are_served_earliest_deadline_first_then_in_arrival_order() -> None:
    """A call without a deadline counts as due NO_DEADLINE_WAIT after it queued: renewals
    due sooner go first, renewals with time to spare after it (never starving it)."""
    client = GatedClient()
    calls = Calls(client, S, max_attempts=1, max_in_flight=1)
    now = asyncio.get_running_loop().time()
    assert NO_DEADLINE_WAIT == 1.0
    await _queue(
        calls,
        client,
        [
            ("plain-1", None),
            ("late", now + 30),
            ("soon", now + 0.2),
            ("plain-2", None),
            ("mid", now + 0.5),
        ],
    )
    assert client.sent == ["first", "soon", "mid", "plain-1", "plain-2", "late"], (
        f"slots not served by deadline, then by arrival: {client.sent}"
    )


async def test_a_cancelled_waiter_leaves_the_queue_and_a_granted_one_passes_its_slot_on() -> None:
    slots = Slots(1)
    await slots.acquire()
    with deadline_first(asyncio.get_running_loop().time() + 10):
        cancelled = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0)
    later = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    slots.release()
    await asyncio.wait_for(later, 1)  # the cancelled waiter did not take the slot
    # Granted the slot and cancelled before it ran: the slot goes to the next waiter.
    granted = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    last = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()
    granted.cancel()
    await asyncio.gather(granted, return_exceptions=True)
    await asyncio.wait_for(last, 1)
    slots.release()
    await asyncio.wait_for(slots.acquire(), 1)  # and the slot count came out right


async def test_a_waiter_cancelled_and_passed_over_before_it_runs_unwinds_cleanly() -> None:
    slots = Slots(1)
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    waiter.cancel()  # cancels its future at once; the task unwinds at its next step
    slots.release()  # ...which this release passes over before the task has run
    results = await asyncio.gather(waiter, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError), f"unwound with {results[0]!r}"
    await asyncio.wait_for(slots.acquire(), 1)  # the slot went back to the pool


class QuickClient:
    """Answers update_item after one loop step; records the order requests were sent in."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def update_item(self, **request: Any) -> Any:
        self.sent.append(request["Key"])
        await asyncio.sleep(0)
        return {}


async def test_a_call_without_a_deadline_is_not_starved_by_a_stream_of_renewals() -> None:
    # Review (hotpath): waiters without a deadline (releases, undos, acquisitions, reads)
    # sort after every renewal, with no aging: while renewals keep queueing (sustained
    # load past capacity), a release is never served. A locker's release then gives up
    # after its 5 s and leaves the row held; store.release() with no timeout hangs.
    client = QuickClient()
    calls = Calls(client, S, max_attempts=1, max_in_flight=1)
    far = asyncio.get_running_loop().time() + 60  # no renewal here is anywhere near late

    async def renewer(n: int) -> None:
        with deadline_first(far):
            for _ in range(100):
                await calls.call("update_item", {"Key": f"renew-{n}"})

    renewers = [asyncio.create_task(renewer(n)) for n in range(3)]
    await asyncio.sleep(0)  # one renewal holds the slot, two wait
    release = asyncio.create_task(calls.call("update_item", {"Key": "release"}))
    await asyncio.gather(*renewers, release)
    position = client.sent.index("release")
    assert position <= 10, (
        f"a call without a deadline queued behind 2 renewals was sent {position}th of "
        f"{len(client.sent)}: starved until the renewals stopped"
    )


class CountingDeadline(float):
    """A deadline that counts the heap's comparisons of it (the cost of queue upkeep)."""

    compared = 0

    def __lt__(self, other: object) -> bool:
        CountingDeadline.compared += 1
        return float(self) < float(other)  # type: ignore[arg-type]


async def test_cancelling_many_waiters_costs_a_linear_number_of_heap_steps() -> None:
    # Review (hotpath): each cancelled waiter was removed from the heap and the heap
    # rebuilt, O(n) per cancellation, so n renewals timing out together blocked the loop
    # O(n^2) (8000 waiters: 3 s of CPU). Counted in comparisons, not seconds.
    slots = Slots(1)
    await slots.acquire()
    now = asyncio.get_running_loop().time()
    n = 4000

    async def wait(i: int) -> None:
        with deadline_first(CountingDeadline(now + 60 + i % 7)):
            await slots.acquire()

    tasks = [asyncio.create_task(wait(i)) for i in range(n)]
    await asyncio.sleep(0)
    CountingDeadline.compared = 0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert CountingDeadline.compared < 20 * n, (
        f"cancelling {n} waiters took {CountingDeadline.compared} comparisons"
    )
    slots.release()
    await asyncio.wait_for(slots.acquire(), 1)  # the slot is free again, nobody queued


async def test_a_free_slot_is_granted_while_a_cancelled_waiter_has_not_unwound_yet() -> None:
    slots = Slots(1)
    await slots.acquire()
    gave_up = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    gave_up.cancel()  # its future is cancelled now; the task unwinds at its next step
    slots.release()  # skips it: the slot is free, but the cancelled waiter still counts
    newcomer = asyncio.create_task(slots.acquire())
    await asyncio.gather(gave_up, return_exceptions=True)
    await asyncio.wait_for(newcomer, 1)  # granted, not left waiting for another release
