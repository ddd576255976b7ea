"""Handoff on request in ``session.serve()`` (docs/balancing.md, "Handoff on request").

Both sides work from the balancer's one pool read per period, so a request costs no read
of its own: a worker below its share, once nothing free is left to take, asks the most
loaded member for one item (a conditional write on that item, pinned to the holder's
tenure, never touching the lease); the holder, at its next look, accepts (drains the item,
whose release then leaves it reserved for the requester), or withdraws a request whose
requester is dead, that expired, or that it declines (not above its share). Exclusion
never rests on any of this: every take is the usual conditional acquisition.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._errors import LeaseError
from ._events_handoff import (
    HandoffAccepted,
    HandoffCompleted,
    HandoffEvent,
    HandoffRequested,
    HandoffWithdrawn,
)
from ._log import get_logger
from ._shares import fair_share, preference
from ._types import Lease, LeaseItem, ns_to_datetime
from ._wire.handoff import Handoff

if TYPE_CHECKING:
    from ._session import LeaseSession

__all__ = ["HANDOFF_PERIODS", "Handoffs", "Pool"]

# A request stands this many wait periods (plus the drain grace: the holder's work may
# drain for that long before the release) before anyone may treat it as expired.
HANDOFF_PERIODS = 3
# How long the withdrawals of a stopping serve() may take together.
WITHDRAW_TIMEOUT = 2.0


@dataclass(frozen=True)
class Pool:
    """One wait period's reading of the pool: the items, the live sessions (sorted) and the
    items' handoff requests by item ID."""

    items: list[LeaseItem]
    live: list[str]
    handoffs: dict[str, Handoff]

    def standing(self, now_ns: int, live: Collection[str]) -> dict[str, Handoff]:
        """The requests that still stand: not expired, their requester live."""
        return {
            i: h for i, h in self.handoffs.items() if h.until_ns >= now_ns and h.requester in live
        }


@dataclass
class _Ask:
    """A request of ours: to whom (the holder's session), until when, since when."""

    holder: str
    token: int  # the holder's tenure asked
    until_ns: int
    since: float  # loop time


class Handoffs:
    """The requests one ``serve()`` made (as requester) and answers (as holder)."""

    def __init__(self, session: LeaseSession, wait_period: float, grace: float) -> None:
        self._session = session
        self._period_ns = int((HANDOFF_PERIODS * wait_period + grace) * 1e9)
        self._wait = wait_period
        self.asked: dict[str, _Ask] = {}  # item ID -> our request standing on it
        # Members whose answer was no (the request gone, the item not ours): not asked
        # again before this loop time, so that views that disagree cannot loop a write.
        self._not_before: dict[str, float] = {}

    @property
    def _me(self) -> str:
        return self._session.session_id

    def _emit(self, kind: type[HandoffEvent], item_id: str, token: int, **fields: object) -> None:
        self._session._keeper.events.emit_item(
            kind, item_id, self._session.lessee_id, token, **fields
        )

    # -- takers -------------------------------------------------------------------------

    def reserved_for_other(
        self, pool: Pool, item_id: str, live: Collection[str], now_ns: int
    ) -> bool:
        """Whether ``item_id`` is reserved for another live session (a hint for takers)."""
        h = pool.handoffs.get(item_id)
        return (
            h is not None
            and h.requester != self._me
            and h.requester in live
            and h.until_ns >= now_ns
        )

    def reserved_for_me(self, pool: Pool, item_id: str) -> bool:
        """Whether ``item_id`` carries our request (held still, or freed for us)."""
        h = pool.handoffs.get(item_id)
        return h is not None and h.requester == self._me

    def taken(self, lease: Lease) -> None:
        """We took ``lease``'s item: if we had asked for it, the handoff is complete."""
        ask = self.asked.pop(lease.lease_id, None)
        if ask is not None:
            waited = asyncio.get_running_loop().time() - ask.since
            self._emit(
                HandoffCompleted,
                lease.lease_id,
                lease.fencing_token,
                requester=self._me,
                waited=waited,
            )

    # -- the holder's side --------------------------------------------------------------

    async def answer(self, pool: Pool, mine: Iterable[str], target: int) -> list[str]:
        """Answer the requests on the items we hold (``mine``, not draining): the IDs of
        those accepted (to drain first); the others' requests are withdrawn."""
        me = self._me
        now = self._session._store.clock.wall_ns()
        live = set(pool.live) | {me}
        # What each requester holds or has coming (its standing requests, this one too):
        # a requester that asked several holders at once must not get more than its due.
        counts = _counts(pool)
        counts.update(h.requester for h in pool.standing(now, live).values())
        by_id = {i.lease_id: i for i in pool.items}
        held = list(mine)
        left = len(held)
        accepted: list[str] = []
        for item_id in sorted(held):
            h = pool.handoffs.get(item_id)
            item = by_id.get(item_id)
            if h is None or h.requester == me or item is None or item.session != me:
                continue
            if h.requester not in live:
                reason = "dead requester"
            elif h.until_ns < now:
                reason = "expired"
            elif left > target or left > counts[h.requester]:
                # Above our share, or still holding at least as many as the requester
                # will once this item is its.
                accepted.append(item_id)
                left -= 1
                self._emit(HandoffAccepted, item_id, item.fencing_token, requester=h.requester)
                get_logger().info(
                    "handing %r over to %s", item_id, h.requester, extra={"lease_id": item_id}
                )
                continue
            else:
                reason = "declined"
            if await self._withdraw(item_id, h.requester, h.until_ns):
                self._emit(
                    HandoffWithdrawn,
                    item_id,
                    item.fencing_token,
                    requester=h.requester,
                    reason=reason,
                )
        return accepted

    # -- the requester's side -----------------------------------------------------------

    async def ask(
        self,
        pool: Pool,
        target: int,
        held: int,
        planned: dict[str, str],
        taking: Collection[str],
    ) -> None:
        """Below ``target`` with ``held`` items (``taking``: the IDs held or being taken),
        ask the most loaded members for the difference, one item per member; at or above
        it, withdraw what we asked for and have not got yet."""
        me = self._me
        now = self._session._store.clock.wall_ns()
        self._forget_answered(pool, now, taking)
        if held >= target:
            await self.withdraw_all("fulfilled elsewhere", taking)
            return
        room = target - held - len(self.asked)
        if room <= 0:
            return
        live = set(pool.live) | {me}
        standing = pool.standing(now, live)
        counts = _counts(pool)
        for item in pool.items:
            if item.lease_id in standing and item.session is not None:
                counts[item.session] -= 1  # already on its way to someone
        members = sorted(live)
        shares = {m: fair_share(len(pool.items), members, m) for m in members}
        mine = held + len(self.asked)
        clock = asyncio.get_running_loop().time()
        self._not_before = {m: t for m, t in self._not_before.items() if t > clock}
        for member in sorted(live - {me}, key=lambda m: (-counts[m], m)):
            if room <= 0:
                break
            if self._not_before.get(member, 0.0) > clock:
                continue
            if not (counts[member] > shares[member] or counts[member] > mine + 1):
                continue
            offered = [
                i
                for i in pool.items
                if i.session == member
                and i.lessee_id is not None
                and i.fencing_token > 0
                and i.lease_id not in standing
                and i.lease_id not in self.asked
            ]
            if not offered:
                continue
            item = min(
                offered, key=lambda i: (planned.get(i.lease_id) != me, -preference(me, i.lease_id))
            )
            if await self._request(item, member):
                room -= 1
                mine += 1
                counts[member] -= 1

    async def _request(self, item: LeaseItem, member: str) -> bool:
        assert item.lessee_id is not None
        store = self._session._store
        until = store.clock.wall_ns() + self._period_ns
        # Noted before the write: one cancelled mid-flight may have landed, and is then
        # withdrawn when serve() stops.
        self.asked[item.lease_id] = _Ask(
            member, item.fencing_token, until, asyncio.get_running_loop().time()
        )
        if not await store.request_handoff(item, self._me, until):
            del self.asked[item.lease_id]
            return False
        self._emit(
            HandoffRequested,
            item.lease_id,
            item.fencing_token,
            requester=self._me,
            holder=item.lessee_id,
            until=ns_to_datetime(until),
        )
        get_logger().info(
            "%s asked %s for %r",
            self._me,
            item.lessee_id,
            item.lease_id,
            extra={"lease_id": item.lease_id},
        )
        return True

    def _forget_answered(self, pool: Pool, now_ns: int, taking: Collection[str]) -> None:
        """Drop the requests the read shows gone (withdrawn by the holder, or the item
        taken by another) or expired (asked again if still short)."""
        for item_id in list(self.asked):
            if item_id in taking:
                continue  # being taken by us: taken() completes it
            h = pool.handoffs.get(item_id)
            if h is None or h.requester != self._me or h.until_ns < now_ns:
                ask = self.asked.pop(item_id)
                # Declined or withdrawn (or taken by another): leave that member alone
                # for a while. Expired: ask again at once if still short.
                if h is None or h.requester != self._me:
                    pause = HANDOFF_PERIODS * self._wait
                    self._not_before[ask.holder] = asyncio.get_running_loop().time() + pause

    async def withdraw_all(self, reason: str, taking: Collection[str] = ()) -> None:
        """Withdraw every request of ours not being taken (best effort: logged). Not once
        the session is lost: the holders withdraw a dead session's requests themselves."""
        for item_id in [i for i in self.asked if i not in taking]:
            ask = self.asked.pop(item_id)
            if self._session.lost:
                continue
            if await self._withdraw(item_id, self._me, None):
                self._emit(HandoffWithdrawn, item_id, ask.token, requester=self._me, reason=reason)

    async def _withdraw(self, item_id: str, requester: str, until_ns: int | None) -> bool:
        try:
            return await self._session._store.withdraw_handoff(item_id, requester, until_ns)
        except LeaseError as exc:
            get_logger().warning("withdrawing the handoff request on %r: %s", item_id, exc)
            return False


def _counts(pool: Pool) -> Counter[str]:
    """Items held per session, from the read."""
    return Counter(i.session for i in pool.items if i.lessee_id is not None and i.session)
