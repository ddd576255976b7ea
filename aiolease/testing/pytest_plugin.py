"""pytest fixtures for code that uses aiolease: a moto server per session, a table per test.

Loaded automatically when aiolease is installed (``pytest11`` entry point). The fixtures
need the ``server`` extra and pytest-asyncio.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from aiolease import LockStore

from . import MotoServer, _restore_environment, _set_fake_environment


@pytest.fixture(scope="session")
def dynamodb_endpoint() -> Iterator[str]:
    """The endpoint URL of an embedded moto server shared by the whole test session."""
    saved = _set_fake_environment()
    with MotoServer() as server:
        assert server.endpoint_url is not None
        yield server.endpoint_url
    _restore_environment(saved)


@pytest.fixture
async def lock_store(dynamodb_endpoint: str) -> AsyncIterator[LockStore]:
    """A :class:`aiolease.LockStore` on a fresh, empty table of the session's server."""

    table = f"leases-{uuid.uuid4().hex[:12]}"
    async with LockStore.connect(table, endpoint_url=dynamodb_endpoint) as store:
        await store.create_table()
        yield store
