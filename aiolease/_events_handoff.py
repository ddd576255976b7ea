"""The handoff events of ``session.serve()`` (docs/balancing.md, "Handoff on request").

``lease_id`` is the item handed over, ``lessee_id`` this locker's lessee, ``token`` the
fencing token of the tenure concerned (the holder's, or the requester's new one once it
took the item); ``requester`` is the asking session's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ._events import LeaseEvent

__all__ = [
    "HandoffAccepted",
    "HandoffCompleted",
    "HandoffEvent",
    "HandoffRequested",
    "HandoffWithdrawn",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class HandoffEvent(LeaseEvent):
    """Base of the handoff events."""

    requester: str
    """The key of the session that asked for the item."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HandoffRequested(HandoffEvent):
    """This worker, below its share, asked the item's holder for it (on the requester)."""

    holder: str
    """The lessee holding the item when asked."""
    until: datetime
    """Until when the request (and then the freed item's reservation) stands (UTC)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HandoffAccepted(HandoffEvent):
    """This worker, above its share, accepted a request: the item's work is draining, and
    the item is released, reserved for the requester (on the holder)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HandoffCompleted(HandoffEvent):
    """The requester took the item it asked for, with a higher fencing token (on the
    requester); ``token`` is its new one."""

    waited: float
    """Seconds from the request to the take."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HandoffWithdrawn(HandoffEvent):
    """A request was removed: on the holder, ``reason`` "dead requester", "expired" or
    "declined"; on the requester, "fulfilled elsewhere" or "stopped"."""

    reason: str
    """Why, in a few words."""
