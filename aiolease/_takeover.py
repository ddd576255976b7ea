"""Takeover rules: how another holder's lease is judged expired, and taken.

The locker asks its rule for any item (``obtain_any``), for a named one (``obtain_named``)
and how soon a watched row may ripen (``ripens_in``); every read and write goes through the
store's public coroutines. :class:`ClockTakeover` compares the stored wall-clock expiry with
this host's clock plus ``max_clock_skew``; :class:`ObserveTakeover` takes a row only once it
has itself seen it unchanged for the holder's stored duration (docs/takeover-modes.md). A new
rule implements :class:`Takeover` and is passed as ``Locker(store, takeover=rule)``.
"""

from __future__ import annotations

import random
from contextlib import aclosing
from dataclasses import replace
from typing import Protocol, runtime_checkable

from ._errors import LeaseNotObtainedError
from ._observe import Observations, Verdict
from ._sessions_take import Sessions, held_under_session
from ._store import LockStore
from ._types import Lease, LeaseItem, LeaseRequest, check_clock_skew

__all__ = ["ClockTakeover", "ObserveTakeover", "Takeover"]

# Obtaining reads at most this many candidates to try (scan pages stop, queries are limited).
ENOUGH_CANDIDATES = 64


@runtime_checkable
class Takeover(Protocol):
    """A rule for taking items that others may hold; one per locker, chosen at construction."""

    @property
    def name(self) -> str:
        """A short name for ``repr()`` and logs (``"clock"``, ``"observe"``)."""
        ...

    @property
    def max_clock_skew(self) -> float:
        """The clock rule's bound between hosts' clocks, in seconds (also a fallback)."""
        ...

    async def obtain_any(
        self, store: LockStore, request: LeaseRequest, *, session: Lease | None = None
    ) -> Lease:
        """Lease any item this rule lets us take; :class:`LeaseNotObtainedError` if none.

        ``session``: the session's Lease to hold the item under (passed to ``store.acquire``).
        """
        ...

    async def obtain_named(
        self,
        store: LockStore,
        request: LeaseRequest,
        lease_id: str,
        *,
        session: Lease | None = None,
    ) -> Lease:
        """Lease ``lease_id`` if this rule lets us; else :class:`LeaseNotObtainedError`
        (``item_exists`` False when there is no such row)."""
        ...

    def ripens_in(self, now: float) -> float | None:
        """Seconds until a row seen so far may be taken (None: nothing pending)."""
        ...


class ClockTakeover:
    """Expired once ``LeaseUntil + max_clock_skew`` has passed on this host's wall clock."""

    name = "clock"

    def __init__(self, max_clock_skew: float = 1.0) -> None:
        self._skew = check_clock_skew(max_clock_skew)

    def __repr__(self) -> str:
        return f"ClockTakeover(max_clock_skew={self._skew})"

    @property
    def max_clock_skew(self) -> float:
        return self._skew

    async def obtain_any(
        self, store: LockStore, request: LeaseRequest, *, session: Lease | None = None
    ) -> Lease:
        """Candidates from the store's layout, tried in random order.

        Random, so that workers starting together spread over the pool instead of colliding
        on the first rows. Items held under a session come only in a second pass, when no
        free or expired candidate was usable (each costs a read of its session row), and are
        taken only once their session is dead or expired (or is the caller's own ``session``
        and none of its scopes holds the item).
        """
        candidates = await store.find_available(max_clock_skew=self._skew, limit=ENOUGH_CANDIDATES)
        sessions = Sessions(store, self._skew)
        lease = await self._try(store, request, candidates, sessions, session)
        tried = len(candidates)
        if lease is None and candidates and not any(map(held_under_session, candidates)):
            # Every free or expired candidate was taken since the read: a second pass.
            candidates = await store.find_available(limit=ENOUGH_CANDIDATES, session_held=True)
            lease = await self._try(store, request, candidates, sessions, session)
            tried += len(candidates)
        if lease is not None:
            return lease
        raise LeaseNotObtainedError(
            f"no free item for {request.lessee_id!r} in table {store.table_name!r} "
            f"({tried} candidate(s) tried)"
        )

    async def _try(
        self,
        store: LockStore,
        request: LeaseRequest,
        candidates: list[LeaseItem],
        sessions: Sessions,
        session: Lease | None,
    ) -> Lease | None:
        """The first of ``candidates`` (tried in random order) that could be taken, or None."""
        random.shuffle(candidates)
        candidates.sort(key=held_under_session)  # stable: the others first, still shuffled
        for item in candidates:
            try:
                if held_under_session(item):
                    return await sessions.take(request, item, session)
                # expect=item pins the state read (token too): a late duplicate of a
                # timed-out attempt can never re-take the row after someone else wrote it.
                lease = await store.acquire(
                    item.lease_id, request, max_clock_skew=self._skew, expect=item, session=session
                )
                return taken_from(item, lease)
            except LeaseNotObtainedError:
                continue  # taken since the scan: try the next one
        return None

    async def obtain_named(
        self,
        store: LockStore,
        request: LeaseRequest,
        lease_id: str,
        *,
        session: Lease | None = None,
    ) -> Lease:
        try:
            return await store.acquire(
                lease_id, request, max_clock_skew=self._skew, session=session
            )
        except LeaseNotObtainedError as refused:
            # Held under a session (the refusing row tells): judge that session instead.
            if refused._item is None or not held_under_session(refused._item):
                raise
            item = refused._item
        return await Sessions(store, self._skew).take(request, item, session)

    def ripens_in(self, now: float) -> float | None:
        return None


class ObserveTakeover:
    """Expired once this locker has seen the row unchanged for the holder's stored duration.

    Reads the table with ``ConsistentRead`` (a stale read would date a state too early).
    Rows without a valid stored duration (written by the Go package) fall back to the clock
    rule with ``max_clock_skew``. ``observations`` are kept across calls.
    """

    name = "observe"

    def __init__(
        self, max_clock_skew: float = 1.0, observations: Observations | None = None
    ) -> None:
        self._skew = check_clock_skew(max_clock_skew)
        self.observations = Observations() if observations is None else observations

    def __repr__(self) -> str:
        return f"ObserveTakeover(max_clock_skew={self._skew}, {self.observations!r})"

    @property
    def max_clock_skew(self) -> float:
        return self._skew

    async def obtain_any(
        self, store: LockStore, request: LeaseRequest, *, session: Lease | None = None
    ) -> Lease:
        """Take a free row, or one seen unchanged for its holder's duration; else NotObtained.

        Items held under a session are judged by their session row, seen the same way.
        """
        clock, seen = store.clock, self.observations
        started = clock.monotonic()
        chosen: dict[Verdict, list[LeaseItem]] = {
            Verdict.FREE: [],
            Verdict.RIPE: [],
            Verdict.CLOCK: [],
        }
        by_session: list[LeaseItem] = []
        found = 0
        complete = True
        scan = store.scan(consistent_read=True, projection_only=True, leasable_only=True)
        async with aclosing(scan) as items:
            async for item in items:
                if held_under_session(item):
                    # Never counted toward the limit: live ones must not crowd free ones out.
                    if len(by_session) < ENOUGH_CANDIDATES:
                        by_session.append(item)
                    continue
                verdict = seen.judge(item, clock.monotonic())
                if verdict is Verdict.CLOCK and not store.expired(item, self._skew):
                    continue
                if verdict is not Verdict.WAIT:
                    chosen[verdict].append(item)
                    found += 1
                    if found >= ENOUGH_CANDIDATES:
                        complete = False
                        break
        sessions = Sessions(store, self._skew, seen)
        takeable: list[LeaseItem] | None = None
        if not any(chosen.values()):
            # Only session-held candidates: judge their sessions now (one read each), so
            # that their sightings survive the prune.
            takeable = await self._takeable(sessions, by_session, session)
        # Rows a complete pass did not see are gone from the table.
        seen.prune(started if complete else clock.monotonic() - seen.forget_after)
        for verdict in (Verdict.FREE, Verdict.RIPE, Verdict.CLOCK):
            # Random order: workers starting together spread over the pool.
            random.shuffle(chosen[verdict])
            for item in chosen[verdict]:
                try:
                    lease = await self._take(store, request, item, verdict, session)
                except LeaseNotObtainedError:
                    continue  # changed since the read: a renewal or another waiter won
                seen.forget(item.lease_id)
                return lease
        if takeable is None:
            # No free or seen-expired candidate was usable: the second pass, by sessions.
            takeable = await self._takeable(sessions, by_session, session)
        random.shuffle(takeable)
        for item in takeable:
            try:
                return await sessions.take(request, item, session)
            except LeaseNotObtainedError:
                continue
        raise LeaseNotObtainedError(
            f"no item free or seen expired for {request.lessee_id!r} in table "
            f"{store.table_name!r} ({found + len(by_session)} candidate(s) tried, "
            f"{len(seen)} being watched)"
        )

    @staticmethod
    async def _takeable(
        sessions: Sessions, items: list[LeaseItem], session: Lease | None
    ) -> list[LeaseItem]:
        """The session-held ``items`` whose sessions let them be taken (one read each)."""
        return [item for item in items if await sessions.takeable(item, session) is not None]

    async def obtain_named(
        self,
        store: LockStore,
        request: LeaseRequest,
        lease_id: str,
        *,
        session: Lease | None = None,
    ) -> Lease:
        """Take ``lease_id`` if free or seen unchanged for its holder's duration (or, held
        under a session, once that session is dead or seen unchanged for its duration)."""
        seen = self.observations
        item = await store.get_item(lease_id, consistent_read=True, projection_only=True)
        now = store.clock.monotonic()
        seen.prune(now - seen.forget_after)
        if item is None:
            raise LeaseNotObtainedError(
                f"no item {lease_id!r} in table {store.table_name!r}; register it with add_item()",
                lease_id=lease_id,
                item_exists=False,
            )
        if held_under_session(item):
            lease = await Sessions(store, self._skew, seen).take(request, item, session)
            seen.forget(lease_id)
            return lease
        verdict = seen.judge(item, now)
        if verdict is Verdict.CLOCK and not store.expired(item, self._skew):
            verdict = Verdict.WAIT
        if verdict is Verdict.WAIT:
            if item.duration is None:
                progress = "no stored duration; it has not expired by the clock rule"
            else:
                watched = seen.unchanged_for(item, now)
                progress = f"seen unchanged for {watched:.1f} of {item.duration:.1f} s"
            raise LeaseNotObtainedError(
                f"{lease_id!r} is held by {item.lessee_id!r} ({progress})",
                lease_id=lease_id,
                holder=item.lessee_id,
            )
        lease = await self._take(store, request, item, verdict, session)
        seen.forget(lease_id)
        return lease

    def ripens_in(self, now: float) -> float | None:
        return self.observations.ripens_in(now)

    async def _take(
        self,
        store: LockStore,
        request: LeaseRequest,
        item: LeaseItem,
        verdict: Verdict,
        session: Lease | None,
    ) -> Lease:
        """The acquiring write, conditioned on the row being free or still in the state read."""
        lease = await store.acquire(
            item.lease_id,
            request,
            expect=item,
            max_clock_skew=self._skew if verdict is Verdict.CLOCK else None,
            session=session,
        )
        return taken_from(item, lease)


def taken_from(item: LeaseItem, lease: Lease) -> Lease:
    """``lease``, noting whose expired lease in ``item`` (the row as read) it replaced.

    The note feeds the locker's takeover events and metrics; a rule of one's own may call
    it too.
    """
    if item.lessee_id is None:
        return lease
    return replace(lease, _taken_from=item.lessee_id)


def takeover_rule(takeover: object, max_clock_skew: float) -> Takeover:
    """A locker's ``takeover=``: ``"clock"``, ``"observe"`` or a :class:`Takeover` object."""
    if takeover == "clock":
        return ClockTakeover(max_clock_skew)
    if takeover == "observe":
        return ObserveTakeover(max_clock_skew)
    if isinstance(takeover, Takeover):
        return takeover
    raise ValueError(f"takeover must be 'clock' or 'observe', not {takeover!r}")
