"""pytest fixtures for code that uses aiolease: a moto server per session, a table per test.

Loaded automatically when aiolease is installed (``pytest11`` entry point). The fixtures
need the ``server`` extra and pytest-asyncio; they work in its strict and auto modes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

from aiolease import LockStore

from . import MotoServer, _restore_environment, _set_fake_environment

ENDPOINT_VARIABLE = "AIOLEASE_TEST_ENDPOINT_URL"

# pytest-asyncio's strict mode only runs async fixtures declared with its own decorator.
# This plugin loads in every pytest run where aiolease is installed, so it must not fail
# where pytest-asyncio is missing (then nobody can use the async fixture anyway).
if TYPE_CHECKING:
    _async_fixture = pytest.fixture
else:
    try:
        from pytest_asyncio import fixture as _async_fixture
    except ImportError:  # pragma: no cover
        _async_fixture = pytest.fixture


@pytest.fixture(scope="session")
def dynamodb_endpoint() -> Iterator[str]:
    """The endpoint URL of an embedded moto server shared by the whole test session, or
    of the server named by ``$AIOLEASE_TEST_ENDPOINT_URL`` (to run a suite against another
    DynamoDB-compatible server)."""
    saved = _set_fake_environment()
    if url := os.environ.get(ENDPOINT_VARIABLE):
        yield url
        _restore_environment(saved)
        return
    with MotoServer() as server:
        assert server.endpoint_url is not None
        yield server.endpoint_url
    _restore_environment(saved)


@_async_fixture
async def lock_store(dynamodb_endpoint: str) -> AsyncIterator[LockStore]:
    """A :class:`aiolease.LockStore` on a fresh, empty table of the session's server."""

    table = f"leases-{uuid.uuid4().hex[:12]}"
    async with LockStore.connect(table, endpoint_url=dynamodb_endpoint) as store:
        await store.create_table()
        yield store
