"""Review of handoff on request (branch review3): the requests of one look sent together.

Decision tests with the stand-in session of ``test_handoff_review``: the writes are
recorded (or made to hang, or fail) instead of sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from aiolease import LeaseItem, LeaseUnavailableError
from aiolease._handoff import HANDOFF_PERIODS, WITHDRAW_TIMEOUT, Handoffs, Pool
from aiolease._wire.handoff import Handoff

from .test_handoff_review import Recorder, held, stand_in


def two_above() -> Pool:
    """6 items, members sa < sb < sc: shares 2 each; sa and sb hold 3 (one above), sc 0."""
    items = [held(f"a{n}", "sa") for n in range(3)] + [held(f"b{n}", "sb") for n in range(3)]
    return Pool(items, ["sa", "sb", "sc"], {})


class Hangs(Recorder):
    """Every request lands, then its call hangs (cancelled only from outside)."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.both = asyncio.Event()

    async def request_handoff(self, item: LeaseItem, requester: str, until_ns: int) -> bool:
        await super().request_handoff(item, requester, until_ns)
        self.in_flight += 1
        if self.in_flight == 2:
            self.both.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.in_flight -= 1
        return True


async def test_cancelled_while_the_requests_of_a_look_are_in_flight_every_one_is_noted() -> None:
    store = Hangs()
    handoffs = Handoffs(stand_in("sc", store), 0.2, 0.5)
    asking = asyncio.create_task(handoffs.ask(two_above(), 2, 0, {}, ()))
    async with asyncio.timeout(2):
        await store.both.wait()
    asking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asking
    # gather's children were cancelled and awaited before the cancellation reached us.
    assert store.in_flight == 0, "a request's call outlived the cancelled look"
    assert (
        sorted(handoffs.asked) == sorted(i for i, _ in store.requested) and len(handoffs.asked) == 2
    ), (handoffs.asked, store.requested)
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert all(t.done() for t in others), others
    # ... so that the stop withdraws both.
    store.withdrawn.clear()
    await handoffs.withdraw_all("stopped")
    assert sorted(store.withdrawn) == sorted(i for i, _ in store.requested)


class FailsFor(Recorder):
    """The request to ``holder`` fails (its outcome unknown); the others land."""

    def __init__(self, holder: str) -> None:
        super().__init__()
        self.holder = holder

    async def request_handoff(self, item: LeaseItem, requester: str, until_ns: int) -> bool:
        await super().request_handoff(item, requester, until_ns)
        await asyncio.sleep(0)
        if item.lessee_id == self.holder:
            raise LeaseUnavailableError("throttled", lease_id=item.lease_id)
        return True


async def test_one_request_failing_leaves_the_others_of_the_look_tracked_and_announced() -> None:
    store = FailsFor("sa")
    session = stand_in("sc", store)
    heard: list[tuple[str, str]] = []
    session._keeper.events.emit_item = lambda kind, item_id, *a: heard.append(
        (kind.__name__, item_id)
    )
    handoffs = Handoffs(session, 0.2, 0.5)
    with pytest.raises(LeaseUnavailableError):
        await handoffs.ask(two_above(), 2, 0, {}, ())
    [(a_item, _)] = [r for r in store.requested if r[1] == "sa"]
    [(b_item, _)] = [r for r in store.requested if r[1] == "sb"]
    assert b_item in handoffs.asked and heard == [("HandoffRequested", b_item)], heard
    # The failed one may have landed: kept noted (withdrawn on stop if it did).
    assert a_item in handoffs.asked


async def test_a_request_whose_write_failed_is_not_taken_for_a_decline() -> None:
    # The write to sa raised (throttled: it did not land). The next read shows no request
    # on the item, which _forget_answered reads as "withdrawn by the holder" and leaves sa
    # alone for HANDOFF_PERIODS wait periods, although sa never answered: the requester
    # stays short that long with sa still above its share.
    store = FailsFor("sa")
    handoffs = Handoffs(stand_in("sc", store), 0.2, 0.5)
    pool = two_above()
    with pytest.raises(LeaseUnavailableError):
        await handoffs.ask(pool, 2, 0, {}, ())
    [(b_item, _)] = [r for r in store.requested if r[1] == "sb"]
    # Next look: sb's request stands, sa's never landed; sa is still one above its share.
    standing = {b_item: Handoff("sc", handoffs.asked[b_item].until_ns)}
    store.holder = "nobody"
    store.requested.clear()
    await handoffs.ask(Pool(pool.items, pool.live, standing), 2, 0, {}, ())
    assert [h for _, h in store.requested] == ["sa"], (
        f"sa not asked again (paused {HANDOFF_PERIODS} wait periods as if it declined)"
    )


class Slow(Recorder):
    """Every write takes ``delay`` seconds (a loaded table: the benchmark's joiner saw about
    0.7 s a round trip)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def request_handoff(self, item: LeaseItem, requester: str, until_ns: int) -> bool:
        await asyncio.sleep(self.delay)
        return await super().request_handoff(item, requester, until_ns)

    async def withdraw_handoff(self, item_id: str, requester: str, until_ns: Any = None) -> bool:
        await asyncio.sleep(self.delay)
        return await super().withdraw_handoff(item_id, requester, until_ns)


async def test_the_requests_one_look_sends_together_are_withdrawn_on_stop_within_the_bound() -> (
    None
):
    # 5 members above their share, a joiner short by 5: one look sends 5 requests at once
    # (one round trip). serve()'s stop withdraws them one after another under
    # WITHDRAW_TIMEOUT (2 s): at 0.7 s a round trip only 2 go, the other 3 stand on their
    # items (reserved for a session that no longer serves) until they expire.
    # 25 items over 6 members: shares s0 5 (first by ID), sa..se 4; each of those holds 5.
    items = [held(f"{m}{n}", f"s{m}") for m in "abcde" for n in range(5)]
    pool = Pool(items, ["s0", "sa", "sb", "sc", "sd", "se"], {})
    store = Slow(0.7)
    handoffs = Handoffs(stand_in("s0", store), 0.2, 0.5)
    await handoffs.ask(pool, target=5, held=0, planned={}, taking=())
    assert len(handoffs.asked) == 5, store.requested
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(handoffs.withdraw_all("stopped"), WITHDRAW_TIMEOUT)
    assert not handoffs.asked, f"left standing on stop: {sorted(handoffs.asked)}"
