"""The mutual-exclusion checker: no two holds of one item overlap, tokens strictly grow."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import pairwise


@dataclass(frozen=True)
class Hold:
    """One worker holding one item, from ``start`` to ``end`` on one monotonic clock."""

    item: str
    lessee: str
    token: int
    start: float
    end: float


@dataclass(frozen=True)
class Report:
    holds: int
    items: int
    handovers: int

    def __str__(self) -> str:
        return (
            f"checked {self.holds} holds of {self.items} items, {self.handovers} handovers: "
            "0 overlaps, tokens strictly increasing"
        )


def check_history(holds: list[Hold]) -> Report:
    """Raise AssertionError naming the first violation; return the counts checked."""
    by_item: dict[str, list[Hold]] = defaultdict(list)
    for hold in holds:
        assert hold.end >= hold.start, f"hold ends before it starts: {hold}"
        by_item[hold.item].append(hold)
    handovers = 0
    for item, item_holds in by_item.items():
        item_holds.sort(key=lambda h: h.start)
        for before, after in pairwise(item_holds):
            assert after.start >= before.end, (
                f"{item}: {after.lessee} (token {after.token}) started at {after.start:.3f} "
                f"while {before.lessee} (token {before.token}) held it until {before.end:.3f}"
            )
            assert after.token > before.token, (
                f"{item}: token went from {before.token} ({before.lessee}) "
                f"to {after.token} ({after.lessee})"
            )
            handovers += after.lessee != before.lessee
    return Report(holds=len(holds), items=len(by_item), handovers=handovers)
