"""Review findings on handoff on request (branch review2): each test fails on ``handoff``.

The decision tests drive ``Handoffs`` with a stand-in session that records the writes
(the choice of whom to ask is a pure function of the read); the write tests run on the
moto server.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from aiolease import Lease, LeaseItem, LeaseRequest, LockStore
from aiolease._handoff import Handoffs, Pool, _Ask
from aiolease._wire.handoff import Handoff

DURATION = 2.0


class Recorder:
    """A stand-in for a session's store: records requests and withdrawals, lands them all."""

    def __init__(self) -> None:
        self.requested: list[tuple[str, str]] = []  # (item, holder)
        self.withdrawn: list[str] = []
        self.during_withdraw: Any = None  # called inside the first withdrawal's await
        self.clock = SimpleNamespace(wall_ns=time.time_ns)

    async def request_handoff(self, item: LeaseItem, requester: str, until_ns: int) -> bool:
        assert item.lessee_id is not None
        self.requested.append((item.lease_id, item.lessee_id))
        return True

    async def withdraw_handoff(self, item_id: str, requester: str, until_ns: Any = None) -> bool:
        self.withdrawn.append(item_id)
        if self.during_withdraw is not None:
            hook, self.during_withdraw = self.during_withdraw, None
            hook()
        await asyncio.sleep(0)
        return True


def stand_in(session_id: str, store: Recorder) -> Any:
    events = SimpleNamespace(emit_item=lambda *a, **k: None)
    return SimpleNamespace(
        session_id=session_id,
        lessee_id=session_id,
        lost=False,
        _store=store,
        _keeper=SimpleNamespace(events=events),
    )


def held(item_id: str, session: str, token: int = 1) -> LeaseItem:
    return LeaseItem(item_id, session, 10**30, token, session=session)


async def test_a_requester_asks_the_member_above_its_share_not_one_at_it() -> None:
    # 7 items, members sa < sb < sc: shares 3, 2, 2. sa holds 3 (its share), sb 3 (one
    # above), sc 1 (one short). The one move that balances is sb -> sc; asking sa (tied
    # with sb on count, first by name) makes sa accept (3 > 1 + 1), fall below its own
    # share and ask sb in turn: two drains for one move (and docs/balancing.md says a
    # holder at its share declines).
    items = [held(f"a{n}", "sa") for n in range(3)]
    items += [held(f"b{n}", "sb") for n in range(3)]
    items += [held("c0", "sc")]
    pool = Pool(items, ["sa", "sb", "sc"], {})
    store = Recorder()
    handoffs = Handoffs(stand_in("sc", store), 0.2, 0.5)
    await handoffs.ask(pool, target=2, held=1, planned={}, taking={"c0"})
    assert [holder for _, holder in store.requested] == ["sb"], store.requested


async def test_a_holder_at_its_share_declines() -> None:
    # The holder's side of the same pool: sa, at its share of 3, gets sc's request.
    items = [held(f"a{n}", "sa") for n in range(3)]
    items += [held(f"b{n}", "sb") for n in range(3)]
    items += [held("c0", "sc")]
    until = time.time_ns() + 10**10
    pool = Pool(items, ["sa", "sb", "sc"], {"a0": Handoff("sc", until)})
    store = Recorder()
    handoffs = Handoffs(stand_in("sa", store), 0.2, 0.5)
    accepted = await handoffs.answer(pool, ["a0", "a1", "a2"], target=3)
    assert accepted == [], "a holder at its share handed an item over (and is now short)"
    assert store.withdrawn == ["a0"], "the request was not declined"


async def test_withdrawing_on_stop_survives_a_take_completing_meanwhile() -> None:
    # serve() cancelled while a slot is taking an item we asked for (taking=() on stop):
    # the take completes (taken() pops the request) while withdraw_all awaits its first
    # withdrawal; withdraw_all then pops the same key again: KeyError, and every request
    # after it is left standing.
    store = Recorder()
    handoffs = Handoffs(stand_in("sc", store), 0.2, 0.5)
    loop_time = asyncio.get_running_loop().time()
    for item_id in ("x", "y", "z"):
        handoffs.asked[item_id] = _Ask("sa", 1, time.time_ns() + 10**10, loop_time)
    lease = Lease("y", LeaseRequest("sc", DURATION), datetime.now(UTC), 2)
    store.during_withdraw = lambda: handoffs.taken(lease)
    await handoffs.withdraw_all("stopped")
    assert store.withdrawn == ["x", "z"], "a request was left behind"
    assert not handoffs.asked


async def test_a_request_read_as_none_does_not_block_every_later_request(
    client: Any, table_name: str
) -> None:
    # parse() reads a LeaseHandoff without a (numeric) LeaseHandoffUntil as no request,
    # so the requester offers the item; but the write's condition sees #h present and
    # ``#hu < :now`` false on a missing attribute: refused every time (the requester
    # picks the same item each look). Only the next tenure clears it.
    store = LockStore(client, table_name)
    await store.create_table()
    try:
        await store.add_item("a")
        lease = await store.lease("a", LeaseRequest("holder", DURATION))
        await client.update_item(
            TableName=table_name,
            Key={"LeaseID": {"S": "a"}},
            UpdateExpression="SET LeaseHandoff = :r",
            ExpressionAttributeValues={":r": {"S": "someone"}},
        )
        items, _, requests = await store.read_pool()
        assert "a" not in requests, "parse read it as a request"
        [item] = items
        assert item.fencing_token == lease.fencing_token
        later = time.time_ns() + 10**9
        assert await store.request_handoff(item, "sk-1", later), "blocked by a non-request"
    finally:
        await store.aclose()


async def test_a_requester_short_by_fewer_than_it_asked_for_withdraws_the_surplus() -> None:
    # 12 items, 4 members, shares 3 each. sc held 1 and asked sa and sb (4 each, above
    # their share) for one each; sd held 2; one item was free. sc took the free item (sd
    # lost the race): sc is now short by one with two requests out. Both holders are above
    # their share, so both accept (left > target, whatever the requester's count): sc ends
    # with 4, one above its share, to drain it again, while sd stays short (its own view
    # counts sa and sb at 3 once the requests are subtracted, so it asks nobody).
    # ask() withdraws only once held reaches the target; with room < 0 it does nothing.
    items = [held(f"a{n}", "sa") for n in range(4)]
    items += [held(f"b{n}", "sb") for n in range(4)]
    items += [held("c0", "sc"), held("c1", "sc"), held("d0", "sd"), held("d1", "sd")]
    until = time.time_ns() + 10**10
    requests = {"a0": Handoff("sc", until), "b0": Handoff("sc", until)}
    pool = Pool(items, ["sa", "sb", "sc", "sd"], requests)
    # Both holders accept from this very read.
    for holder in ("sa", "sb"):
        answering = Handoffs(stand_in(holder, Recorder()), 0.2, 0.5)
        mine = [i.lease_id for i in items if i.session == holder]
        assert await answering.answer(pool, mine, target=3) == [f"{holder[1]}0"]
    store = Recorder()
    handoffs = Handoffs(stand_in("sc", store), 0.2, 0.5)
    loop_time = asyncio.get_running_loop().time()
    handoffs.asked["a0"] = _Ask("sa", 1, until, loop_time)
    handoffs.asked["b0"] = _Ask("sb", 1, until, loop_time)
    await handoffs.ask(pool, target=3, held=2, planned={}, taking={"c0", "c1"})
    assert len(store.withdrawn) == 1, f"surplus requests left standing: {store.withdrawn}"
    assert len(handoffs.asked) == 1
