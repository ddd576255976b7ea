"""A package-level store, as in the Go package (``SetupLockStoreGlobal``, ``GlobalLockStore``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._store import LockStore

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = ["global_lock_store", "setup_lock_store_global"]

_global_store: LockStore | None = None


def setup_lock_store_global(
    client: DynamoDBClient, table_name: str, hash_key: str = "LeaseID"
) -> LockStore:
    """Create the process-wide :class:`LockStore` returned by :func:`global_lock_store`."""
    global _global_store
    _global_store = LockStore(client, table_name, hash_key)
    return _global_store


def global_lock_store() -> LockStore:
    """The store set up by :func:`setup_lock_store_global`; ``RuntimeError`` before that."""
    if _global_store is None:
        raise RuntimeError("no global lock store: call aiolease.setup_lock_store_global() first")
    return _global_store
