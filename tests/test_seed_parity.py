"""The Go package's package-level helpers: SetLogger, SetupLockStoreGlobal, GlobalLockStore."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import aiolease
from aiolease import LeaseRequest, Locker, LockStore


@pytest.fixture
def restore_globals() -> Any:
    import aiolease._global as g
    import aiolease._log as log

    saved = (g._global_store, log._logger)
    yield
    g._global_store, log._logger = saved


def test_the_library_logs_to_aiolease_without_a_handler_of_its_own() -> None:
    logger = logging.getLogger("aiolease")
    assert logger.handlers == []


async def test_set_logger_routes_every_record(
    store: LockStore, restore_globals: None, caplog: pytest.LogCaptureFixture
) -> None:
    mine = logging.getLogger("my.service.leases")
    aiolease.set_logger(mine)
    caplog.set_level(logging.DEBUG)
    await store.add_item("a")
    async with Locker(store).lease(LeaseRequest("w", 2)):
        pass
    names = {r.name for r in caplog.records if r.getMessage().startswith(("acquired", "released"))}
    assert names == {"my.service.leases"}


def test_set_logger_refuses_a_non_logger(restore_globals: None) -> None:
    with pytest.raises(TypeError, match=r"logging\.Logger"):
        aiolease.set_logger(print)  # type: ignore[arg-type]


async def test_setup_lock_store_global(client: Any, table_name: str, restore_globals: None) -> None:
    import aiolease._global as g

    g._global_store = None
    with pytest.raises(RuntimeError, match="setup_lock_store_global"):
        aiolease.global_lock_store()
    store = aiolease.setup_lock_store_global(client, table_name, "ShardID")
    assert aiolease.global_lock_store() is store
    assert (store.table_name, store.hash_key) == (table_name, "ShardID")
    await store.create_table()
    await store.add_item("s-1")
    assert await aiolease.global_lock_store().list_lease_ids() == ["s-1"]


def test_the_public_names_of_the_contract_are_exported() -> None:
    for name in (
        "LeaseRequest",
        "Lease",
        "LeaseError",
        "LeaseNotObtainedError",
        "LeaseLostError",
        "LeaseStoreError",
        "LockStore",
        "Locker",
        "set_logger",
        "setup_lock_store_global",
        "global_lock_store",
    ):
        assert name in aiolease.__all__ and hasattr(aiolease, name), name
    for name in ("LeaseNotObtainedError", "LeaseLostError", "LeaseStoreError"):
        assert issubclass(getattr(aiolease, name), aiolease.LeaseError)
