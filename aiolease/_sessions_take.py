"""Taking items held under a session: judged by the session row, never by the item's expiry.

An item held under session K carries ``LeaseUntil`` = MAX and ``LeaseSession`` = K. A taker
reads K (one consistent read per session per obtain call) and finds it DEAD (missing,
ended), EXPIRED (clock rule: its stored expiry plus ``max_clock_skew`` has passed), RIPE
(observe rule: this locker saw the session row unchanged for the session's duration) or
LIVE. An expired or ripe session is first ended by a write pinned to the state read (so a
renewal that landed since makes it fail), then the item is taken by an acquisition pinned
to the item's state, with a higher token (docs/protocol.md, "Sessions").
"""

from __future__ import annotations

import enum

from ._errors import LeaseNotObtainedError
from ._observe import Observations, Verdict
from ._store import LockStore
from ._types import SESSION_HELD_FLOOR, Lease, LeaseItem, LeaseRequest, SessionRow

__all__ = ["SessionState", "Sessions", "held_under_session"]


class SessionState(enum.Enum):
    """What a taker may do with an item of a session, judged by the session row."""

    DEAD = "dead"  # missing or ended: take the item (pinned to its state)
    EXPIRED = "expired"  # clock rule: end the session (pinned), then take the item
    RIPE = "ripe"  # observe rule: seen unchanged for its duration; as EXPIRED
    LIVE = "live"  # the holder may still be working: not obtainable


def held_under_session(item: LeaseItem) -> bool:
    """Whether a row read is (or may be) held under a session: judge its session first.

    Rows read from the index carry no session key (not projected): their ``LeaseUntil`` at
    or above SESSION_HELD_FLOOR gives them away, and they are read again.
    """
    return item.lessee_id is not None and (
        item.session is not None or item.until_ns >= SESSION_HELD_FLOOR
    )


class Sessions:
    """One obtain call's judgement of sessions: each session row read at most once.

    ``observations`` (observe mode) judge the session rows as they judge items, keyed by
    the session row's key; without, the clock rule with ``max_clock_skew`` decides.
    """

    def __init__(
        self, store: LockStore, max_clock_skew: float, observations: Observations | None = None
    ) -> None:
        self._store = store
        self._skew = max_clock_skew
        self._seen = observations
        self._rows: dict[str, SessionRow | None] = {}
        self._states: dict[str, SessionState] = {}

    async def judge(self, key: str) -> tuple[SessionState, SessionRow | None]:
        """The state of session ``key`` (read once per call) and its row as read."""
        if key not in self._rows:
            self._rows[key] = await self._store.get_session(key)
            self._states[key] = self._judge(self._rows[key])
        return self._states[key], self._rows[key]

    def _judge(self, row: SessionRow | None) -> SessionState:
        if row is None or row.ended or row.lessee_id is None:
            return SessionState.DEAD
        sighting = LeaseItem(
            row.session_id, row.lessee_id, row.until_ns, row.token, duration=row.duration
        )
        if self._seen is not None and row.duration is not None:
            now = self._store.clock.monotonic()  # after the read returned (PITFALLS #4)
            if self._seen.judge(sighting, now) is Verdict.RIPE:
                return SessionState.RIPE
            return SessionState.LIVE
        # No observations, or no valid stored duration: the clock rule.
        if self._store.expired(sighting, self._skew):
            return SessionState.EXPIRED
        return SessionState.LIVE

    async def takeable(self, item: LeaseItem, session: Lease | None = None) -> LeaseItem | None:
        """``item`` with its session key (read again if the index left it out), if its
        session is not LIVE, or is the caller's own ``session``; ``None`` if it cannot be
        taken now.

        A row showing the caller's own live session is offered too: held by one of its
        scopes, the acquisition's claim refuses it; held by none (a late duplicate of a
        cancelled acquisition), the holder takes it back, pinned, with a higher token."""
        if item.session is None:
            fresh = await self._store.get_item(
                item.lease_id, consistent_read=True, projection_only=True
            )
            if fresh is None or fresh.lessee_id is None:
                return None
            item = fresh
        if item.session is None:
            return None  # a session-held LeaseUntil without a session: not ours to judge
        if session is not None and item.session == session.lease_id:
            return item
        state, _ = await self.judge(item.session)
        return None if state is SessionState.LIVE else item

    async def take(
        self, request: LeaseRequest, item: LeaseItem, session: Lease | None = None
    ) -> Lease:
        """Take ``item`` held under a session that is not live: end that session first if it
        only expired, then acquire the item pinned to its state. Else NotObtained."""
        checked = await self.takeable(item, session)
        if checked is None or checked.session is None:
            raise self._live(item)
        key = checked.session
        state, row = (SessionState.LIVE, None)
        if session is None or key != session.lease_id:
            state, row = await self.judge(key)
        if state in (SessionState.EXPIRED, SessionState.RIPE):
            assert row is not None
            if not await self._store.end_expired_session(row):
                # Renewed (or ended by another) since the read: read it once more.
                del self._rows[key]
                state, row = await self.judge(key)
                if state is not SessionState.DEAD:
                    raise self._live(checked)
            self._states[key] = SessionState.DEAD
            if self._seen is not None:
                self._seen.forget(key)
        # Pinned to the item as read (lessee, LeaseUntil, token); never by the clock.
        return await self._store.acquire(
            checked.lease_id, request, max_clock_skew=None, expect=checked, session=session
        )

    def _live(self, item: LeaseItem) -> LeaseNotObtainedError:
        row = None if item.session is None else self._rows.get(item.session)
        holder = item.lessee_id if row is None else row.lessee_id
        where = "" if item.session is None else f" under session {item.session!r}"
        expires = ""
        if row is not None and row.until is not None:
            expires = f", live until {row.until.isoformat()}"
        return LeaseNotObtainedError(
            f"{item.lease_id!r} is held by {holder!r}{where}{expires}",
            lease_id=item.lease_id,
            holder=holder,
        )
