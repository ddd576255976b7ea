"""Lifecycle events against the moto server: order, content, slow and failing subscribers."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any

import pytest

from aiolease import (
    EventStream,
    Lease,
    LeaseAcquired,
    LeaseAtRisk,
    LeaseEvent,
    LeaseLost,
    LeaseLostError,
    LeaseReleased,
    LeaseRenewed,
    LeaseRequest,
    LeaseTakenOver,
    LeaseUnavailableError,
    Locker,
    LockStore,
    RenewalFailed,
    SessionLost,
)
from aiolease import _heartbeat as heartbeat_module
from aiolease._events import Events
from aiolease._heartbeat import RETRY_BASE, Hold

from . import faults
from .faults import FaultyClient
from .test_locker import steal

WAIT = 10.0  # seconds: the bound on waiting for an event that should come within ~1 s


@pytest.fixture
async def faulty_store(
    client: Any, table_name: str
) -> AsyncIterator[tuple[LockStore, FaultyClient]]:
    """A store on a fresh (scan-layout) table whose client injects the faults a test queues."""
    proxy = FaultyClient(client)
    store = LockStore(proxy, table_name)
    await store.create_table()
    await store.add_item("a")
    yield store, proxy
    await store.aclose()


async def until(stream: EventStream, kind: type[LeaseEvent]) -> list[LeaseEvent]:
    """The events read from ``stream`` up to and including the first ``kind``."""
    seen: list[LeaseEvent] = []
    async with asyncio.timeout(WAIT):
        async for event in stream:
            seen.append(event)
            if isinstance(event, kind):
                return seen
    raise AssertionError(f"the stream ended before a {kind.__name__}: {seen}")


def kinds(events: list[LeaseEvent]) -> list[str]:
    return [type(event).__name__ for event in events]


async def test_a_scope_sends_acquired_renewed_and_released_in_order(
    faulty_store: tuple[LockStore, FaultyClient],
) -> None:
    store, _ = faulty_store
    locker = Locker(store)
    async with locker.events() as stream:
        async with locker.lease(LeaseRequest("w1", 2), heartbeat_period=0.3) as lease:
            seen = await until(stream, LeaseRenewed)
            seen += await until(stream, LeaseRenewed)
            current = locker_lease = lease
        seen += await until(stream, LeaseReleased)
    assert kinds(seen) == ["LeaseAcquired", "LeaseRenewed", "LeaseRenewed", "LeaseReleased"]
    acquired, first, second, released = seen
    for event in seen:
        assert (event.table, event.lease_id, event.lessee_id, event.token) == (
            store.table_name,
            "a",
            "w1",
            1,
        ), f"{event} names the wrong lease"
        assert event.time.tzinfo is UTC
    assert isinstance(acquired, LeaseAcquired) and not isinstance(acquired, LeaseTakenOver)
    assert acquired.until == current.until == locker_lease.until
    assert isinstance(first, LeaseRenewed) and isinstance(second, LeaseRenewed)
    assert acquired.until < first.until < second.until, "renewals must move the expiry"
    assert acquired.time <= first.time <= second.time <= released.time
    assert stream.closed and stream.dropped == 0


async def test_failing_renewals_send_renewal_failed_then_at_risk_once_then_lost(
    faulty_store: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = faulty_store
    locker = Locker(store)
    period = 0.4
    async with locker.events() as stream:
        with pytest.raises(LeaseLostError, match="deadline"):  # noqa: PT012
            async with locker.lease(LeaseRequest("w1", 2), heartbeat_period=period):
                await until(stream, LeaseAcquired)
                proxy.always("update_item", faults.server_error)
                try:
                    await asyncio.sleep(WAIT)  # cancelled by the loss
                finally:
                    proxy.always("update_item", None)
        seen = await until(stream, LeaseReleased)
    failed = [e for e in seen if isinstance(e, RenewalFailed)]
    risky = [e for e in seen if isinstance(e, LeaseAtRisk)]
    assert failed, f"no RenewalFailed before the loss: {kinds(seen)}"
    assert [e.attempt for e in failed] == list(range(1, len(failed) + 1))
    assert all("InternalServerError" in e.error for e in failed), failed[0].error
    lefts = [e.time_left for e in failed]
    assert lefts == sorted(lefts, reverse=True), "time left must shrink with each attempt"
    assert len(risky) == 1, f"LeaseAtRisk must come once per renewal: {kinds(seen)}"
    at = seen.index(risky[0])
    before = seen[at - 1]
    assert isinstance(before, RenewalFailed) and before.time_left == risky[0].time_left

    def wait(attempt: int) -> float:
        """The longest wait after failed attempt ``attempt``: doubling, capped at a third."""
        return min(RETRY_BASE * 2 ** (attempt - 1), 2 / 3)

    # At risk: after the wait, the next attempt would be sent with under a period to go.
    assert 0 < risky[0].time_left < period + wait(before.attempt)
    assert all(
        e.time_left >= period + wait(e.attempt) for e in failed if e.attempt < before.attempt
    ), "an earlier failure already left under a period for its next attempt"
    assert kinds(seen).count("LeaseLost") == 1, f"a loss is reported once: {kinds(seen)}"
    lost = next(e for e in seen if isinstance(e, LeaseLost))
    assert lost.reason == "local deadline passed" and lost.new_holder is None
    assert at < seen.index(lost), "at risk comes before the loss"
    assert isinstance(seen[-1], LeaseReleased), "the row was still ours: released on exit"


async def test_a_failure_is_at_risk_once_the_next_attempt_would_start_under_a_period_left(
    faulty_store: tuple[LockStore, FaultyClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = faulty_store
    locker = Locker(store)
    keeper = locker._keeper
    lease = await store.acquire("a", LeaseRequest("w1", 3))
    # The first wait is then a third of the lease, 1 s, like the period: a failure with 1.5 s
    # left is more than a period away from the deadline, but the next attempt would be sent
    # with 0.5-1 s to go, under a period. (A fixed deadline: the test does not wait on it.)
    monkeypatch.setattr(heartbeat_module, "RETRY_BASE", 1.0)
    hold = Hold(lease, keeper.clock.monotonic() + 1.5)
    attempts = 0

    async def renew(lease: Lease) -> Lease:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise LeaseUnavailableError("injected", lease_id=lease.lease_id)
        raise LeaseLostError("injected", lease_id=lease.lease_id, reason="injected")

    async with locker.events() as stream:
        with pytest.raises(LeaseLostError):
            await keeper.renew(hold, 1.0, renew)
        seen = await until(stream, LeaseLost)
    assert kinds(seen) == ["RenewalFailed", "LeaseAtRisk", "LeaseLost"], kinds(seen)
    failed, risky = seen[0], seen[1]
    assert isinstance(failed, RenewalFailed) and isinstance(risky, LeaseAtRisk)
    assert failed.attempt == 1 and 1.0 < risky.time_left <= 1.5


async def test_a_lease_taken_by_another_is_lost_with_the_new_holder_and_not_released(
    client: Any, faulty_store: tuple[LockStore, FaultyClient]
) -> None:
    store, _ = faulty_store
    locker = Locker(store)
    got: list[LeaseEvent] = []
    locker.add_listener(got.append)
    async with locker.events() as stream:
        with pytest.raises(LeaseLostError, match="thief"):  # noqa: PT012
            async with locker.lease(LeaseRequest("w1", 2), heartbeat_period=0.3):
                await until(stream, LeaseAcquired)
                await steal(client, store, "a")
                await asyncio.sleep(WAIT)  # cancelled by the loss
        streamed = await until(stream, LeaseLost)
    await asyncio.sleep(0)  # listeners run soon after the event, not inline
    assert kinds(streamed) == kinds(got)[1:], "listeners and streams get the same events"
    assert kinds(got)[0] == "LeaseAcquired" and kinds(got)[-1] == "LeaseLost", kinds(got)
    lost = got[-1]
    assert isinstance(lost, LeaseLost)
    assert (lost.reason, lost.new_holder, lost.token) == ("taken over by 'thief'", "thief", 1)
    assert "LeaseReleased" not in kinds(got), "the row was not ours to release"


async def test_taking_an_expired_lease_sends_taken_over_with_the_previous_holder(
    faulty_store: tuple[LockStore, FaultyClient],
) -> None:
    store, _ = faulty_store
    old = await Locker(store).obtain_lease(LeaseRequest("crashed", 0.3))  # never renewed
    taker = Locker(store, max_clock_skew=0.0)
    async with taker.events() as stream:
        lease = await taker.wait_until_lease_obtained(LeaseRequest("w2", 2), 0.1)
        seen = await until(stream, LeaseAcquired)
    assert kinds(seen) == ["LeaseTakenOver"]
    taken = seen[0]
    assert isinstance(taken, LeaseTakenOver)
    assert (taken.previous_holder, taken.lessee_id, taken.token) == ("crashed", "w2", 2)
    assert taken.token == old.fencing_token + 1 == lease.fencing_token
    await store.release(lease)


async def test_a_free_item_taken_in_observe_mode_is_a_plain_acquisition(
    faulty_store: tuple[LockStore, FaultyClient],
) -> None:
    store, _ = faulty_store
    locker = Locker(store, takeover="observe")
    async with locker.events() as stream:
        lease = await locker.obtain_lease(LeaseRequest("w1", 2))
        seen = await until(stream, LeaseAcquired)
    assert kinds(seen) == ["LeaseAcquired"]
    await store.release(lease)


async def test_a_slow_subscriber_drops_the_oldest_events_and_never_delays_renewals(
    faulty_store: tuple[LockStore, FaultyClient], caplog: pytest.LogCaptureFixture
) -> None:
    store, _ = faulty_store
    locker = Locker(store)
    renewals: list[LeaseRenewed] = []
    enough = asyncio.Event()

    def count(event: LeaseEvent) -> None:
        if isinstance(event, LeaseRenewed):
            renewals.append(event)
            if len(renewals) == 4:
                enough.set()

    locker.add_listener(count)
    slow = locker.events(max_buffer=2)  # never read while the lease lives
    with caplog.at_level(logging.WARNING, logger="aiolease"):
        async with slow, locker.lease(LeaseRequest("w1", 2), heartbeat_period=0.2):
            await asyncio.wait_for(enough.wait(), WAIT)
        held = [event async for event in slow]  # what the closed stream had kept
    assert slow.dropped == 1 + len(renewals) + 1 - 2, (
        f"acquired, {len(renewals)} renewals and released into a buffer of 2: "
        f"dropped {slow.dropped}"
    )
    assert kinds(held) == ["LeaseRenewed", "LeaseReleased"]
    assert held[0] == renewals[-1], "the buffer must keep the newest events, not the oldest"
    drops = [r for r in caplog.records if "buffer is full" in r.getMessage()]
    assert len(drops) == 1, "the first drop of an overflow is logged, not every one"
    assert any("dropped" in r.getMessage() for r in caplog.records if r is not drops[0])


async def test_a_raising_listener_is_logged_once_and_the_heartbeat_keeps_renewing(
    faulty_store: tuple[LockStore, FaultyClient], caplog: pytest.LogCaptureFixture
) -> None:
    store, _ = faulty_store
    locker = Locker(store)
    renewed = 0
    enough = asyncio.Event()

    def broken(event: LeaseEvent) -> None:
        raise RuntimeError("listener bug")

    def count(event: LeaseEvent) -> None:
        nonlocal renewed
        if isinstance(event, LeaseRenewed):
            renewed += 1
            if renewed == 3:
                enough.set()

    locker.add_listener(broken)
    locker.add_listener(count)
    with caplog.at_level(logging.ERROR, logger="aiolease"):
        async with locker.lease(LeaseRequest("w1", 2), heartbeat_period=0.2) as lease:
            await asyncio.wait_for(enough.wait(), WAIT)
    assert lease.fencing_token == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "broken" in errors[0].getMessage() and errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], RuntimeError)


async def test_a_removed_listener_gets_nothing_more(
    faulty_store: tuple[LockStore, FaultyClient],
) -> None:
    store, _ = faulty_store
    locker = Locker(store)
    got: list[LeaseEvent] = []
    remove = locker.add_listener(got.append)
    async with locker.events() as stream:
        async with locker.lease(LeaseRequest("w1", 2)):
            await until(stream, LeaseAcquired)
            await asyncio.sleep(0)  # the listener's turn
            remove()
            remove()  # twice is fine
        await until(stream, LeaseReleased)
    await asyncio.sleep(0)
    assert kinds(got) == ["LeaseAcquired"]


# -- delivery, without a server --------------------------------------------------------


class _Clock:
    def wall_ns(self) -> int:
        return 1_700_000_000_000_000_000

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()


def _lease() -> Any:
    from datetime import datetime

    from aiolease import Lease

    return Lease("x", LeaseRequest("w", 3), datetime.now(UTC), 7)


async def test_listeners_run_soon_after_the_event_never_inline() -> None:
    hub = Events("t", _Clock())
    got: list[LeaseEvent] = []
    hub.add_listener(got.append)
    hub.renewed(_lease(), 0.01)
    assert got == [], "a listener ran inside the renewal path"
    await asyncio.sleep(0)
    assert kinds(got) == ["LeaseRenewed"]
    assert (got[0].lease_id, got[0].token, got[0].table) == ("x", 7, "t")


async def test_no_event_is_built_when_nobody_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an event was built with nobody listening")

    monkeypatch.setattr(Events, "_build", refuse)
    hub = Events("t", _Clock())
    lease = _lease()
    hub.acquired(lease, 0.0)
    hub.renewed(lease, 0.01)
    hub.renewal_failed(lease, 1, 0.01, 1.0, RuntimeError("x"))
    assert hub.at_risk(lease, 0.1, 1.0) is True
    hub.lost(lease, "overrun")
    hub.released(lease)
    hub.emit(SessionLost, lease, reason="x")
    hub.add_listener(lambda event: None)
    with pytest.raises(AssertionError, match="nobody listening"):
        hub.renewed(lease, 0.01)


async def test_a_stream_ends_after_close_with_what_it_had_buffered() -> None:
    hub = Events("t", _Clock())
    stream = hub.stream(10)
    hub.emit(SessionLost, _lease(), reason="expired")
    stream.close()
    hub.released(_lease())  # after the close: not received
    got = [event async for event in stream]
    assert kinds(got) == ["SessionLost"]
    assert isinstance(got[0], SessionLost) and got[0].reason == "expired"


def test_bad_listeners_and_buffers_are_refused() -> None:
    hub = Events("t", _Clock())

    with pytest.raises(TypeError, match="callable"):
        hub.add_listener("print")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_buffer"):
        hub.stream(0)
    with pytest.raises(TypeError, match="max_buffer"):
        hub.stream(1.5)  # type: ignore[arg-type]


def test_events_are_frozen() -> None:
    from dataclasses import FrozenInstanceError
    from datetime import datetime

    event = LeaseReleased(time=datetime.now(UTC), table="t", lease_id="a", lessee_id="w", token=1)
    with pytest.raises(FrozenInstanceError):
        event.token = 2  # type: ignore[misc]


async def test_a_renewal_ending_in_a_table_error_is_counted_as_a_lost_renewal(
    faulty_store: tuple[LockStore, FaultyClient],
) -> None:
    pytest.importorskip("opentelemetry.sdk.metrics")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    store, proxy = faulty_store
    reader = InMemoryMetricReader()
    locker = Locker(store, meter_provider=MeterProvider(metric_readers=[reader]))

    async def denied() -> Any:
        raise faults.client_error("AccessDeniedException")

    with pytest.raises(LeaseLostError, match="table"):  # noqa: PT012
        async with locker.lease(LeaseRequest("w1", 2), heartbeat_period=0.2):
            proxy.always("update_item", lambda call: denied())
            try:
                await asyncio.sleep(WAIT)  # cancelled by the loss
            finally:
                proxy.always("update_item", None)
    data = reader.get_metrics_data()
    assert data is not None
    points = {
        m.name: list(m.data.data_points)  # type: ignore[union-attr]
        for r in data.resource_metrics
        for s in r.scope_metrics
        for m in s.metrics
    }
    assert sum(p.value for p in points["aiolease.losses"]) == 1  # type: ignore[union-attr]
    outcomes = {
        dict(p.attributes or {}).get("aiolease.outcome"): p.value  # type: ignore[union-attr]
        for p in points.get("aiolease.renewals", [])
    }
    assert outcomes.get("lost") == 1, f"the table error's attempt is not counted: {outcomes}"
    durations = {
        dict(p.attributes or {}).get("aiolease.outcome"): p.count  # type: ignore[union-attr]
        for p in points.get("aiolease.renewal.duration", [])
    }
    assert durations.get("lost") == 1, f"nor timed in aiolease.renewal.duration: {durations}"


async def test_a_slow_async_listener_never_costs_a_lease(
    faulty_store: tuple[LockStore, FaultyClient],
) -> None:
    store, _ = faulty_store
    locker = Locker(store)
    renewals = 0
    enough = asyncio.Event()
    slow_calls: list[str] = []

    async def slow(event: LeaseEvent) -> None:
        slow_calls.append(type(event).__name__)
        await asyncio.sleep(1.9)  # nearly the whole 2 s lease, for every event

    def count(event: LeaseEvent) -> None:
        nonlocal renewals
        if isinstance(event, LeaseRenewed):
            renewals += 1
            if renewals == 12:  # 2.4 s of heartbeats: past the first lease's expiry
                enough.set()

    remove = locker.add_listener(slow)
    locker.add_listener(count)
    # A loss would cancel the body: LeaseLostError out of the scope.
    async with locker.lease(LeaseRequest("w1", 2), heartbeat_period=0.2):
        await asyncio.wait_for(enough.wait(), WAIT)
    remove()  # its waiting events are discarded; the call in progress ends by itself
    async with asyncio.timeout(WAIT):
        await locker.aclose()  # the listener's task is the locker's: awaited, none left
    assert slow_calls[:2] == ["LeaseAcquired", "LeaseRenewed"], slow_calls
    assert len(slow_calls) < renewals, "the slow listener was not running one event at a time"


async def test_a_slow_plain_listener_is_logged_once_with_its_name_and_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = Events("t", _Clock())

    def blocking(event: LeaseEvent) -> None:
        time.sleep(0.15)  # blocks the loop: what the warning is about

    hub.add_listener(blocking)
    with caplog.at_level(logging.WARNING, logger="aiolease"):
        hub.renewed(_lease(), 0.01)
        hub.renewed(_lease(), 0.01)
        await asyncio.sleep(0)
    slow = [r for r in caplog.records if "blocking the event loop" in r.getMessage()]
    assert len(slow) == 1, [r.getMessage() for r in caplog.records]
    message = slow[0].getMessage()
    assert slow[0].levelno == logging.WARNING and "blocking" in message, message
    assert re.search(r"took 0\.1[5-9] s|took 0\.[2-9]\d s", message), message


async def test_an_async_listener_gets_each_event_in_order_one_call_at_a_time() -> None:
    hub = Events("t", _Clock())
    got: list[str] = []
    running = 0
    done = asyncio.Event()

    async def listener(event: LeaseEvent) -> None:
        nonlocal running
        running += 1
        assert running == 1, "two calls of one async listener overlapped"
        await asyncio.sleep(0)
        got.append(type(event).__name__)
        running -= 1
        if isinstance(event, LeaseReleased):
            done.set()

    hub.add_listener(listener)
    hub.acquired(_lease(), 0.0)
    hub.renewed(_lease(), 0.01)
    hub.released(_lease())
    await asyncio.wait_for(done.wait(), WAIT)
    assert got == ["LeaseAcquired", "LeaseRenewed", "LeaseReleased"]


async def test_a_removed_listener_is_not_called_with_an_event_sent_before_its_removal() -> None:
    hub = Events("t", _Clock())
    got: list[LeaseEvent] = []
    remove = hub.add_listener(got.append)
    hub.renewed(_lease(), 0.01)  # its delivery is queued (call_soon)
    remove()
    await asyncio.sleep(0)
    assert got == [], "called after remove() returned"


async def test_a_listener_raising_cancelled_error_is_logged_and_the_next_still_called(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # e.g. a listener calling .result() on a cancelled future raises CancelledError.
    hub = Events("t", _Clock())
    got: list[LeaseEvent] = []

    def cancelled(event: LeaseEvent) -> None:
        raise asyncio.CancelledError

    hub.add_listener(cancelled)
    hub.add_listener(got.append)
    with caplog.at_level(logging.ERROR, logger="aiolease"):
        hub.renewed(_lease(), 0.01)
        hub.renewed(_lease(), 0.01)
        await asyncio.sleep(0)
    assert len(got) == 2, "the second listener never got the events"
    errors = [r for r in caplog.records if "cancelled" in r.getMessage()]
    assert len(errors) == 1, [r.getMessage() for r in caplog.records]


async def test_a_stream_left_by_break_unsubscribes_once_unreferenced() -> None:
    hub = Events("t", _Clock())

    async def first() -> LeaseEvent:
        async for event in hub.stream(1000):
            return event  # leaves the stream without close()
        raise AssertionError("the stream ended")

    task = asyncio.ensure_future(first())
    await asyncio.sleep(0)
    hub.renewed(_lease(), 0.01)
    await task
    del task
    gc.collect()
    assert not hub.listened, f"an abandoned stream is still subscribed: {hub._streams}"


async def test_a_second_concurrent_consumer_of_one_stream_is_refused() -> None:
    hub = Events("t", _Clock())
    async with hub.stream(10) as stream:
        first = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)  # the first consumer waits
        with pytest.raises(RuntimeError, match="already being iterated"):
            await asyncio.wait_for(anext(stream), WAIT)
        hub.renewed(_lease(), 0.01)
        assert isinstance(await asyncio.wait_for(first, WAIT), LeaseRenewed)
        hub.released(_lease())
        after = await asyncio.wait_for(anext(stream), WAIT)
        assert isinstance(after, LeaseReleased), "one consumer after another is fine"


async def test_a_waiting_consumer_task_nobody_references_keeps_its_stream() -> None:
    hub = Events("t", _Clock())
    got: list[LeaseEvent] = []
    done = asyncio.Event()

    async def consume() -> None:
        async for event in hub.stream(10):
            got.append(event)
            done.set()

    asyncio.ensure_future(consume())  # noqa: RUF006 - the point: no reference kept
    await asyncio.sleep(0)  # it waits for an event
    gc.collect()
    hub.renewed(_lease(), 0.01)
    await asyncio.wait_for(done.wait(), WAIT)
    assert kinds(got) == ["LeaseRenewed"]
    for ref in hub._streams:
        stream = ref()
        if stream is not None:
            stream.close()
    await asyncio.sleep(0)
