"""Shared fixtures. The moto server and fresh tables come from aiolease.testing's plugin."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aiolease import LockStore
from aiolease.testing import fake_session

from .faults import FaultyClient


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run the long chaos scenarios")


@pytest.fixture
async def client(dynamodb_endpoint: str) -> AsyncIterator[Any]:
    """A raw aiobotocore DynamoDB client on the test server, for checks behind the store's back."""
    async with fake_session().client("dynamodb", endpoint_url=dynamodb_endpoint) as c:
        yield c


@pytest.fixture
def table_name() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


# Both table layouts run every store and locker test: the plain table that obtain_lease
# scans, and the indexed layout (a small bucket count, so that queries span buckets).
LAYOUTS = {"scan": {}, "indexed": {"index_name": "LeaseBuckets", "buckets": 4}}


@pytest.fixture(params=list(LAYOUTS))
def layout(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The LockStore options of the table layout under test."""
    options: dict[str, Any] = LAYOUTS[request.param]
    return options


@pytest.fixture
async def store(client: Any, table_name: str, layout: dict[str, Any]) -> AsyncIterator[LockStore]:
    """A store on a fresh table, on the raw client."""
    s = LockStore(client, table_name, **layout)
    await s.create_table()
    yield s
    await s.aclose()


@pytest.fixture
async def faulty(
    client: Any, table_name: str, layout: dict[str, Any]
) -> AsyncIterator[tuple[LockStore, FaultyClient]]:
    """A store on a fresh table whose client injects the faults a test queues."""
    proxy = FaultyClient(client)
    s = LockStore(proxy, table_name, **layout)
    await s.create_table()
    yield s, proxy
    await s.aclose()
