"""The names of one lease table: table, hash key and bookkeeping attributes, fixed at creation."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_LEASE_ID_BYTES", "TABLE_NAME", "Schema"]

# DynamoDB's limit on a partition key value (UTF-8 bytes).
MAX_LEASE_ID_BYTES = 2048
# DynamoDB's rule for table and index names.
TABLE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{3,255}$")

# The placeholders every request uses for the bookkeeping names (see Schema.names).
KEY, LESSEE, UNTIL, TOKEN, DURATION, BUCKET = "#k", "#l", "#u", "#t", "#d", "#b"
# Sessions: an item's session key (LeaseSession), a session row's real expiry (LeaseSessionUntil).
SESSION, SESSION_UNTIL = "#s", "#su"
# Handoff on request: the requester's session key on a held item, and until when it stands.
HANDOFF, HANDOFF_UNTIL = "#h", "#hu"


@dataclass(frozen=True)
class Schema:
    """A table's name, its hash key and the bookkeeping attribute names; read-only.

    Every request and every parse of an answer reads its names here, so reads and writes
    can never disagree about them. Bad names raise ``TypeError``/``ValueError`` naming the
    argument.
    """

    table_name: str
    hash_key: str = "LeaseID"
    lessee_attribute: str = "ProcessID"
    until_attribute: str = "LeaseUntil"
    token_attribute: str = "LeaseToken"
    duration_attribute: str = "LeaseDuration"
    # Bookkeeping in both layouts (never a user attribute), written by the indexed one.
    bucket_attribute: str = "LeaseBucket"
    # Sessions (docs/protocol.md): on an item held under a session, the session row's key;
    # on a session row, the session's real expiry (its presence marks a session row).
    session_attribute: str = "LeaseSession"
    session_until_attribute: str = "LeaseSessionUntil"
    # Handoff on request (docs/balancing.md): on an item, the session asking its holder for
    # it, and the wall-clock ns until which the request (and, once freed, the item's
    # reservation for that session) stands.
    handoff_attribute: str = "LeaseHandoff"
    handoff_until_attribute: str = "LeaseHandoffUntil"

    def __post_init__(self) -> None:
        if not isinstance(self.table_name, str):
            raise TypeError(f"table_name must be a str, not {type(self.table_name).__name__}")
        if not TABLE_NAME.match(self.table_name):
            raise ValueError(
                f"table_name {self.table_name!r} is not a valid DynamoDB table name "
                "(3-255 characters of letters, digits, '_', '-', '.')"
            )
        names = self.attribute_names()
        for arg, name in names.items():
            if not isinstance(name, str):
                raise TypeError(f"{arg} must be a str, not {type(name).__name__}")
            if not name or len(name.encode()) > 255:
                raise ValueError(f"{arg} must be 1 to 255 bytes long, not {name!r}")
        if len(set(names.values())) != len(names):
            raise ValueError(f"hash_key and the bookkeeping attribute names must differ: {names}")

    def attribute_names(self) -> dict[str, str]:
        """The configurable names by argument name (``hash_key``, ``lessee_attribute``...)."""
        return {
            "hash_key": self.hash_key,
            "lessee_attribute": self.lessee_attribute,
            "until_attribute": self.until_attribute,
            "token_attribute": self.token_attribute,
            "duration_attribute": self.duration_attribute,
            "bucket_attribute": self.bucket_attribute,
            "session_attribute": self.session_attribute,
            "session_until_attribute": self.session_until_attribute,
            "handoff_attribute": self.handoff_attribute,
            "handoff_until_attribute": self.handoff_until_attribute,
        }

    @property
    def bookkeeping(self) -> frozenset[str]:
        """The attributes the library owns: never in ``attributes``, never written by users."""
        return frozenset(
            {
                self.lessee_attribute,
                self.until_attribute,
                self.token_attribute,
                self.duration_attribute,
                self.bucket_attribute,
                self.session_attribute,
                self.session_until_attribute,
                self.handoff_attribute,
                self.handoff_until_attribute,
            }
        )

    def names(self, *placeholders: str) -> dict[str, str]:
        """``ExpressionAttributeNames`` for ``placeholders`` (``#k``, ``#l``, ``#u``...)."""
        every = {
            KEY: self.hash_key,
            LESSEE: self.lessee_attribute,
            UNTIL: self.until_attribute,
            TOKEN: self.token_attribute,
            DURATION: self.duration_attribute,
            BUCKET: self.bucket_attribute,
            SESSION: self.session_attribute,
            SESSION_UNTIL: self.session_until_attribute,
            HANDOFF: self.handoff_attribute,
            HANDOFF_UNTIL: self.handoff_until_attribute,
        }
        return {p: every[p] for p in placeholders}

    def key(self, lease_id: object) -> dict[str, Any]:
        """The row's key for ``lease_id``, validated (a non-empty str within DynamoDB's limit)."""
        if not isinstance(lease_id, str):
            raise TypeError(f"lease_id must be a str, not {type(lease_id).__name__}")
        if not lease_id:
            raise ValueError("lease_id must not be empty")
        size = len(lease_id.encode("utf-8", "surrogatepass"))
        if size > MAX_LEASE_ID_BYTES:
            raise ValueError(
                f"lease_id is {size} bytes in UTF-8; DynamoDB's key limit is {MAX_LEASE_ID_BYTES}"
            )
        return {self.hash_key: {"S": lease_id}}

    def where(self) -> str:
        """The table, for messages: ``table 'x' (hash key 'y')``."""
        return f"table {self.table_name!r} (hash key {self.hash_key!r})"
