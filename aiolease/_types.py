"""The values passed between the caller, the locker and the store."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["Holder", "Lease", "LeaseItem", "LeaseRequest", "SessionRow"]

# A lessee ID is stored in every row it holds and written on every renewal; keep it small.
MAX_LESSEE_ID_LENGTH = 1024
# Longer leases are almost certainly a unit mistake (milliseconds passed as seconds).
MAX_DURATION = timedelta(days=7).total_seconds()
# Shorter leases are a unit mistake too (seconds passed as milliseconds): 10 ms is about one
# DynamoDB round trip plus an event-loop tick, so such a lease expires before its own write
# is answered and could never be renewed in time.
MIN_DURATION = 0.01
# The LeaseUntil of session rows and of items held under a session: Go workers (whose rule
# is LeaseUntil < now) see them held forever; aiolease takers judge the session instead.
MAX_NS = 2**63 - 1
# Items held under a session store LeaseUntil = this + the acquisition's own unique stamp
# (its would-be expiry): unique per acquisition, so an undo or a lost-answer retry
# recognises exactly its own write; still within Go's int64, far in the future to Go
# workers, and above any clock cutoff, so nobody takes such an item by the clock.
SESSION_HELD_FLOOR = 2**62
# Session rows are keyed by this prefix, the lessee ID and a fresh UUID (never reused).
SESSION_PREFIX = "aiolease-session:"


def refuse_session_row(lease_id: object, instead: str) -> None:
    """ValueError if ``lease_id`` is a session row's key: item calls would corrupt it (free
    it for Go workers and takers, or stamp an item expiry on it). ``instead``: what to do."""
    if isinstance(lease_id, str) and lease_id.startswith(SESSION_PREFIX):
        raise ValueError(f"{lease_id!r} is a session's row, not an item: {instead}")


def _as_seconds(name: str, value: object) -> float:
    """Validate a positive, finite duration given as seconds or a timedelta."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(
            f"{name} must be seconds (int or float) or a timedelta, not {type(value).__name__}"
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a positive, finite number of seconds, not {value!r}")
    return seconds


def check_clock_skew(value: object) -> float:
    """Validate ``max_clock_skew``: a number of seconds from 0 to under one day."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"max_clock_skew must be a number, not {type(value).__name__}")
    if not 0 <= value < 86_400:
        raise ValueError(f"max_clock_skew must be between 0 and one day, not {value!r}")
    return float(value)


def check_lease(lease: object) -> None:
    """A store's ``lease`` argument: a :class:`Lease`."""
    if not isinstance(lease, Lease):
        raise TypeError(f"lease must be a Lease, not {type(lease).__name__}")


def check_expect(expect: object, lease_id: str) -> None:
    """A store's ``expect`` argument: ``None``, or the :class:`LeaseItem` of ``lease_id``."""
    if expect is not None and not isinstance(expect, LeaseItem):
        raise TypeError(f"expect must be a LeaseItem or None, not {type(expect).__name__}")
    if expect is not None and expect.lease_id != lease_id:
        raise ValueError(f"expect is a row of {expect.lease_id!r}, not of {lease_id!r}")


@dataclass(frozen=True)
class LeaseRequest:
    """Who wants a lease and for how long.

    ``lessee_id`` must be unique per process or worker: two workers sharing an ID are
    one lessee to the store. ``duration`` is in seconds; a ``timedelta`` is converted.
    Bad values raise ``TypeError`` or ``ValueError`` at construction, naming the field.
    """

    lessee_id: str
    """The lessee's ID, stored as the row's holder: non-empty, unique per worker."""
    duration: float
    """How long each acquisition or renewal lasts, in seconds (10 ms to 7 days)."""

    def __post_init__(self) -> None:
        if not isinstance(self.lessee_id, str):
            raise TypeError(f"lessee_id must be a str, not {type(self.lessee_id).__name__}")
        if not self.lessee_id:
            raise ValueError("lessee_id must not be empty")
        if len(self.lessee_id) > MAX_LESSEE_ID_LENGTH:
            raise ValueError(
                f"lessee_id is {len(self.lessee_id)} characters long; "
                f"the limit is {MAX_LESSEE_ID_LENGTH}"
            )
        seconds = _as_seconds("duration", self.duration)
        if seconds < MIN_DURATION:
            raise ValueError(
                f"duration must be at least {MIN_DURATION} seconds, not {seconds!r} "
                "(a lease that short expires before its own write is answered)"
            )
        if seconds > MAX_DURATION:
            raise ValueError(
                f"duration must be at most {MAX_DURATION:.0f} seconds (7 days), not {seconds!r}"
            )
        object.__setattr__(self, "duration", seconds)


@dataclass(frozen=True)
class Lease:
    """A lease held on one item, as returned by the store when it was obtained or renewed.

    ``until`` is the expiry written to the row (UTC); ``fencing_token`` grows each time the
    item passes to a new holder, so downstream writes can reject older holders.
    ``attributes`` are the row's user attributes at the time of the write.
    """

    lease_id: str
    """The item's ID: the row's hash key value."""
    request: LeaseRequest
    """The request that obtained the lease."""
    until: datetime
    """The expiry written to the row, timezone-aware UTC."""
    fencing_token: int
    """Grows with each new holder of the item, kept by renewals: send it downstream."""
    attributes: dict[str, Any] = field(default_factory=dict, hash=False)
    """The row's user attributes (without the key and bookkeeping) as plain Python values."""
    until_ns: int = field(default=0, compare=False, repr=False)
    """The exact ``LeaseUntil`` value written, in Unix epoch nanoseconds."""
    # Not part of the value: the monotonic (event-loop) time just before the write was first
    # sent, from which the holder's local deadline counts (never from when the answer
    # arrived); moved earlier when an explicit ``until`` was sooner than the duration, so the
    # deadline never outlasts it. 0 for a Lease built by hand: the stored expiry counts then.
    _sent_at: float = field(default=0.0, compare=False, repr=False)
    # Not part of the value either: the lessee whose expired lease this acquisition replaced,
    # when the takeover rule read it (for the lifecycle events and metrics).
    _taken_from: str | None = field(default=None, compare=False, repr=False)
    # Not part of the value either: the key of the session this item is held under (None:
    # a lease of its own). Such a lease is kept alive by renewing its session.
    _session: str | None = field(default=None, compare=False, repr=False)

    @property
    def lessee_id(self) -> str:
        """Shortcut for ``lease.request.lessee_id``."""
        return self.request.lessee_id


@dataclass(frozen=True)
class LeaseItem:
    """A snapshot of one row of the lease table, as read by a scan.

    ``lessee_id`` is ``None`` when the item is free. ``until_ns`` is the stored
    ``LeaseUntil`` (0 when free). ``fencing_token`` is 0 for an item never leased.
    ``duration`` is the holder's lease duration in seconds, as written with this very
    ``LeaseUntil`` by an aiolease holder; ``None`` when missing, stale (the row was since
    written by a Go worker) or absurd, in which case only the clock rule can judge expiry.
    """

    lease_id: str
    """The item's ID: the row's hash key value."""
    lessee_id: str | None
    """The current holder (``ProcessID``), or ``None`` when the item is free."""
    until_ns: int
    """The stored ``LeaseUntil``, Unix epoch nanoseconds; 0 when free."""
    fencing_token: int
    """The stored ``LeaseToken``; 0 for an item never leased by aiolease."""
    attributes: dict[str, Any] = field(default_factory=dict, hash=False)
    duration: float | None = None
    session: str | None = None
    """The key of the session the item is held under (``LeaseSession``), or ``None``."""

    @property
    def until(self) -> datetime | None:
        """``until_ns`` as a UTC datetime, or ``None`` when the row has no expiry."""
        return ns_to_datetime(self.until_ns) if self.until_ns > 0 else None


@dataclass(frozen=True)
class SessionRow:
    """A session row as read: whose session, until when, and whether it was ended.

    ``until_ns`` is the session's real expiry (``LeaseSessionUntil``, 0 once ended);
    ``token`` is 1 while the session lives and grows when it is ended; ``duration`` is the
    holder's session duration as stored with this expiry (``None`` if missing or stale).
    """

    session_id: str
    """The session row's key."""
    lessee_id: str | None
    """The session's holder (``ProcessID``)."""
    until_ns: int
    """The session's expiry, Unix epoch nanoseconds; 0 once ended."""
    token: int
    """1 while live; higher once ended (a tombstone)."""
    duration: float | None = None
    ended: bool = False
    """Ended by its holder or by a taker (or malformed): it can never be renewed again."""

    @property
    def until(self) -> datetime | None:
        """``until_ns`` as a UTC datetime, or ``None`` once ended."""
        return ns_to_datetime(self.until_ns) if self.until_ns > 0 else None


@dataclass(frozen=True)
class Holder:
    """Who holds an item, as :meth:`Locker.holder` and :meth:`Locker.watch_holder` report it.

    One tenure is one (``lessee_id``, ``fencing_token``): a renewal changes ``until`` (and
    ``item``) but not the tenure.
    """

    lease_id: str
    """The item's ID."""
    lessee_id: str
    """The holder's lessee ID (the row's ``ProcessID``)."""
    fencing_token: int
    """The holder's fencing token: for a leader, its term number."""
    item: LeaseItem = field(compare=False, repr=False)
    """The row as read, with its user attributes."""

    @property
    def until(self) -> datetime | None:
        """The stored expiry when read (UTC): renewals move it."""
        return self.item.until


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ns_to_datetime(ns: int) -> datetime:
    """Unix epoch nanoseconds to an aware UTC datetime (microsecond precision)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def datetime_to_ns(value: datetime) -> int:
    """An aware datetime to Unix epoch nanoseconds."""
    if not isinstance(value, datetime):
        raise TypeError(f"until must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("until must be timezone-aware (e.g. datetime.now(UTC))")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
