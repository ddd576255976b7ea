"""Handoff on request in ``session.serve()`` (docs/balancing.md, "Handoff on request").

Both sides work from the balancer's one pool read per period, so a request costs no read
of its own: a worker below its share, once nothing free is left to take, asks the members
above their own fair share, the most above first, for one item each (a conditional write
on that item, pinned to the holder's tenure, never touching the lease); the holder, at its
next look, accepts only while above its share (drains the item, whose release then leaves
it reserved for the requester), else withdraws the request: declined, or its requester
dead, or expired. Exclusion never rests on any of this: every take is the usual
conditional acquisition.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
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
# Requests (or withdrawals) of one look in flight at once: together, so that a look is not
# a row of round trips, but leaving the store's other request slots to renewals.
CONCURRENT_WRITES = 4


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
    # The write answered that it landed. An unconfirmed request (its write raised, or is
    # in flight) that a read shows gone was never answered: no decline by the holder.
    confirmed: bool = False


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

    def _emit(
        self,
        kind: type[HandoffEvent],
        item_id: str,
        token: int,
        fields: Callable[[], Mapping[str, object]],
    ) -> None:
        # ``fields`` is called only if anyone listens: no event values built otherwise.
        self._session._keeper.events.emit_item(
            kind, item_id, self._session.lessee_id, token, fields
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
            since, me = ask.since, self._me
            self._emit(
                HandoffCompleted,
                lease.lease_id,
                lease.fencing_token,
                lambda: {"requester": me, "waited": asyncio.get_running_loop().time() - since},
            )

    # -- the holder's side --------------------------------------------------------------

    async def answer(self, pool: Pool, mine: Iterable[str], target: int) -> list[str]:
        """Answer the requests on the items we hold (``mine``, not draining): the IDs of
        those accepted (to drain first), only while we hold more than ``target`` (our
        share); the others' requests are withdrawn (a holder at its share declines)."""
        me = self._me
        now = self._session._store.clock.wall_ns()
        live = set(pool.live) | {me}
        by_id = {i.lease_id: i for i in pool.items}
        held = list(mine)
        left = len(held)
        loads, above = _loads(pool, live, now)
        # Nobody above its share although counts differ: items held outside the members
        # (single leases, Go workers) put the shares out of reach. Then the holder with at
        # least two more than the requester (its requests counted) hands one over.
        out_of_reach = all(a <= 0 for a in above.values())
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
            elif left > target or (out_of_reach and left > loads[h.requester]):
                # Above our share: this item is one of our extras, and it goes to the one
                # who asked. At our share we decline (handing it over would leave us
                # short, to take an item from someone else in turn), unless no member
                # can reach its share.
                accepted.append(item_id)
                left -= 1
                self._emit(
                    HandoffAccepted,
                    item_id,
                    item.fencing_token,
                    partial(dict, requester=h.requester),
                )
                get_logger().info(
                    "handing %r over to %s", item_id, h.requester, extra={"lease_id": item_id}
                )
                continue
            else:
                reason = "declined"
            if await self._withdraw(item_id, h.requester, h.until_ns):
                fields: Callable[[], Mapping[str, object]] = partial(
                    dict, requester=h.requester, reason=reason
                )
                self._emit(HandoffWithdrawn, item_id, item.fencing_token, fields)
        return accepted

    # -- the requester's side -----------------------------------------------------------

    async def ask(
        self,
        pool: Pool,
        target: int,
        held: int,
        planned: dict[str, str],
        taking: Collection[str],
        *,
        may_ask: bool = True,
    ) -> None:
        """Below ``target`` with ``held`` items (``taking``: the IDs held or being taken),
        ask the members above their own fair share, the most above first, for the
        difference not yet asked for, one item per member (unless not ``may_ask``); with
        more held and asked for than ``target``, withdraw the surplus requests (fulfilled
        elsewhere)."""
        me = self._me
        now = self._session._store.clock.wall_ns()
        self._forget_answered(pool, now, taking)
        # Requests standing on items we are taking are being fulfilled: counted in held.
        out = [i for i in self.asked if i not in taking]
        if held + len(out) > target:
            # Got items another way (free ones, or more handed over than we needed): the
            # newest requests go first.
            out.sort(key=lambda i: self.asked[i].since, reverse=True)
            await self._withdraw_ours(out[: held + len(out) - target], "fulfilled elsewhere")
            return
        room = target - held - len(out)
        if room <= 0 or not may_ask:
            return
        live = set(pool.live) | {me}
        loads, above = _loads(pool, live, now)
        # Members above their share first. If nobody is (items held outside the members
        # put the shares out of reach), members with at least two more than we hold or
        # have coming, the most loaded first: the holders' rule is the same.
        if any(a > 0 for a in above.values()):
            ranked = [m for m in sorted(live - {me}, key=lambda m: (-above[m], m)) if above[m] > 0]
        else:
            ranked = sorted(live - {me}, key=lambda m: (-loads[m], m))
        # What we hold counts the items this very look started taking (not in the read).
        mine = max(loads[me], held + len(out))
        clock = asyncio.get_running_loop().time()
        self._not_before = {m: t for m, t in self._not_before.items() if t > clock}
        picks: list[tuple[LeaseItem, str]] = []
        for member in ranked:
            if len(picks) >= room or (above[member] <= 0 and loads[member] < mine + 2):
                break  # sorted: nobody after this one has an item to spare either
            if self._not_before.get(member, 0.0) > clock:
                continue
            # Not over any unexpired request, even a dead requester's: the write's
            # condition would refuse it until the holder has withdrawn that one.
            offered = [
                i
                for i in pool.items
                if i.session == member
                and i.lessee_id is not None
                and i.fencing_token > 0
                and (i.lease_id not in pool.handoffs or pool.handoffs[i.lease_id].until_ns < now)
                and i.lease_id not in self.asked
            ]
            if not offered:
                continue
            item = min(
                offered, key=lambda i: (planned.get(i.lease_id) != me, -preference(me, i.lease_id))
            )
            picks.append((item, member))
            mine += 1
        # Together: one after another, a joiner asking many members spent its look on
        # round trips while the items freed meanwhile waited for its next look. A request
        # refused is not replaced before the next look.
        await _together([partial(self._request, i, m) for i, m in picks])

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
        self.asked[item.lease_id].confirmed = True
        me, holder = self._me, item.lessee_id
        self._emit(
            HandoffRequested,
            item.lease_id,
            item.fencing_token,
            lambda: {"requester": me, "holder": holder, "until": ns_to_datetime(until)},
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
            if h is not None and h.requester == self._me and h.until_ns >= now_ns:
                self.asked[item_id].confirmed = True  # landed, even if its answer was lost
            if h is None or h.requester != self._me or h.until_ns < now_ns:
                ask = self.asked.pop(item_id)
                # Declined or withdrawn (or taken by another): leave that member alone
                # for a while. Expired: ask again at once if still short.
                if ask.confirmed and (h is None or h.requester != self._me):
                    pause = HANDOFF_PERIODS * self._wait
                    self._not_before[ask.holder] = asyncio.get_running_loop().time() + pause

    async def withdraw_all(self, reason: str, taking: Collection[str] = ()) -> None:
        """Withdraw every request of ours not being taken (best effort: logged). Not once
        the session is lost: the holders withdraw a dead session's requests themselves."""
        await self._withdraw_ours([i for i in self.asked if i not in taking], reason)

    async def _withdraw_ours(self, item_ids: list[str], reason: str) -> None:
        """Withdraw our requests on ``item_ids``, each forgotten only once its write has
        returned: one cancelled (or timed out) mid-write stays noted, to be withdrawn on
        stop. A request completed meanwhile (``taken()``) is skipped."""
        await _together([partial(self._withdraw_one, item_id, reason) for item_id in item_ids])

    async def _withdraw_one(self, item_id: str, reason: str) -> None:
        ask = self.asked.get(item_id)
        if ask is None:
            return  # taken meanwhile: taken() completed it
        if self._session.lost:
            self.asked.pop(item_id, None)
            return
        withdrawn = await self._withdraw(item_id, self._me, None)
        self.asked.pop(item_id, None)
        if withdrawn:
            fields: Callable[[], Mapping[str, object]] = partial(
                dict, requester=self._me, reason=reason
            )
            self._emit(HandoffWithdrawn, item_id, ask.token, fields)

    async def _withdraw(self, item_id: str, requester: str, until_ns: int | None) -> bool:
        try:
            return await self._session._store.withdraw_handoff(item_id, requester, until_ns)
        except LeaseError as exc:
            get_logger().warning("withdrawing the handoff request on %r: %s", item_id, exc)
            return False


def _counts(pool: Pool) -> Counter[str]:
    """Items held per session, from the read."""
    return Counter(i.session for i in pool.items if i.lessee_id is not None and i.session)


def _loads(pool: Pool, live: Collection[str], now_ns: int) -> tuple[Counter[str], dict[str, int]]:
    """Per live member: what it holds or has coming (items asked away from their holders
    and counted to their requesters), and how far that is above its fair share."""
    standing = pool.standing(now_ns, live)
    loads = _counts(pool)
    for item in pool.items:
        h = standing.get(item.lease_id)
        if h is not None and item.session is not None and item.session != h.requester:
            loads[item.session] -= 1
        if h is not None:
            loads[h.requester] += 1
    members = sorted(live)
    above = {m: loads[m] - fair_share(len(pool.items), members, m) for m in members}
    return loads, above


async def _together(calls: list[Callable[[], Awaitable[object]]]) -> None:
    """Run ``calls`` at most CONCURRENT_WRITES at a time; when all are done, raise the first
    error (the others logged). Cancelled, every call is cancelled and awaited."""
    gate = asyncio.Semaphore(CONCURRENT_WRITES)

    async def gated(call: Callable[[], Awaitable[object]]) -> object:
        async with gate:
            return await call()

    results = await asyncio.gather(*(gated(c) for c in calls), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    for extra in errors[1:]:
        get_logger().warning("handoff write failed: %s", extra)
    if errors:
        raise errors[0]
