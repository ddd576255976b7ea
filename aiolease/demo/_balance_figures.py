"""--balance: the figures, computed from the holds history alone (no handoff events needed).

A worker is a *member* from the moment it was told to start until it was stopped or
killed. The pool is *balanced* at a moment when the members hold every item between them
and their counts differ by at most one. After each moment of the script, the *time to
balance* is how long until the pool became balanced and stayed so until the next moment.
A *handoff* is an item released by one worker and taken next by another; after a kill the
item is *taken over* instead (its holder never released it).
"""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiolease.testing.history import Hold

from ._state import Moment

__all__ = [
    "Passing",
    "Phase",
    "counts_at",
    "is_balanced",
    "members_at",
    "overlaps",
    "passings",
    "phases",
]

#: A worker's membership: from when it was told to start to when it was stopped or killed.
Membership = Mapping[str, tuple[float, float | None]]


def members_at(membership: Membership, t: float) -> list[str]:
    """The workers that are members at ``t``, sorted."""
    return sorted(
        name
        for name, (joined, left) in membership.items()
        if joined <= t and (left is None or t < left)
    )


def counts_at(holds: Iterable[Hold], members: list[str], t: float) -> dict[str, int]:
    """How many items each member holds at ``t`` (a hold counts from start to end)."""
    counts = dict.fromkeys(members, 0)
    for hold in holds:
        if hold.lessee in counts and hold.start <= t and (hold.end is None or t < hold.end):
            counts[hold.lessee] += 1
    return counts


def is_balanced(counts: Mapping[str, int], items: int) -> bool:
    """The members hold every item, their counts differing by at most one."""
    return bool(counts) and sum(counts.values()) == items and spread(counts) <= 1


def spread(counts: Mapping[str, int]) -> int:
    """Max minus min items per member (0 for no members)."""
    return max(counts.values()) - min(counts.values()) if counts else 0


@dataclass(frozen=True)
class Phase:
    """From one moment of the script to the next: when the pool balanced, if it did."""

    moment: Moment
    end: float
    members: int
    balanced_after: float | None  # seconds after the moment; None: not before the next one
    spread_at_end: int


def phases(
    holds: list[Hold], items: int, membership: Membership, moments: list[Moment], end: float
) -> list[Phase]:
    """One :class:`Phase` per moment, the last one lasting until ``end``."""
    changes = sorted({h.start for h in holds} | {h.end for h in holds if h.end is not None} | {end})
    found: list[Phase] = []
    ordered = sorted(moments, key=lambda m: m.at)
    for moment, after in itertools.zip_longest(ordered, ordered[1:]):
        stop = end if after is None else after.at
        points = [moment.at, *(t for t in changes if moment.at < t < stop)]
        settled: float | None = None
        for t in points:
            ok = is_balanced(counts_at(holds, members_at(membership, t), t), items)
            if not ok:
                settled = None
            elif settled is None:
                settled = t
        last = points[-1]
        found.append(
            Phase(
                moment,
                stop,
                len(members_at(membership, moment.at)),
                None if settled is None else settled - moment.at,
                spread(counts_at(holds, members_at(membership, last), last)),
            )
        )
    return found


@dataclass(frozen=True)
class Passing:
    """An item passing from one worker to another: a handoff, or a takeover after a death."""

    item: str
    before: Hold
    after: Hold

    @property
    def handoff(self) -> bool:
        """Released by its holder (drained or stopped), not taken over from a dead one."""
        return self.before.died_at is None

    @property
    def seconds(self) -> float:
        """From the end of the first hold (for a dead holder: its lease's expiry) to the next."""
        assert self.before.end is not None
        return self.after.start - self.before.end


def passings(holds: Iterable[Hold]) -> list[Passing]:
    """Every time an item went from one worker to another, in order of time."""
    by_item: dict[str, list[Hold]] = defaultdict(list)
    for hold in holds:
        by_item[hold.item].append(hold)
    found = [
        Passing(item, before, after)
        for item, item_holds in by_item.items()
        for before, after in itertools.pairwise(sorted(item_holds, key=lambda h: h.start))
        if before.lessee != after.lessee and before.end is not None
    ]
    return sorted(found, key=lambda p: p.after.start)


def overlaps(holds: Iterable[Hold]) -> int:
    """How many times a hold of an item started before the previous one of it had ended."""
    by_item: dict[str, list[Hold]] = defaultdict(list)
    for hold in holds:
        by_item[hold.item].append(hold)
    return sum(
        before.end is None or after.start < before.end
        for item_holds in by_item.values()
        for before, after in itertools.pairwise(sorted(item_holds, key=lambda h: h.start))
    )


def seconds_summary(values: list[float]) -> dict[str, float | None]:
    """Median and max, rounded to 10 ms (None for no values)."""
    if not values:
        return {"median": None, "max": None}
    return {"median": round(statistics.median(values), 2), "max": round(max(values), 2)}
