"""Servers that answer a refused conditional write without the old item (dynalite among
them): every decision that needs the refusing row reads it instead, the session row whole.

Each test runs a path that needs the row behind a refusal with every refusal stripped of its
item, against the moto server; tests/test_session_store.py runs the same paths with the item.
"""

from __future__ import annotations

import pytest

from aiolease import LeaseLostError, LeaseRequest, LockStore

from . import faults
from .faults import FaultyClient

A = LeaseRequest("worker-a", 2)


@pytest.fixture
def stripped(faulty: tuple[LockStore, FaultyClient]) -> tuple[LockStore, FaultyClient]:
    store, proxy = faulty
    proxy.always("update_item", faults.without_old_item)
    return store, proxy


async def test_a_lost_start_answer_is_recognised_as_ours(
    stripped: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = stripped
    proxy.inject("update_item", faults.drop_response)
    session = await store.start_session(A)
    row = await store.get_session(session.lease_id)
    assert row is not None and row.until_ns == session.until_ns and not row.ended


async def test_a_lost_renewal_answer_is_still_a_renewal(
    stripped: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = stripped
    session = await store.start_session(A)
    proxy.inject("update_item", faults.drop_response)
    renewed = await store.renew_session(session)
    row = await store.get_session(session.lease_id)
    assert row is not None and row.until_ns == renewed.until_ns and not row.ended


async def test_a_renewal_after_the_end_is_lost_as_ended(
    stripped: tuple[LockStore, FaultyClient],
) -> None:
    store, _ = stripped
    session = await store.start_session(A)
    assert await store.end_session(session) is True
    with pytest.raises(LeaseLostError) as lost:
        await store.renew_session(session)
    assert lost.value.reason == "session ended"


async def test_a_lost_end_answer_is_still_an_end(
    stripped: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = stripped
    session = await store.start_session(A)
    proxy.inject("update_item", faults.drop_response)
    assert await store.end_session(session) is True
    row = await store.get_session(session.lease_id)
    assert row is not None and row.ended


async def test_a_takers_lost_end_answer_is_still_an_end(
    stripped: tuple[LockStore, FaultyClient],
) -> None:
    store, proxy = stripped
    session = await store.start_session(A)
    seen = await store.get_session(session.lease_id)
    assert seen is not None
    proxy.inject("update_item", faults.drop_response)
    assert await store.end_expired_session(seen) is True
    with pytest.raises(LeaseLostError, match="session ended"):
        await store.renew_session(session)
