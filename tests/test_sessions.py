"""Session leases, the holder's side: ``locker.session()`` and the item scopes under it.

Against the moto server, plain layout only (the store's tests cover the layouts). Sessions
are short (1-2 s) so that losses and expiries happen within a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from aiolease import (
    Lease,
    LeaseEvent,
    LeaseLost,
    LeaseLostError,
    LeaseNotObtainedError,
    LeaseRequest,
    LeaseScope,
    LeaseSession,
    Locker,
    LockStore,
    SessionEvent,
    SessionLost,
    SessionRenewed,
)

from .history import Hold, check_history

SHORT = 1.5  # seconds: a session that is lost within a test
MAX_NS = 2**63 - 1

Call = Callable[[], Awaitable[Any]]


def request(name: str = "worker-a", duration: float = SHORT) -> LeaseRequest:
    return LeaseRequest(name, duration)


class Wire:
    """Delegates to a DynamoDB client; counts ``update_item`` per key and can hook a key's."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.writes: Counter[str] = Counter()
        self.hooks: dict[str, Callable[[Call], Awaitable[Any]]] = {}
        self.hang_all = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    async def update_item(self, **kwargs: Any) -> Any:
        key = next(iter(kwargs["Key"].values()))["S"]
        self.writes[key] += 1
        if self.hang_all:
            await asyncio.Event().wait()  # a SIGSTOPped process, as far as the table knows
        hook = self.hooks.get(key)
        if hook is not None:
            return await hook(lambda: self.client.update_item(**kwargs))
        return await self.client.update_item(**kwargs)


@pytest.fixture
async def wired(client: Any, table_name: str) -> AsyncIterator[tuple[LockStore, Wire]]:
    """A store (plain layout) on a fresh table whose writes are counted per key."""
    wire = Wire(client)
    store = LockStore(wire, table_name)  # type: ignore[arg-type]
    await store.create_table()
    yield store, wire
    await store.aclose()


@pytest.fixture
async def store(client: Any, table_name: str) -> AsyncIterator[LockStore]:
    s = LockStore(client, table_name)
    await s.create_table()
    yield s
    await s.aclose()


async def row(client: Any, store: LockStore, key: str) -> dict[str, Any]:
    response = await client.get_item(
        TableName=store.table_name, Key={"LeaseID": {"S": key}}, ConsistentRead=True
    )
    item: dict[str, Any] = response["Item"]
    return item


async def add_items(store: LockStore, n: int) -> list[str]:
    ids = [f"item-{i}" for i in range(n)]
    for lease_id in ids:
        await store.add_item(lease_id)
    return ids


async def forever(lease: Lease) -> None:
    await asyncio.Event().wait()


# -- the cost: one write per period, whatever the number of items ----------------------------


async def test_n_items_under_one_session_cost_one_write_per_period(
    wired: tuple[LockStore, Wire],
) -> None:
    store, wire = wired
    ids = await add_items(store, 10)
    period = 0.25
    scope = Locker(store).session(request(duration=2), heartbeat_period=period)
    async with scope as session, contextlib.AsyncExitStack() as stack:
        for lease_id in ids:
            await stack.enter_async_context(session.lease(lease_id))
        before = Counter(wire.writes)
        first_until = session.until
        window = 1.2
        await asyncio.sleep(window)  # the measurement window, not a synchronisation
        during = wire.writes - before
        assert set(during) == {session.session_id}, f"items were written while held: {during}"
        # Jittered down to 0.8 period: at most window / (0.8 period) + 1 renewals.
        assert 3 <= during[session.session_id] <= window / (0.8 * period) + 1, during
        assert session.until > first_until
        assert {lease.until for lease in session.leases} == {session.until}
    # Leaving: one release per item, one tombstone.
    after = wire.writes - before
    assert all(after[lease_id] == 1 for lease_id in ids), after


# -- losing the session -------------------------------------------------------------------------


async def test_a_lost_session_cancels_every_body_under_it(client: Any, store: LockStore) -> None:
    """Item scopes in other tasks see LeaseLostError; the session's own body is cancelled
    too, so item scopes in a TaskGroup inside it see their group's cancellation."""
    ids = await add_items(store, 3)
    entered: list[str] = []
    outcome: dict[str, str] = {}
    all_in = asyncio.Event()

    async def hold(session: LeaseSession, lease_id: str) -> None:
        try:
            async with session.lease(lease_id):
                entered.append(lease_id)
                if len(entered) == len(ids):
                    all_in.set()
                await asyncio.Event().wait()
        except LeaseLostError as exc:
            outcome[lease_id] = f"lost {exc.lease_id}"
        except asyncio.CancelledError:
            outcome[lease_id] = "cancelled"
            raise

    async def lose(session: LeaseSession) -> None:
        outside = asyncio.create_task(hold(session, ids[0]))
        async with asyncio.TaskGroup() as tg:
            for lease_id in ids[1:]:
                tg.create_task(hold(session, lease_id))
            await all_in.wait()
            # A taker ends the session behind its back (the tenure's token moves on).
            await client.update_item(
                TableName=store.table_name,
                Key={"LeaseID": {"S": session.session_id}},
                UpdateExpression="SET #t = #t + :one",
                ExpressionAttributeNames={"#t": "LeaseToken"},
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
        await outside

    scope = Locker(store).session(request(), heartbeat_period=0.2)
    with pytest.raises(LeaseLostError) as lost:
        async with scope as session:
            await lose(session)
    assert session.lost and lost.value.lease_id == session.session_id
    assert outcome == {
        ids[0]: f"lost {ids[0]}",
        ids[1]: "cancelled",
        ids[2]: "cancelled",
    }, outcome
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    assert session.leases == []
    for lease_id in ids:
        assert "ProcessID" not in await row(client, store, lease_id)


async def test_an_item_body_that_absorbs_the_cancellation_is_cancelled_again(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a")
    entered = asyncio.Event()
    absorbed = 0

    async def stubborn(session: LeaseSession) -> None:
        nonlocal absorbed
        async with session.lease("a"):
            entered.set()
            while True:
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    absorbed += 1
                    if absorbed > 1:
                        raise

    task: asyncio.Task[None] | None = None

    async def under(session: LeaseSession) -> None:
        nonlocal task
        task = asyncio.create_task(stubborn(session))  # outside the session's body
        await entered.wait()
        await client.update_item(
            TableName=store.table_name,
            Key={"LeaseID": {"S": session.session_id}},
            UpdateExpression="SET #t = #t + :one",
            ExpressionAttributeNames={"#t": "LeaseToken"},
            ExpressionAttributeValues={":one": {"N": "1"}},
        )
        await asyncio.Event().wait()  # cancelled by the loss

    with pytest.raises(LeaseLostError):
        async with Locker(store).session(request(), heartbeat_period=0.2) as session:
            await under(session)
    assert task is not None
    with pytest.raises(LeaseLostError, match="its session was lost"):
        await asyncio.wait_for(task, 5)
    assert absorbed == 2


async def test_a_stalled_holder_stops_before_another_locker_takes_its_items(
    client: Any, wired: tuple[LockStore, Wire]
) -> None:
    """SIGSTOP-like: the holder's writes hang. Its bodies stop at its local deadline; a taker
    gets the items only after the session's expiry plus skew, with higher tokens."""
    store, wire = wired
    ids = await add_items(store, 2)
    taker_store = LockStore(client, store.table_name)
    taker = Locker(taker_store, max_clock_skew=0.2)
    stopped: dict[str, float] = {}
    tokens: dict[str, int] = {}
    all_in = asyncio.Event()
    session_until = 0.0

    async def hold(session: LeaseSession, lease_id: str) -> None:
        with contextlib.suppress(LeaseLostError):
            async with session.lease(lease_id) as lease:
                tokens[lease_id] = lease.fencing_token
                if len(tokens) == len(ids):
                    all_in.set()
                try:
                    await asyncio.Event().wait()
                finally:
                    stopped[lease_id] = time.time()

    async def holder() -> None:
        nonlocal session_until
        with contextlib.suppress(LeaseLostError):
            scope = Locker(store).session(request(), heartbeat_period=0.3)
            async with scope as session, asyncio.TaskGroup() as tg:
                for lease_id in ids:
                    tg.create_task(hold(session, lease_id))
                await all_in.wait()
                wire.hang_all = True
                sent = time.time()
                # No renewal lands from here: the stored expiry is the last one written.
                session_until = session.until.timestamp()
                assert session_until <= sent + SHORT

    holding = asyncio.create_task(holder())
    await all_in.wait()
    taken: dict[str, tuple[float, int]] = {}
    for lease_id in ids:
        async with taker.lease(request("taker", 3), lease_id, wait_period=0.05, timeout=5) as lease:
            taken[lease_id] = (time.time(), lease.fencing_token)
    await holding
    for lease_id in ids:
        at, token = taken[lease_id]
        assert stopped[lease_id] < at, "the taker started before the holder's body stopped"
        assert at >= session_until + 0.2, "taken before the session's expiry plus skew"
        assert at < session_until + 0.2 + 1.0, "a dead session's item stayed stuck"
        assert token > tokens[lease_id]
    await taker_store.aclose()


async def test_a_late_item_acquisition_is_not_entered(
    client: Any, wired: tuple[LockStore, Wire]
) -> None:
    store, wire = wired
    await store.add_item("a")

    async def answered_late(call: Call) -> Any:
        response = await call()
        time.sleep(1.2)  # noqa: ASYNC251 - the loop stalls past the session's 0.9 s deadline
        return response

    wire.hooks["a"] = answered_late
    entered = False

    async def under(session: LeaseSession) -> None:
        nonlocal entered
        with pytest.raises(LeaseLostError, match="after its local deadline"):
            async with session.lease("a"):
                entered = True
        await asyncio.sleep(0)  # the session's own body is cancelled too
        raise AssertionError("the session's own body went on after the loss")

    with pytest.raises(LeaseLostError):
        async with Locker(store).session(request(duration=1)) as session:
            await under(session)
    assert not entered, "the body ran under an item past its session's deadline"
    assert "ProcessID" not in await row(client, store, "a"), "the late item was not released"
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_body_that_blocks_past_the_session_deadline_is_a_loss(store: LockStore) -> None:
    await store.add_item("a")
    scope: LeaseScope | None = None

    async def under(session: LeaseSession) -> None:
        nonlocal scope
        scope = session.lease("a")
        with pytest.raises(LeaseLostError, match="deadline"):
            async with scope:
                time.sleep(1.2)  # noqa: ASYNC251 - blocks past the 0.9 s deadline
        await asyncio.sleep(0)  # the session's own body is cancelled too
        raise AssertionError("the session's own body went on after the loss")

    with pytest.raises(LeaseLostError, match="deadline"):
        async with Locker(store).session(request(duration=1)) as session:
            await under(session)
    assert session.lost and scope is not None and scope.lost


# -- what a holder reads, and what leaving leaves -------------------------------------------------


async def test_session_leases_lists_the_items_held_now(store: LockStore) -> None:
    await add_items(store, 2)
    async with Locker(store).session(request()) as session:
        assert session.leases == [] and session.lessee_id == "worker-a"
        assert 0 < session.time_left() < SHORT
        async with session.lease("item-0") as first:
            async with session.lease("item-1") as second:
                held = session.leases  # read with session.until, no await between
                assert [lease.lease_id for lease in held] == ["item-0", "item-1"]
                # Every item carries the session's current expiry (a renewal moves them all);
                # what a scope yielded is the expiry as it stood at its entry.
                assert [lease.until for lease in held] == [session.until] * 2
                assert first.until <= second.until <= session.until
                assert "item(s)" in repr(session)
            assert [lease.lease_id for lease in session.leases] == ["item-0"]
        assert session.leases == []
    assert session.time_left() == 0.0


async def test_leaving_releases_every_item_and_tombstones_the_session(
    client: Any, store: LockStore
) -> None:
    ids = await add_items(store, 3)
    straggler_error: list[LeaseLostError] = []
    straggler_in = asyncio.Event()

    async def straggler(session: LeaseSession) -> None:
        try:
            async with session.lease("item-2"):
                straggler_in.set()
                await asyncio.Event().wait()
        except LeaseLostError as exc:
            straggler_error.append(exc)

    async with Locker(store).session(request()) as session:
        outside = asyncio.create_task(straggler(session))  # outlives the body
        async with session.lease("item-0"), session.lease("item-1"):
            await straggler_in.wait()
            held = await row(client, store, "item-0")
            assert 2**62 < int(held["LeaseUntil"]["N"]) < MAX_NS  # Go workers see it held
            assert held["LeaseSession"]["S"] == session.session_id
    await asyncio.wait_for(outside, 5)  # a straggler never told would wait forever
    assert straggler_error and straggler_error[0].reason == "session ended", straggler_error
    for lease_id in ids:
        item = await row(client, store, lease_id)
        assert "ProcessID" not in item and "LeaseSession" not in item, item
    tombstone = await row(client, store, session.session_id)
    assert tombstone["LeaseSessionUntil"]["N"] == "0"
    assert tombstone["LeaseToken"]["N"] == "2"
    assert tombstone["LeaseUntil"]["N"] == str(MAX_NS)
    with pytest.raises(RuntimeError, match="left"):
        async with session.lease():
            pass


async def test_item_scopes_nest_and_run_concurrently_under_a_task_group(store: LockStore) -> None:
    await add_items(store, 4)
    got: list[tuple[str, int]] = []

    async def work(lease: Lease) -> str:
        await asyncio.sleep(0.05)
        got.append((lease.lease_id, lease.fencing_token))
        return lease.lease_id

    async with Locker(store).session(request()) as session, session.lease() as outer:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(session.run(work, timeout=2)) for _ in range(3)]
        results = {task.result() for task in tasks}
        assert len(results) == 3 and outer.lease_id not in results
    assert sorted(lease_id for lease_id, _ in got) == sorted(results)
    assert all(token == 1 for _, token in got)


async def test_an_outer_cancellation_propagates_and_releases_the_item(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a")
    entered = asyncio.Event()

    async with Locker(store).session(request()) as session:

        async def body() -> None:
            async with session.lease("a"):
                entered.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(body())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert "ProcessID" not in await row(client, store, "a")
        assert not session.lost
        # An item waiting to be obtained is cancelled the same way.
        await store.lease("a", request("other", 30))
        waiting = asyncio.create_task(session.run(forever, "a", wait_period=0.05))
        await asyncio.sleep(0.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_twice_cancelled_exit_leaves_its_cleanup_to_aclose(
    client: Any, wired: tuple[LockStore, Wire]
) -> None:
    store, wire = wired
    await store.add_item("a")
    locker = Locker(store)
    entered, releasing = asyncio.Event(), asyncio.Event()
    writes = 0

    async def slow_release(call: Call) -> Any:
        nonlocal writes
        writes += 1
        if writes > 1:  # the first is the acquisition
            releasing.set()
            await asyncio.sleep(0.5)
        return await call()

    wire.hooks["a"] = slow_release
    session_id = ""

    async def body() -> None:
        nonlocal session_id
        async with locker.session(request()) as session, session.lease("a"):
            session_id = session.session_id
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(body())
    await entered.wait()
    task.cancel()
    await releasing.wait()
    task.cancel()  # a second cancellation does not wait for the release
    with pytest.raises(asyncio.CancelledError):
        await task
    await locker.aclose()
    item = await row(client, store, "a")
    assert "ProcessID" not in item and "LeaseSession" not in item, item
    assert (await row(client, store, session_id))["LeaseSessionUntil"]["N"] == "0"


async def test_bad_arguments_name_the_field(store: LockStore) -> None:
    locker = Locker(store)
    with pytest.raises(ValueError, match="heartbeat_period"):
        locker.session(request(), heartbeat_period=SHORT)
    with pytest.raises(TypeError, match="request"):
        locker.session("worker-a")  # type: ignore[arg-type]
    session = locker.session(request())
    with pytest.raises(TypeError, match="lease_id"):
        session.lease(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="wait_period"):
        session.lease(wait_period=0)
    with pytest.raises(TypeError, match="work"):
        await session.run("not callable")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="entered"):
        async with session.lease():
            pass
    async with session:
        pass
    with pytest.raises(RuntimeError, match="once"):
        async with session:
            pass


# -- many workers, history checked ---------------------------------------------------------------


async def test_workers_in_session_mode_never_hold_one_item_at_once(
    client: Any, table_name: str
) -> None:
    setup = LockStore(client, table_name)
    await setup.create_table()
    ids = await add_items(setup, 4)
    holds: list[Hold] = []
    stop_at = time.monotonic() + 4

    async def item(session: LeaseSession, name: str) -> None:
        while time.monotonic() < stop_at and not session.lost:
            with contextlib.suppress(LeaseNotObtainedError, LeaseLostError):
                async with session.lease(wait_period=0.05, timeout=1) as lease:
                    start = time.monotonic()
                    try:
                        await asyncio.sleep(random.uniform(0.05, 0.6))
                    finally:
                        holds.append(
                            Hold(lease.lease_id, name, lease.fencing_token, start, time.monotonic())
                        )
            await asyncio.sleep(random.uniform(0, 0.1))

    async def worker(name: str, stall: bool) -> None:
        wire = Wire(client)
        store = LockStore(wire, table_name)  # type: ignore[arg-type]
        locker = Locker(store, max_clock_skew=0.1)
        while time.monotonic() < stop_at:
            with contextlib.suppress(LeaseLostError):
                scope = locker.session(request(name, 1.0))
                async with scope as session, asyncio.TaskGroup() as tg:
                    for _ in range(2):
                        tg.create_task(item(session, name))
                    if stall:
                        await asyncio.sleep(1.0)
                        wire.hang_all = True  # its session dies holding items
            wire.hang_all = stall = False
        await store.aclose()

    await asyncio.gather(*(worker(f"w{i}", stall=i == 0) for i in range(3)))
    report = check_history(holds)
    assert report.holds > 10, report
    assert any(hold.lessee == "w0" for hold in holds), "the stalled worker held nothing"
    assert report.items == len(ids)
    await setup.aclose()


# -- events ------------------------------------------------------------------------------------


async def test_a_session_reports_its_lifecycle_and_its_items_as_events(
    client: Any, store: LockStore
) -> None:
    """Session rows send Session* events (never Lease* ones); their items send Lease* ones."""
    ids = await add_items(store, 2)
    locker = Locker(store)
    seen: list[LeaseEvent] = []
    renewed = asyncio.Event()

    def listen(event: LeaseEvent) -> None:
        seen.append(event)
        if isinstance(event, SessionRenewed):
            renewed.set()

    locker.add_listener(listen)
    async with locker.session(request(), heartbeat_period=0.2) as session:
        async with session.lease(ids[0]), session.lease(ids[1]):
            async with asyncio.timeout(10):
                await renewed.wait()
        key = session.session_id
    await asyncio.sleep(0)  # listeners are called soon after, never inline
    await asyncio.sleep(0)
    names = [type(event).__name__ for event in seen]
    assert names[:3] == ["SessionStarted", "LeaseAcquired", "LeaseAcquired"], names
    assert names[-3:] == ["LeaseReleased", "LeaseReleased", "SessionEnded"], names
    assert set(names[3:-3]) == {"SessionRenewed"}, names
    assert all(e.lease_id == key for e in seen if isinstance(e, SessionEvent))
    assert {e.lease_id for e in seen if not isinstance(e, SessionEvent)} == set(ids)


async def test_a_lost_session_sends_session_lost_then_each_item_lost(
    client: Any, store: LockStore
) -> None:
    ids = await add_items(store, 2)
    locker = Locker(store)
    keys: list[str] = []

    async def lose() -> None:
        async with (
            locker.session(request(), heartbeat_period=0.2) as session,
            session.lease(ids[0]),
            session.lease(ids[1]),
        ):
            keys.append(session.session_id)
            await client.update_item(
                TableName=store.table_name,
                Key={"LeaseID": {"S": session.session_id}},
                UpdateExpression="SET #t = #t + :one",
                ExpressionAttributeNames={"#t": "LeaseToken"},
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
            await asyncio.Event().wait()

    async with locker.events() as stream:
        with pytest.raises(LeaseLostError):
            await lose()
        got: list[LeaseEvent] = []
        async with asyncio.timeout(10):
            async for event in stream:
                got.append(event)
                if len([e for e in got if isinstance(e, LeaseLost)]) == 2:
                    break
    lost = [e for e in got if isinstance(e, SessionLost | LeaseLost)]
    assert isinstance(lost[0], SessionLost) and lost[0].lease_id == keys[0]
    assert {e.lease_id for e in lost[1:]} == set(ids)
    assert all(isinstance(e, LeaseLost) and e.reason == lost[0].reason for e in lost[1:])
