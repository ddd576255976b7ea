"""Review findings on the locker (issue 12): losses under TaskGroups, overruns, late
acquisitions, bodies that absorb the cancellation, owned cleanup, and smaller holes.

The locker's behaviour here does not depend on the table layout, so these tests use the plain
layout only. Every scope runs where its ``cancelling()`` count can be checked afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import aiolease._locker
from aiolease import Lease, LeaseLostError, LeaseRequest, Locker, LockStore
from aiolease.testing import fake_session

SHORT = 1.5  # seconds: a short lease, so that losses happen within a test

Call = Callable[[], Awaitable[Any]]
Hook = Callable[[Call], Awaitable[Any]]


def request(name: str = "worker-a", duration: float = SHORT) -> LeaseRequest:
    return LeaseRequest(name, duration)


def kind_of(kwargs: dict[str, Any]) -> str:
    """Which lease write an ``update_item`` call is, from its expressions."""
    update = kwargs["UpdateExpression"]
    values = kwargs.get("ExpressionAttributeValues", {})
    if update.startswith("REMOVE"):
        if ":l" not in values:
            return "force_release"
        return "undo" if ":u" in values else "release"
    return "acquire" if "#l = :l" in update else "renew"


class Spy:
    """Delegates to a DynamoDB client; lease writes of a kind can be hooked and are counted.

    ``done[kind]`` counts the writes of each kind that have completed (answered or failed).
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.hooks: dict[str, Hook] = {}
        self.done: dict[str, int] = defaultdict(int)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    async def update_item(self, **kwargs: Any) -> Any:
        kind = kind_of(kwargs)
        hook = self.hooks.get(kind)
        try:
            if hook is None:
                return await self.client.update_item(**kwargs)
            return await hook(lambda: self.client.update_item(**kwargs))
        finally:
            self.done[kind] += 1


async def stubborn(started: asyncio.Event, free: asyncio.Event, call: Call) -> Any:
    """A call that ignores cancellation until ``free`` is set, then goes through."""
    started.set()
    while not free.is_set():
        # An uncooperative client: it finishes when it finishes.
        with contextlib.suppress(asyncio.CancelledError):
            await free.wait()
    return await call()


@pytest.fixture
async def store(client: Any, table_name: str) -> AsyncIterator[LockStore]:
    s = LockStore(client, table_name)
    await s.create_table()
    yield s
    await s.aclose()


@pytest.fixture
async def spied(client: Any, table_name: str) -> AsyncIterator[tuple[LockStore, Spy]]:
    spy = Spy(client)
    s = LockStore(spy, table_name)
    await s.create_table()
    yield s, spy
    await s.aclose()


async def holder_of(client: Any, store: LockStore, lease_id: str) -> str | None:
    response = await client.get_item(
        TableName=store.table_name, Key={"LeaseID": {"S": lease_id}}, ConsistentRead=True
    )
    return response["Item"].get("ProcessID", {}).get("S")


async def steal(client: Any, store: LockStore, lease_id: str, thief: str = "thief") -> None:
    """Take the row over behind the locker's back, as another holder would."""
    await client.update_item(
        TableName=store.table_name,
        Key={"LeaseID": {"S": lease_id}},
        UpdateExpression="SET #l = :l, #t = #t + :one",
        ExpressionAttributeNames={"#l": "ProcessID", "#t": "LeaseToken"},
        ExpressionAttributeValues={":l": {"S": thief}, ":one": {"N": "1"}},
    )


async def settle(coro: Awaitable[Any]) -> asyncio.Task[Any]:
    """Run ``coro`` in its own task to the end: a stray CancelledError shows as cancelled()."""
    task = asyncio.ensure_future(coro)
    await asyncio.wait([task])
    return task


def current_task() -> asyncio.Task[Any]:
    task = asyncio.current_task()
    assert task is not None
    return task


# -- item 2: a loss is LeaseLostError, whatever the body raised ------------------------------


@pytest.mark.parametrize("pending", [0, 1], ids=["fresh-task", "task-already-cancelling"])
async def test_loss_under_a_task_group_whose_child_fails_on_cancel_raises_lease_lost(
    client: Any, spied: tuple[LockStore, Spy], pending: int
) -> None:
    store, spy = spied
    await store.add_item("a")
    locker = Locker(store)
    seen: dict[str, int] = {}

    async def child() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise ValueError("the child's cleanup failed") from None

    async def holder() -> None:
        task = current_task()
        for _ in range(pending):  # a cancellation the task caught earlier and kept
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(1)
        entry = task.cancelling()
        try:
            async with (
                locker.lease(request(), heartbeat_period=SHORT / 3),
                asyncio.TaskGroup() as tg,
            ):
                tg.create_task(child())
                await steal(client, store, "a")
                await asyncio.sleep(30)
        finally:
            seen["cancelling"] = task.cancelling() - entry
            seen["released"] = spy.done["release"]

    task = await settle(holder())
    assert not task.cancelled(), "a CancelledError nobody outside asked for left the scope"
    exc = task.exception()
    assert isinstance(exc, LeaseLostError), f"the loss was reported as {exc!r}"
    body = exc.__cause__ or exc.__context__
    assert isinstance(body, ExceptionGroup), "the body's ExceptionGroup is not chained"
    assert body.subgroup(ValueError) is not None
    assert seen["cancelling"] == 0, "the scope left cancellation requests behind"
    assert seen["released"] == 1, "the release on exit was not awaited"
    assert await holder_of(client, store, "a") == "thief"


async def test_body_raising_another_exception_after_a_loss_raises_lease_lost(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a")
    with pytest.raises(LeaseLostError, match="thief") as info:  # noqa: PT012
        async with Locker(store).lease(request(), heartbeat_period=SHORT / 3):
            await steal(client, store, "a")
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                raise RuntimeError("flushing on cancel failed") from None
    assert isinstance(info.value.__cause__, RuntimeError), "the body's exception is not chained"
    assert current_task().cancelling() == 0


async def test_outer_cancellation_during_a_loss_propagates_as_cancelled_error(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a")
    absorbed = asyncio.Event()
    counts: list[int] = []

    async def holder() -> None:
        try:
            async with Locker(store).lease(request(), heartbeat_period=SHORT / 3):
                await steal(client, store, "a")
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    absorbed.set()
                await asyncio.sleep(30)
        except asyncio.CancelledError:
            counts.append(current_task().cancelling())
            raise

    task = asyncio.create_task(holder())
    await absorbed.wait()
    task.cancel()  # from outside, while the body unwinds from the loss
    await asyncio.wait([task])
    assert task.cancelled(), f"the outer cancellation became {task.exception()!r}"
    assert counts == [1], "only the outer cancellation request may be left"


async def test_a_body_that_swallows_an_outer_cancellation_after_a_loss_is_still_cancelled(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a")
    absorbed = asyncio.Event()
    outer_sent = False

    async def holder() -> None:
        async with Locker(store).lease(request(), heartbeat_period=SHORT / 3):
            await steal(client, store, "a")
            while not outer_sent:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(30)
                absorbed.set()
            # returns as if it had finished: neither the loss nor the outer request may
            # end as a success

    task = asyncio.create_task(holder())
    await asyncio.wait_for(absorbed.wait(), 5)
    outer_sent = True
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled(), "a lost scope whose task was cancelled from outside returned"


async def test_keyboard_interrupt_after_a_loss_propagates_unchanged(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a")
    with pytest.raises(KeyboardInterrupt):  # noqa: PT012
        async with Locker(store).lease(request(), heartbeat_period=SHORT / 3):
            await steal(client, store, "a")
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                raise KeyboardInterrupt from None
    assert current_task().cancelling() == 0


# -- item 3: an overrun is a loss ---------------------------------------------------------------


async def test_a_body_that_blocks_past_its_deadline_and_returns_raises_lease_lost(
    store: LockStore,
) -> None:
    await store.add_item("a")
    scope = Locker(store).lease(request(duration=1))
    with pytest.raises(LeaseLostError, match="deadline"):
        async with scope:
            time.sleep(1.2)  # noqa: ASYNC251 - blocks past the 0.9 s deadline, never awaits
    assert scope.lost


async def test_run_never_returns_the_result_of_an_overrun(store: LockStore) -> None:
    await store.add_item("a")

    async def work(lease: Lease) -> str:
        time.sleep(1.2)  # noqa: ASYNC251 - CPU work past the deadline
        return "done"

    result = None
    with pytest.raises(LeaseLostError):
        result = await Locker(store).run(request(duration=1), work)
    assert result is None, "run() returned the result of a body that overran its lease"


# -- item 4: a lease answered after its deadline is not entered ------------------------------


async def test_a_lease_whose_acquisition_was_answered_after_its_deadline_is_not_entered(
    client: Any, spied: tuple[LockStore, Spy]
) -> None:
    store, spy = spied
    await store.add_item("a")

    async def answered_late(call: Call) -> Any:
        response = await call()
        await asyncio.sleep(1.0)  # past the 0.9 s deadline of a 1 s lease
        return response

    spy.hooks["acquire"] = answered_late
    entered = False
    with pytest.raises(LeaseLostError, match="after its local deadline"):
        async with Locker(store).lease(request(duration=1), "a"):
            entered = True
    assert not entered, "the body ran under a lease already past its deadline"
    assert await holder_of(client, store, "a") is None, "the late lease was not released"
    assert current_task().cancelling() == 0


# -- item 5: a body that absorbs the cancellation is cancelled again ---------------------------


async def test_a_body_that_absorbs_the_cancellation_is_cancelled_again(
    client: Any, store: LockStore, caplog: pytest.LogCaptureFixture
) -> None:
    await store.add_item("a")
    caplog.set_level(logging.ERROR, logger="aiolease")
    absorbed_at = 0.0
    with pytest.raises(LeaseLostError):  # noqa: PT012
        async with asyncio.timeout(5):
            async with Locker(store).lease(request(), "a", heartbeat_period=SHORT / 3):
                await steal(client, store, "a")
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    absorbed_at = time.monotonic()
                await asyncio.sleep(30)  # goes on working after the loss
    assert time.monotonic() - absorbed_at < 1.5, "the body was not cancelled again in time"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("'a'" in message for message in errors), f"no error names the lease: {errors}"
    assert current_task().cancelling() == 0


async def test_every_repeated_cancellation_is_uncancelled_on_exit(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a")
    absorbed = 0
    with pytest.raises(LeaseLostError):  # noqa: PT012
        async with Locker(store).lease(request(), heartbeat_period=SHORT / 3):
            await steal(client, store, "a")
            give_up = time.monotonic() + 5
            while absorbed < 3 and time.monotonic() < give_up:
                try:
                    await asyncio.sleep(1)
                except asyncio.CancelledError:
                    absorbed += 1
    assert absorbed == 3, f"the body was cancelled {absorbed} time(s) in 5 s"
    assert current_task().cancelling() == 0, "repeated cancellations were left behind"


# -- item 6: cleanup that outlives its call is owned ---------------------------------------------


async def test_a_detached_release_finishes_before_connect_closes_the_client(
    client: Any, store: LockStore, dynamodb_endpoint: str
) -> None:
    await store.add_item("a")
    entered = asyncio.Event()
    releasing = asyncio.Event()

    async def slow_release(call: Call) -> Any:
        releasing.set()
        await asyncio.sleep(1.0)
        return await call()

    async def worker() -> None:
        async with LockStore.connect(
            store.table_name, endpoint_url=dynamodb_endpoint, session=fake_session()
        ) as own:
            spy = Spy(own.client)
            spy.hooks["release"] = slow_release
            own.client = spy
            async with Locker(own).lease(request(duration=3), "a"):
                entered.set()
                await asyncio.Event().wait()

    task = asyncio.create_task(worker())
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()  # the body is cancelled; the scope starts releasing
    await asyncio.wait_for(releasing.wait(), 5)
    task.cancel()  # a second cancellation detaches the release from the scope
    await asyncio.wait([task])
    assert task.cancelled()
    assert await holder_of(client, store, "a") is None, "the release ran on a closed client"


async def test_leaving_a_locker_waits_for_its_detached_releases(
    client: Any, spied: tuple[LockStore, Spy]
) -> None:
    store, spy = spied
    await store.add_item("a")
    entered = asyncio.Event()
    releasing = asyncio.Event()

    async def slow_release(call: Call) -> Any:
        releasing.set()
        await asyncio.sleep(0.5)
        return await call()

    spy.hooks["release"] = slow_release

    async def worker() -> None:
        async with Locker(store) as locker, locker.lease(request(duration=3), "a"):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(worker())
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    await asyncio.wait_for(releasing.wait(), 5)
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled()
    assert spy.done["release"] == 1, "leaving the locker did not wait for the release"
    assert await holder_of(client, store, "a") is None


async def test_locker_aclose_is_bounded(
    spied: tuple[LockStore, Spy], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store, spy = spied
    await store.add_item("a")
    monkeypatch.setattr(aiolease._locker, "_CLOSE_TIMEOUT", 0.5)
    entered, releasing, free = asyncio.Event(), asyncio.Event(), asyncio.Event()
    spy.hooks["release"] = lambda call: stubborn(releasing, free, call)
    locker = Locker(store)

    async def worker() -> None:
        async with locker.lease(request(duration=3), "a"):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(worker())
    try:
        await asyncio.wait_for(entered.wait(), 5)
        task.cancel()
        await asyncio.wait_for(releasing.wait(), 5)
        task.cancel()
        await asyncio.wait([task])
        started = time.monotonic()
        await asyncio.wait_for(locker.aclose(), 3)
        assert time.monotonic() - started < 1.5, "aclose waited past its bound"
        assert any("release" in r.getMessage() for r in caplog.records if r.levelno >= 30)
    finally:
        free.set()


async def test_leaving_a_scope_does_not_wait_for_a_stuck_heartbeat(
    client: Any, spied: tuple[LockStore, Spy]
) -> None:
    store, spy = spied
    await store.add_item("a")
    renewing, free = asyncio.Event(), asyncio.Event()
    spy.hooks["renew"] = lambda call: stubborn(renewing, free, call)
    try:
        async with asyncio.timeout(5):
            async with Locker(store).lease(request(duration=3), "a", heartbeat_period=0.3):
                await renewing.wait()  # the renewal now ignores cancellation
            assert await holder_of(client, store, "a") is None
    finally:
        free.set()


# -- item 14: the store's clock, release log, warning stack level ---------------------------------


async def test_a_hand_built_lease_counts_its_deadline_on_the_stores_clock(
    client: Any, store: LockStore
) -> None:
    await store.add_item("a")
    hour_behind = LockStore(client, store.table_name, clock=lambda: time.time_ns() - 3600 * 10**9)
    lease = await hour_behind.lease("a", request(duration=2))
    by_hand = dataclasses.replace(lease, _sent_at=0.0)  # no send time: the stored expiry counts
    beat = asyncio.create_task(Locker(hour_behind).heartbeat(by_hand, 0.5))
    await asyncio.wait([beat], timeout=1.0)
    try:
        assert not beat.done(), f"the heartbeat ended: {beat.exception()!r}"
    finally:
        beat.cancel()
        await asyncio.wait([beat])


async def test_a_timed_out_release_logs_why(
    spied: tuple[LockStore, Spy], caplog: pytest.LogCaptureFixture
) -> None:
    store, spy = spied
    await store.add_item("a")

    async def hang(call: Call) -> Any:
        await asyncio.Event().wait()

    caplog.set_level(logging.WARNING, logger="aiolease")
    async with Locker(store).lease(request(duration=1), "a"):
        spy.hooks["release"] = hang
    messages = [r.getMessage() for r in caplog.records if "could not release" in r.getMessage()]
    assert len(messages) == 1 and "timed out after 1" in messages[0], messages


def test_the_heartbeat_period_warning_of_lease_points_at_the_caller(store: LockStore) -> None:
    with pytest.warns(RuntimeWarning, match="fewer than 3 renewal") as record:
        Locker(store).lease(request(duration=3), heartbeat_period=1.5)
    assert record[0].filename == __file__, record[0].filename


async def test_the_heartbeat_period_warning_of_run_points_at_the_caller(store: LockStore) -> None:
    await store.add_item("a")

    async def work(lease: Lease) -> None:
        pass

    with pytest.warns(RuntimeWarning, match="fewer than 3 renewal") as record:
        await Locker(store).run(request(duration=3), work, heartbeat_period=1.5)
    assert record[0].filename == __file__, record[0].filename


async def test_the_heartbeat_period_warning_of_heartbeat_points_at_the_caller(
    store: LockStore,
) -> None:
    await store.add_item("a")
    locker = Locker(store)
    lease = await locker.obtain_lease(request(duration=3))
    with (
        pytest.warns(RuntimeWarning, match="fewer than 3 renewal") as record,
        pytest.raises(TimeoutError),
    ):
        async with asyncio.timeout(0.2):
            await locker.heartbeat(lease, 1.5)
    assert record[0].filename == __file__, record[0].filename


# -- item 15: a lease taken during the body is a loss, even if no heartbeat saw it ------------


@pytest.mark.parametrize("body_raises", [False, True], ids=["returns", "raises"])
async def test_a_lease_taken_during_a_short_body_raises_lease_lost(
    client: Any, store: LockStore, body_raises: bool
) -> None:
    await store.add_item("a")
    operator = LockStore(client, store.table_name)
    scope = Locker(store).lease(request(duration=3), "a")
    with pytest.raises(LeaseLostError) as info:  # noqa: PT012
        async with scope:
            await operator.force_release("a")
            await operator.acquire("a", request("thief", 30))
            if body_raises:
                raise ValueError("the body failed too")
    assert scope.lost, "scope.lost is false after the lease was taken during the body"
    if body_raises:
        assert isinstance(info.value.__cause__, ValueError)
    assert await holder_of(client, store, "a") == "thief"
    assert current_task().cancelling() == 0


async def test_an_outer_cancel_during_the_release_is_not_swallowed_after_the_body_uncancelled(
    spied: tuple[LockStore, Spy],
) -> None:
    # The task enters with a cancellation request pending (cancelling() == 1) and the body
    # settles it with uncancel(). A new cancellation from outside that arrives while the
    # scope waits for its release must still end the task, not pass for a leftover of ours.
    store, spy = spied
    await store.add_item("a")
    releasing = asyncio.Event()

    async def slow_release(call: Call) -> Any:
        releasing.set()
        await asyncio.sleep(0.5)
        return await call()

    spy.hooks["release"] = slow_release
    locker = Locker(store)

    async def worker() -> None:
        task = current_task()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)
        assert task.cancelling() == 1
        async with locker.lease(request(duration=3), "a"):
            task.uncancel()  # the body handles the old request
        await asyncio.sleep(1.0)  # reached only if the outer cancellation was swallowed

    task = asyncio.create_task(worker())
    await asyncio.wait_for(releasing.wait(), 5)
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled(), "a cancellation from outside during the release was swallowed"
    await locker.aclose()


async def test_a_release_whose_answer_was_lost_is_not_a_loss_when_a_newer_holder_took_the_row(
    client: Any, table_name: str
) -> None:
    # The release lands, its answer is lost, a waiter takes the freed row, and the retry is
    # refused by the newer holder. Whether that holder took the row after our release or from
    # us before cannot be known: the scope must not invent a loss (item 15 is about a release
    # that *finds* the lease gone, not one whose outcome is unknown). The store's clock steps
    # past our expiry before the read-back, where a guess by the clock said "lost".
    offset = 0

    def clock() -> int:
        return time.time_ns() + offset

    spy = Spy(client)
    store = LockStore(spy, table_name, clock=clock)
    await store.create_table()
    await store.add_item("a")
    taker = LockStore(client, table_name)

    async def lose_the_answer(call: Call) -> Any:
        nonlocal offset
        spy.hooks.pop("release")
        await call()
        await taker.acquire("a", request("taker", 30))
        offset = 10 * 10**9
        raise ConnectionResetError("the answer was lost")

    locker = Locker(store)
    scope = locker.lease(request(duration=3), "a")
    async with scope:
        spy.hooks["release"] = lose_the_answer
    assert not scope.lost, "an undecidable release was reported as a loss"
    assert await holder_of(client, store, "a") == "taker"
    await locker.aclose()
    await store.aclose()
