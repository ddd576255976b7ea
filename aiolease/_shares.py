"""Fair shares of a pool and the plan that spreads it (docs/balancing.md, "The plan").

Pure functions of the pool's item IDs and the live sessions: every worker computes the
same shares and the same plan from the same read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["fair_share", "plan", "preference"]


def preference(session_id: str, item_id: str) -> int:
    """The rendezvous (highest-random-weight) score of an item for a session: stable, and
    different workers rank the pool differently."""
    digest = hashlib.blake2b(f"{session_id}\0{item_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def fair_share(items: int, members: list[str], me: str) -> int:
    """``me``'s share of ``items`` among ``members`` (sorted session IDs): counts differ by
    at most one, the first ``items % n`` members getting the extra one."""
    ranked = sorted(set(members) | {me})
    base, extra = divmod(items, len(ranked))
    return base + (1 if ranked.index(me) < extra else 0)


def plan(items: Iterable[str], members: list[str]) -> dict[str, str]:
    """A deterministic assignment of every item to a member, each getting its fair share.

    Every worker that sees the same pool and members computes the same plan, so each one
    goes first for items no other worker goes first for. Each item goes to its highest
    scoring member; a member keeps its best-scoring items up to its share, and the surplus
    goes, item by item, to the best-scoring member still below its share.
    """
    ranked = sorted(set(members))
    ids = sorted(items)
    if not ranked:
        return {}
    shares = {m: fair_share(len(ids), ranked, m) for m in ranked}
    scores = {m: {i: preference(m, i) for i in ids} for m in ranked}
    wanted: dict[str, list[str]] = {m: [] for m in ranked}
    for i in ids:
        wanted[max(ranked, key=lambda m: scores[m][i])].append(i)
    assigned: dict[str, str] = {}
    surplus: list[str] = []
    for m in ranked:
        mine = sorted(wanted[m], key=lambda i: scores[m][i], reverse=True)
        for i in mine[: shares[m]]:
            assigned[i] = m
        surplus.extend(mine[shares[m] :])
        shares[m] -= min(shares[m], len(mine))
    for i in sorted(surplus):
        room = [m for m in ranked if shares[m] > 0]
        best = max(room, key=lambda m: scores[m][i])
        assigned[i] = best
        shares[best] -= 1
    return assigned
