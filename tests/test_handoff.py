"""Handoff on request in ``session.serve()`` (docs/balancing.md, "Handoff on request").

The two writes without a server; then, on the moto server, that a request lands only on
the tenure it names and never changes the lease, that acquisitions remove it, and
workers asking, accepting, declining and withdrawing, with every hold through the
history checker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import aiolease
import aiolease._clock
import aiolease._handoff
from aiolease import (
    HandoffAccepted,
    HandoffCompleted,
    HandoffEvent,
    HandoffRequested,
    HandoffWithdrawn,
    Lease,
    LeaseEvent,
    LeaseItem,
    LeaseRequest,
    Locker,
    LockStore,
)
from aiolease._wire import handoff, requests
from aiolease._wire.schema import Schema

from .history import Hold, check_history

S = Schema("leases")
WAIT = 0.2  # every worker's wait period (seconds)
DURATION = 2.0  # sessions' and single leases' duration
SKEW = 0.2


# -- the writes, pure --------------------------------------------------------------------------


def test_a_request_is_pinned_to_the_holders_tenure_and_sets_only_the_request() -> None:
    request = handoff.request_handoff(S, "a", "w", 7, "sk", 900, 500)
    assert request["UpdateExpression"] == "SET #h = :r, #hu = :hu"
    assert request["ConditionExpression"] == (
        "#l = :holder AND #t = :token AND (NOT attribute_type(#h, :s) OR"
        " NOT attribute_type(#hu, :n) OR #hu < :now OR #h = :r)"
    )
    assert request["ExpressionAttributeNames"] == {
        "#l": "ProcessID",
        "#t": "LeaseToken",
        "#h": "LeaseHandoff",
        "#hu": "LeaseHandoffUntil",
    }
    values = request["ExpressionAttributeValues"]
    assert values[":token"] == {"N": "7"} and values[":holder"] == {"S": "w"}
    assert values[":now"] == {"N": "500"} and values[":hu"] == {"N": "900"}
    assert values[":s"] == {"S": "S"} and values[":n"] == {"S": "N"}


def test_a_withdrawal_removes_only_that_requesters_request() -> None:
    anyone = handoff.withdraw_handoff(S, "a", "sk")
    assert anyone["UpdateExpression"] == "REMOVE #h, #hu"
    assert anyone["ConditionExpression"] == "#h = :r"
    as_read = handoff.withdraw_handoff(S, "a", "sk", 900)
    assert as_read["ConditionExpression"] == "#h = :r AND #hu = :hu", "a fresh one removed"


def test_acquisitions_remove_the_request_and_releases_keep_it() -> None:
    for session in (None, "sk"):
        take = requests.acquire(
            S, "a", "w", until_ns=5, duration={}, cutoff_ns=None, expect=None, session=session
        )
        assert take["UpdateExpression"].endswith(", #h, #hu"), take["UpdateExpression"]
    assert "#h" not in requests.release(S, "a", "w", 4)["UpdateExpression"]


def test_the_request_is_bookkeeping_never_a_user_attribute() -> None:
    assert {"LeaseHandoff", "LeaseHandoffUntil"} <= S.bookkeeping
    with pytest.raises(ValueError, match="bookkeeping"):
        requests.user_attributes(S, {"LeaseHandoff": "x"})
    row = {"LeaseID": {"S": "a"}, "LeaseHandoff": {"S": "sk"}, "LeaseHandoffUntil": {"N": "9"}}
    assert handoff.parse(S, row) == handoff.Handoff("sk", 9)
    assert handoff.parse(S, {"LeaseID": {"S": "a"}, "LeaseHandoff": {"S": "sk"}}) is None


# -- the writes on the server ------------------------------------------------------------------


@pytest.fixture
async def plain(client: Any, table_name: str) -> AsyncIterator[LockStore]:
    store = LockStore(client, table_name)
    await store.create_table()
    yield store
    await store.aclose()


async def raw_row(client: Any, table: str, item_id: str) -> dict[str, Any]:
    answer = await client.get_item(
        TableName=table, Key={"LeaseID": {"S": item_id}}, ConsistentRead=True
    )
    return dict(answer["Item"])


def snapshot(lease: Lease) -> LeaseItem:
    return LeaseItem(lease.lease_id, lease.lessee_id, lease.until_ns, lease.fencing_token)


async def test_a_request_lands_only_on_the_tenure_read_and_leaves_the_lease_alone(
    client: Any, table_name: str, plain: LockStore
) -> None:
    await plain.add_item("a", {"colour": "red"})
    lease = await plain.lease("a", LeaseRequest("holder", DURATION))
    before = await raw_row(client, table_name, "a")
    later = time.time_ns() + 10**9
    stale = LeaseItem("a", "holder", lease.until_ns, lease.fencing_token - 1)
    assert not await plain.request_handoff(stale, "sk-1", later), "landed on another tenure"
    assert await plain.request_handoff(snapshot(lease), "sk-1", later)
    assert await plain.request_handoff(snapshot(lease), "sk-1", later), "a resend refused"
    assert not await plain.request_handoff(snapshot(lease), "sk-2", later), "raced a request"
    after = await raw_row(client, table_name, "a")
    assert after.pop("LeaseHandoff") == {"S": "sk-1"}
    assert after.pop("LeaseHandoffUntil") == {"N": str(later)}
    assert after == before, "the request changed the lease's own attributes"
    item = await plain.get_item("a")
    assert item is not None and item.attributes == {"colour": "red"}
    # The holder's renewal and release are not disturbed; the release keeps the request.
    lease = await plain.renew(lease)
    assert await plain.release(lease)
    assert (await raw_row(client, table_name, "a"))["LeaseHandoff"] == {"S": "sk-1"}
    # The next acquisition (a new tenure) removes it.
    taken = await plain.lease("a", LeaseRequest("requester", DURATION))
    assert taken.fencing_token == lease.fencing_token + 1
    assert taken.attributes == {"colour": "red"}
    row = await raw_row(client, table_name, "a")
    assert "LeaseHandoff" not in row and "LeaseHandoffUntil" not in row


async def test_an_expired_request_can_be_replaced_and_a_withdrawal_is_the_requesters(
    client: Any, table_name: str, plain: LockStore
) -> None:
    await plain.add_item("a")
    lease = await plain.lease("a", LeaseRequest("holder", DURATION))
    assert await plain.request_handoff(snapshot(lease), "sk-1", time.time_ns() - 1)
    assert await plain.request_handoff(snapshot(lease), "sk-2", time.time_ns() + 10**9)
    assert not await plain.withdraw_handoff("a", "sk-1"), "withdrew another's request"
    assert await plain.withdraw_handoff("a", "sk-2")
    assert "LeaseHandoff" not in await raw_row(client, table_name, "a")


# -- workers -----------------------------------------------------------------------------------


class Workers:
    """Serving workers on one table, their holds (for the checker) and every handoff event."""

    def __init__(self, client: Any, table_name: str) -> None:
        self.client = client
        self.table_name = table_name
        self.holding: dict[str, set[str]] = {}
        self.holds: list[Hold] = []
        self.drained: list[str] = []
        self.taken_at: dict[str, int] = {}  # item -> wall-clock ns its latest work started
        self.tokens: dict[str, list[tuple[str, int]]] = {}  # item -> (worker, token) taken
        self.events: list[tuple[str, LeaseEvent]] = []
        self.changed = asyncio.Event()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.sessions: dict[str, str] = {}  # worker -> its session's key
        self.stores: list[LockStore] = []

    def start(self, name: str, *, client: Any = None, **serve: Any) -> None:
        self.holding[name] = set()
        self.tasks[name] = asyncio.create_task(self._worker(name, client or self.client, serve))

    async def stop(self, name: str) -> None:
        task = self.tasks.pop(name)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _heard(self, name: str) -> Callable[[LeaseEvent], None]:
        def listener(event: LeaseEvent) -> None:
            if isinstance(event, HandoffEvent):
                self.events.append((name, event))
                self.changed.set()

        return listener

    async def _worker(self, name: str, client: Any, serve: dict[str, Any]) -> None:
        store = LockStore(client, self.table_name)
        self.stores.append(store)
        locker = Locker(store, max_clock_skew=SKEW)
        locker.add_listener(self._heard(name))
        obey = serve.pop("obey_drain", True)

        async def work(lease: Lease) -> None:
            start = time.monotonic()
            self.taken_at[lease.lease_id] = time.time_ns()
            self.holding[name].add(lease.lease_id)
            self.tokens.setdefault(lease.lease_id, []).append((name, lease.fencing_token))
            self.changed.set()
            try:
                await aiolease.draining().wait()
                self.drained.append(lease.lease_id)
                if not obey:
                    await asyncio.Event().wait()
            finally:
                self.holding[name].discard(lease.lease_id)
                self.holds.append(
                    Hold(lease.lease_id, name, lease.fencing_token, start, time.monotonic())
                )
                self.changed.set()

        async with locker.session(LeaseRequest(name, DURATION)) as session:
            self.sessions[name] = session.session_id
            await session.serve(work, wait_period=serve.pop("wait_period", WAIT), **serve)

    def heard(self, kind: type[HandoffEvent], worker: str | None = None) -> list[Any]:
        return [e for w, e in self.events if isinstance(e, kind) and worker in (None, w)]

    async def until(self, condition: Callable[[], bool], within: float, what: str) -> None:
        """Wait for ``condition``, woken by every change of holdings and every event."""
        async with asyncio.timeout(within):
            while not condition():
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    # Also look every 50 ms: conditions may read the table's state.
                    await asyncio.wait_for(self.changed.wait(), 0.05)

    async def aclose(self) -> None:
        for name in list(self.tasks):
            await self.stop(name)
        for store in self.stores:
            await store.aclose()
        report = check_history(self.holds)
        assert report.holds == len(self.holds), report


@pytest.fixture
async def workers(
    client: Any, table_name: str, plain: LockStore
) -> AsyncIterator[tuple[Workers, LockStore]]:
    w = Workers(client, table_name)
    yield w, plain
    await w.aclose()


@contextlib.asynccontextmanager
async def outside_holder(store: LockStore, items: list[str]) -> AsyncIterator[None]:
    """Single leases (no session, so no share) held on ``items`` while inside."""
    locker = Locker(store, max_clock_skew=SKEW)
    async with contextlib.AsyncExitStack() as stack:
        for item in items:
            await stack.enter_async_context(locker.lease(LeaseRequest("outsider", DURATION), item))
        yield


class Gate:
    """A client whose scans (the balancer's pool reads) wait while the gate is shut."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.opened = asyncio.Event()
        self.opened.set()

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.client, name)
        if name != "scan":
            return call

        async def scan(**kwargs: Any) -> Any:
            await self.opened.wait()
            return await call(**kwargs)

        return scan


async def b_above_its_share(w: Workers, store: LockStore, **serve: Any) -> tuple[list[str], Gate]:
    """5 items, 2 held by single leases (the caller's ``outside_holder(store, ids[:2])``):
    b, alone first, takes the 3 free ones; then its pool reads wait (gate shut) while a
    joins. Sessions sort by lessee, so a's share is 3 and b's 2: b, one above its share,
    would drain that item on its own at its first look with a live; the shut gate makes
    that look come only once the test opens it (after a's request), so that it is the
    request b answers."""
    ids = [f"item-{n}" for n in range(5)]
    gate = Gate(w.client)
    w.start("b", client=gate, **serve)
    await w.until(lambda: len(w.holding["b"]) == 3, 3.0, "b holds the 3 free items")
    gate.opened.clear()
    return ids, gate


async def test_a_worker_below_its_share_asks_and_the_holder_hands_one_item_over(
    workers: tuple[Workers, LockStore],
) -> None:
    # 5 items, 2 held by single leases: shares a 3, b 2. b holds the 3 free items, one
    # above its share; a finds nothing free and asks b (the one member above its share),
    # and b, above its share, hands that item over (not just any extra: the one asked).
    w, store = workers
    for item in [f"item-{n}" for n in range(5)]:
        await store.add_item(item)
    async with outside_holder(store, ["item-0", "item-1"]):
        ids, gate = await b_above_its_share(w, store)
        w.start("a")
        await w.until(lambda: bool(w.heard(HandoffRequested, "a")), 5.0, "the request")
        gate.opened.set()
        await w.until(
            lambda: w.heard(HandoffCompleted) and len(w.holding["a"]) == 1, 5.0, "the handoff"
        )
        [requested] = w.heard(HandoffRequested, "a")
        [accepted] = w.heard(HandoffAccepted, "b")
        [completed] = w.heard(HandoffCompleted, "a")
        item = requested.lease_id
        assert accepted.lease_id == completed.lease_id == item
        assert requested.requester == accepted.requester == completed.requester == w.sessions["a"]
        assert requested.holder == "b"
        assert item in w.drained, "the holder's work never saw draining() set"
        assert w.holding == {"b": set(ids[2:]) - {item}, "a": {item}}
        [(first, old), (second, new)] = w.tokens[item]
        assert (first, second) == ("b", "a") and new > old, w.tokens[item]
        assert completed.token == new and 0 <= completed.waited < 3.0
        order = [type(e) for _, e in w.events]
        assert order.index(HandoffRequested) < order.index(HandoffAccepted)
        assert order.index(HandoffAccepted) < order.index(HandoffCompleted)
        # And it stays so: b is at its share now, so a (short, nothing free) asks nobody.
        await asyncio.sleep(4 * WAIT)
        assert len(w.heard(HandoffRequested)) == 1, w.events
        assert sorted(len(h) for h in w.holding.values()) == [1, 2]
        row = await raw_row(w.client, w.table_name, item)
        assert "LeaseHandoff" not in row, "the take left the request behind"


async def test_a_short_worker_asks_only_once_short_for_a_wait_period(
    workers: tuple[Workers, LockStore],
) -> None:
    # A joiner finds the others above their share, and they drain their extras by
    # themselves at their next look: asking at once would only add writes racing those
    # drains. So a worker asks once it has been short, with nothing free, for a wait
    # period (at its first look, ~0.2 s after it started, before).
    w, store = workers
    for item in [f"item-{n}" for n in range(5)]:
        await store.add_item(item)
    async with outside_holder(store, ["item-0", "item-1"]):
        _, gate = await b_above_its_share(w, store)
        started = time.monotonic()
        w.start("a", wait_period=1.0)
        await w.until(lambda: bool(w.heard(HandoffRequested, "a")), 5.0, "the request")
        assert time.monotonic() - started >= 1.0, "asked before it was short for a period"
        gate.opened.set()
        await w.until(lambda: len(w.holding["a"]) == 1, 5.0, "the handoff")


async def test_a_dead_requesters_request_is_withdrawn_by_the_holder(
    workers: tuple[Workers, LockStore],
) -> None:
    w, store = workers
    ids = ["item-0", "item-1"]
    for item in ids:
        await store.add_item(item)
    # A requester that dies without withdrawing: its session ended (before a starts, so
    # that a never counts it as a member).
    locker = Locker(store, max_clock_skew=SKEW)
    async with locker.session(LeaseRequest("requester", DURATION)) as session:
        dead = session.session_id
    w.start("a")
    await w.until(lambda: len(w.holding["a"]) == 2, 3.0, "a holds both")
    target = await store.get_item("item-0")
    assert target is not None
    assert await store.request_handoff(target, dead, time.time_ns() + 10**10)
    await w.until(lambda: bool(w.heard(HandoffWithdrawn, "a")), 3.0, "the withdrawal")
    [withdrawn] = w.heard(HandoffWithdrawn, "a")
    assert (withdrawn.lease_id, withdrawn.reason, withdrawn.requester) == (
        "item-0",
        "dead requester",
        dead,
    )
    assert "LeaseHandoff" not in await raw_row(w.client, w.table_name, "item-0")
    assert w.holding["a"] == set(ids), "a dead requester's request moved an item"
    assert not w.heard(HandoffAccepted)


async def test_a_holder_not_above_its_share_declines(
    workers: tuple[Workers, LockStore],
) -> None:
    # 2 items, members a and an idle live session: a's share is 1 and it holds 1.
    w, store = workers
    for item in ("item-0", "item-1"):
        await store.add_item(item)
    locker = Locker(store, max_clock_skew=SKEW)
    async with locker.session(LeaseRequest("idle", DURATION)) as idle:
        w.start("a")
        await w.until(lambda: len(w.holding["a"]) == 1, 3.0, "a holds its share")
        [held] = w.holding["a"]
        item = await store.get_item(held)
        assert item is not None
        assert await store.request_handoff(item, idle.session_id, time.time_ns() + 10**10)
        await w.until(lambda: bool(w.heard(HandoffWithdrawn, "a")), 3.0, "the answer")
        [declined] = w.heard(HandoffWithdrawn, "a")
        assert (declined.lease_id, declined.reason) == (held, "declined")
        assert w.holding["a"] == {held} and not w.drained
        assert "LeaseHandoff" not in await raw_row(w.client, w.table_name, held)


async def test_a_free_item_reserved_for_a_live_session_waits_and_a_dead_ones_does_not(
    workers: tuple[Workers, LockStore], client: Any, table_name: str
) -> None:
    w, store = workers
    for item in ("reserved", "orphaned", "held"):
        await store.add_item(item)
    locker = Locker(store, max_clock_skew=SKEW)

    async def reserve(item: str, session: str, until_ns: int) -> None:
        await client.update_item(
            TableName=table_name,
            Key={"LeaseID": {"S": item}},
            UpdateExpression="SET #h = :r, #hu = :hu",
            ExpressionAttributeNames={"#h": "LeaseHandoff", "#hu": "LeaseHandoffUntil"},
            ExpressionAttributeValues={":r": {"S": session}, ":hu": {"N": str(until_ns)}},
        )

    async with locker.session(LeaseRequest("ended", DURATION)) as ended:
        pass
    await reserve("orphaned", ended.session_id, time.time_ns() + 10**10)
    async with (
        outside_holder(store, ["held"]),
        locker.session(LeaseRequest("zidle", DURATION)) as idle,
    ):
        # Members "a" and "zidle", 3 items: a's share is 2 (it is first by ID), but one
        # item is held by a single lease and one is reserved for the live idle session.
        await reserve("reserved", idle.session_id, time.time_ns() + 10**10)
        w.start("a")
        await w.until(lambda: "orphaned" in w.holding["a"], 3.0, "the dead one's item")
        await asyncio.sleep(3 * WAIT)
        assert w.holding["a"] == {"orphaned"}, "took an item reserved for a live session"
    # The idle session ended: its reservation no longer holds anyone back.
    await w.until(lambda: "reserved" in w.holding["a"], 3.0, "the item once unreserved")


async def test_a_stopping_requester_withdraws_what_it_asked_for(
    workers: tuple[Workers, LockStore],
) -> None:
    # As in the handoff test, but the holder's work ignores the drain (long grace): the
    # request stands while a stops, and a withdraws it.
    w, store = workers
    for item in [f"item-{n}" for n in range(5)]:
        await store.add_item(item)
    async with outside_holder(store, ["item-0", "item-1"]):
        _, gate = await b_above_its_share(w, store, obey_drain=False, drain_grace=1.5)
        w.start("a")
        await w.until(lambda: bool(w.heard(HandoffRequested, "a")), 5.0, "the request")
        gate.opened.set()
        await w.until(lambda: bool(w.heard(HandoffAccepted, "b")), 5.0, "the acceptance")
        [accepted] = w.heard(HandoffAccepted, "b")
        await w.stop("a")
        [withdrawn] = w.heard(HandoffWithdrawn, "a")
        assert (withdrawn.lease_id, withdrawn.reason) == (accepted.lease_id, "stopped")
        assert "LeaseHandoff" not in await raw_row(w.client, w.table_name, accepted.lease_id)
        assert not w.heard(HandoffCompleted)


class Frozen:
    """A client whose calls hang once ``frozen`` is set (a killed process, to the table)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.frozen = False

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.client, name)
        if name not in {"update_item", "scan", "get_item", "query"}:
            return call

        async def maybe_hang(**kwargs: Any) -> Any:
            if self.frozen:
                await asyncio.Event().wait()
            return await call(**kwargs)

        return maybe_hang


async def test_an_item_freed_for_a_requester_that_died_is_taken_once_its_session_expired(
    workers: tuple[Workers, LockStore],
) -> None:
    # a asks and dies at once (no withdrawal): b hands the item over all the same (a is
    # live when b answers), and the freed item waits for a only until a's session expired.
    # (b, at its share then, takes it back: a's death leaves b the only member.)
    w, store = workers
    for item in [f"item-{n}" for n in range(5)]:
        await store.add_item(item)
    frozen = Frozen(w.client)
    async with outside_holder(store, ["item-0", "item-1"]):
        _, gate = await b_above_its_share(w, store)
        # a's long drain grace makes its request stand for longer than its session lives.
        w.start("a", client=frozen, drain_grace=3.0)
        await w.until(lambda: bool(w.heard(HandoffRequested, "a")), 5.0, "the request")
        frozen.frozen = True
        gate.opened.set()
        [requested] = w.heard(HandoffRequested, "a")
        item = requested.lease_id
        await w.until(lambda: item not in w.holding["b"], 3.0, "b hands it over")
        [dead] = [r for r in await store.list_sessions() if r.session_id == w.sessions["a"]]
        await w.until(lambda: item in w.holding["b"], DURATION + 3.0, "b takes it back")
        assert w.taken_at[item] > dead.until_ns + int(SKEW * 1e9), "taken while reserved"
        reserved_until = int(requested.until.timestamp() * 1e9)
        assert w.taken_at[item] < reserved_until, "the reservation held for a dead session"
        assert not w.holding["a"] and not w.heard(HandoffCompleted)
        task = w.tasks.pop("a")
        task.cancel()
        with contextlib.suppress(
            asyncio.CancelledError, aiolease.LeaseLostError, BaseExceptionGroup
        ):
            await task


class LandsThenHangs:
    """A client whose handoff requests land but are never answered."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.landed = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.client, name)
        if name != "update_item":
            return call

        async def update_item(**kwargs: Any) -> Any:
            answer = await call(**kwargs)
            if kwargs.get("UpdateExpression") == "SET #h = :r, #hu = :hu":
                self.landed.set()
                await asyncio.Event().wait()
            return answer

        return update_item


async def test_a_request_whose_answer_was_lost_is_withdrawn_when_serve_is_cancelled(
    workers: tuple[Workers, LockStore],
) -> None:
    w, store = workers
    for item in [f"item-{n}" for n in range(5)]:
        await store.add_item(item)
    hanging = LandsThenHangs(w.client)
    async with outside_holder(store, ["item-0", "item-1"]):
        # b's reads stay shut: nobody but a touches the request.
        await b_above_its_share(w, store, obey_drain=False, drain_grace=1.5)
        w.start("a", client=hanging)
        async with asyncio.timeout(5):
            await hanging.landed.wait()
        await w.stop("a")  # cancelled in the middle of the request's call
        [withdrawn] = w.heard(HandoffWithdrawn, "a")
        assert withdrawn.reason == "stopped"
        assert not w.heard(HandoffRequested, "a"), "announced a request never answered"
        row = await raw_row(w.client, w.table_name, withdrawn.lease_id)
        assert "LeaseHandoff" not in row, "the cancelled request was left behind"


async def test_a_requester_that_reaches_its_share_otherwise_withdraws_its_request(
    workers: tuple[Workers, LockStore], client: Any, table_name: str
) -> None:
    # a (capped at 1) asks b; before b's slow drain is over, a single lease's item comes
    # free for a (reserved for it by hand, so that b leaves it alone): a's share is
    # reached, so its request goes (a free item for us is taken even with a request out),
    # and the item b drains is claimed by nobody (b is at its share, a at its cap).
    w, store = workers
    for item in [f"item-{n}" for n in range(5)]:
        await store.add_item(item)
    async with contextlib.AsyncExitStack() as outside:
        await outside.enter_async_context(outside_holder(store, ["item-0", "item-1"]))
        _, gate = await b_above_its_share(w, store, obey_drain=False, drain_grace=1.5)
        w.start("a", max_leases=1)
        await w.until(lambda: bool(w.heard(HandoffRequested, "a")), 5.0, "the request")
        gate.opened.set()
        await w.until(lambda: bool(w.heard(HandoffAccepted, "b")), 5.0, "the acceptance")
        await client.update_item(
            TableName=table_name,
            Key={"LeaseID": {"S": "item-0"}},
            UpdateExpression="SET #h = :r, #hu = :hu",
            ExpressionAttributeNames={"#h": "LeaseHandoff", "#hu": "LeaseHandoffUntil"},
            ExpressionAttributeValues={
                ":r": {"S": w.sessions["a"]},
                ":hu": {"N": str(time.time_ns() + 3 * 10**9)},
            },
        )
    # The single leases are released: a takes one, reaching its share.
    await w.until(lambda: bool(w.heard(HandoffWithdrawn, "a")), 3.0, "the withdrawal")
    [accepted] = w.heard(HandoffAccepted, "b")
    [withdrawn] = w.heard(HandoffWithdrawn, "a")
    assert (withdrawn.lease_id, withdrawn.reason) == (accepted.lease_id, "fulfilled elsewhere")
    await w.until(lambda: len(w.holding["a"]) == 1, 3.0, "a holds its one item")
    assert accepted.lease_id not in w.holding["a"]
    assert "LeaseHandoff" not in await raw_row(w.client, w.table_name, withdrawn.lease_id)
    assert not w.heard(HandoffCompleted)


async def test_a_malformed_request_blocks_no_request(
    client: Any, table_name: str, plain: LockStore
) -> None:
    # Read as no request (parse), so the condition must let a request replace it: a
    # LeaseHandoffUntil that is not a number, and a LeaseHandoff that is not a string.
    await plain.add_item("a")
    lease = await plain.lease("a", LeaseRequest("holder", DURATION))
    later = time.time_ns() + 10**9
    for update, values in (
        ("SET LeaseHandoff = :r, LeaseHandoffUntil = :u", {":r": {"S": "x"}, ":u": {"S": "9"}}),
        (
            "SET LeaseHandoff = :r, LeaseHandoffUntil = :u",
            {":r": {"N": "1"}, ":u": {"N": "9" * 25}},
        ),
    ):
        await client.update_item(
            TableName=table_name,
            Key={"LeaseID": {"S": "a"}},
            UpdateExpression=update,
            ExpressionAttributeValues=values,
        )
        _, _, standing = await plain.read_pool()
        assert "a" not in standing
        assert await plain.request_handoff(snapshot(lease), "sk-1", later), values
        assert await plain.withdraw_handoff("a", "sk-1")


async def test_a_requester_offers_no_item_under_a_dead_requesters_unexpired_request() -> None:
    # The write's condition refuses it until the holder withdraws that request: asking for
    # it would only repeat a refused write every look.
    from .test_handoff_review import Recorder, held, stand_in

    items = [held(f"a{n}", "sa") for n in range(4)]
    until = time.time_ns() + 10**10
    dead = {f"a{n}": handoff.Handoff("sd-dead", until) for n in range(3)}
    store = Recorder()
    handoffs = aiolease._handoff.Handoffs(stand_in("sc", store), 0.2, 0.5)
    pool = aiolease._handoff.Pool(items, ["sa", "sc"], dead)
    await handoffs.ask(pool, target=2, held=0, planned={}, taking=())
    assert store.requested == [("a3", "sa")]


async def test_a_withdrawal_cancelled_mid_write_keeps_the_request_noted() -> None:
    # Forgotten only once the write returned: the stop's withdrawal then tries it again.
    from .test_handoff_review import Recorder, stand_in

    class Hangs(Recorder):
        async def withdraw_handoff(
            self, item_id: str, requester: str, until_ns: Any = None
        ) -> bool:
            self.withdrawn.append(item_id)
            await asyncio.Event().wait()
            return True

    store = Hangs()
    handoffs = aiolease._handoff.Handoffs(stand_in("sc", store), 0.2, 0.5)
    now = asyncio.get_running_loop().time()
    handoffs.asked["x"] = aiolease._handoff._Ask("sa", 1, time.time_ns() + 10**10, now)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(handoffs.withdraw_all("fulfilled elsewhere"), 0.05)
    assert store.withdrawn == ["x"] and "x" in handoffs.asked, "forgotten before its write"


def test_handoff_event_fields_are_built_only_when_someone_listens() -> None:
    from aiolease._events import Events

    def refuse() -> dict[str, Any]:
        raise AssertionError("event fields built with nobody listening")

    hub = Events("t", aiolease._clock.SystemClock())
    hub.emit_item(HandoffRequested, "x", "w", 1, refuse)


async def test_the_withdrawal_cancelled_once_the_session_is_lost_is_awaited() -> None:
    # Nothing of serve() may outlive it: _shielded waits for the task it cancels.
    from aiolease._balance import _shielded

    finished = asyncio.Event()

    async def withdrawal() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.01)  # its cleanup takes a moment
            finished.set()

    task = asyncio.ensure_future(withdrawal())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(_shielded(task, lambda: True))
    await asyncio.sleep(0)
    waiter.cancel()
    await waiter
    assert finished.is_set() and task.done(), "the cancelled withdrawal outlived _shielded"
