"""The exception hierarchy: one base class, one subclass per way a lease can fail."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._types import LeaseItem

__all__ = [
    "LeaseError",
    "LeaseLostError",
    "LeaseNotObtainedError",
    "LeaseStoreError",
    "LeaseUnavailableError",
]


class LeaseError(Exception):
    """Base class of every error aiolease raises on purpose.

    ``lease_id`` names the item concerned, when there is one.
    """

    def __init__(self, message: str, *, lease_id: str | None = None) -> None:
        super().__init__(message)
        self.lease_id = lease_id


class LeaseNotObtainedError(LeaseError):
    """The item is held by someone else, or there is no such item, or none was free.

    ``holder`` is the lessee that held the item, when known; ``item_exists`` is ``False``
    when the named item has no row (waiting for it will not help).
    """

    # Not part of the API: the row that refused the acquisition, when one did (the takeover
    # rules read its session key instead of reading the row again).
    _item: LeaseItem | None = None

    def __init__(
        self,
        message: str,
        *,
        lease_id: str | None = None,
        holder: str | None = None,
        item_exists: bool = True,
    ) -> None:
        super().__init__(message, lease_id=lease_id)
        self.holder = holder
        self.item_exists = item_exists


class LeaseLostError(LeaseError):
    """A held lease was taken over, released by someone else, or could not be renewed in time.

    Once raised, the work done under the lease must be assumed unsafe to continue.
    ``reason`` says why in a few words (``"taken over by 'w2'"``, ``"released by another"``,
    ``"local deadline passed"``, ``"overrun"``, ...); ``str()`` tells the whole story, and
    ``detail`` the state of the row or the circumstance that decided it.
    """

    def __init__(
        self,
        message: str,
        *,
        lease_id: str | None = None,
        reason: str = "",
        detail: str = "",
    ) -> None:
        super().__init__(message, lease_id=lease_id)
        self.reason = reason or message
        self.detail = detail or message


class LeaseStoreError(LeaseError):
    """The table cannot be used: missing, wrong key schema, access denied, malformed rows.

    Retrying does not help; the message names the table and the hash key.
    """

    def __init__(
        self,
        message: str,
        *,
        table: str | None = None,
        hash_key: str | None = None,
        lease_id: str | None = None,
    ) -> None:
        super().__init__(message, lease_id=lease_id)
        self.table = table
        self.hash_key = hash_key


class LeaseUnavailableError(LeaseError):
    """DynamoDB did not answer usefully (throttling, 5xx, timeouts, no connection).

    Raised only once the library's own retries are exhausted. The outcome of the write
    it was attempting is unknown; the original error is the ``__cause__``.
    """


class MalformedRowError(LeaseStoreError, LeaseNotObtainedError):
    """A row no acquisition can take (a malformed ``LeaseToken``), named in the message.

    A store error, and also "not obtained" with ``item_exists`` False: a pool acquisition
    skips it, a named wait gives up at once (waiting will not fix the row). Not exported:
    catch either base class.
    """

    def __init__(self, message: str, *, table: str, hash_key: str, lease_id: str) -> None:
        super().__init__(message, table=table, hash_key=hash_key, lease_id=lease_id)
        self.holder = None
        self.item_exists = False
