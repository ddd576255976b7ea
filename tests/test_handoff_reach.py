"""Shares out of reach: items held outside the members (single leases, Go workers) leave
every member below its fair share, so "above its share" finds nobody to ask. Then the
member with at least two more than the requester (its requests counted) hands one over.

Found by the benchmark's pinned scenario: 16 of 40 items under single leases, 3 workers
holding 8 each; a 4th joined and stayed at 0 (shares 10 each: nobody above).
"""

from __future__ import annotations

import time

from aiolease import LeaseItem
from aiolease._handoff import Handoffs, Pool
from aiolease._wire.handoff import Handoff

from .test_handoff_review import Recorder, held, stand_in


def pinned_pool(handoffs: dict[str, Handoff] | None = None) -> Pool:
    items = [held(f"{m}{n}", m) for m in ("sa", "sb", "sc") for n in range(8)]
    items += [LeaseItem(f"p{n}", "single", 10**30, 1) for n in range(16)]  # no session
    return Pool(items, ["sa", "sb", "sc", "sd"], handoffs or {})


async def test_a_newcomer_asks_when_the_shares_are_out_of_reach() -> None:
    store = Recorder()
    handoffs = Handoffs(stand_in("sd", store), 0.2, 0.5)
    await handoffs.ask(pinned_pool(), target=10, held=0, planned={}, taking=())
    assert sorted(holder for _, holder in store.requested) == ["sa", "sb", "sc"]


async def test_a_holder_two_above_the_requester_hands_over_when_out_of_reach() -> None:
    until = time.time_ns() + 10**10
    pool = pinned_pool({"sa0": Handoff("sd", until)})
    store = Recorder()
    handoffs = Handoffs(stand_in("sa", store), 0.2, 0.5)
    accepted = await handoffs.answer(pool, [f"sa{n}" for n in range(8)], target=10)
    assert accepted == ["sa0"], "the member with 8 kept them all from the one with none"


async def test_when_out_of_reach_counts_within_one_stay() -> None:
    # sa 6, sd 5 with a request on one of sa's: after the move sa would hold 5 and sd 6.
    items = [held(f"sa{n}", "sa") for n in range(6)] + [held(f"sd{n}", "sd") for n in range(5)]
    items += [LeaseItem(f"p{n}", "single", 10**30, 1) for n in range(29)]
    until = time.time_ns() + 10**10
    pool = Pool(items, ["sa", "sd"], {"sa0": Handoff("sd", until)})
    store = Recorder()
    handoffs = Handoffs(stand_in("sa", store), 0.2, 0.5)
    assert await handoffs.answer(pool, [f"sa{n}" for n in range(6)], target=20) == []
    asker = Handoffs(stand_in("sd", Recorder()), 0.2, 0.5)
    await asker.ask(Pool(items, ["sa", "sd"], {}), target=20, held=5, planned={}, taking=())
    assert asker.asked == {}, "asked a member only one above it"
