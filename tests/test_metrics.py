"""OpenTelemetry metrics: after a scripted run, the SDK's in-memory reader shows exactly the
instruments, units, attributes and values that docs/observability.md documents."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aiolease import (
    LeaseAcquired,
    LeaseEvent,
    LeaseLost,
    LeaseLostError,
    LeaseRenewed,
    LeaseRequest,
    LeaseTakenOver,
    Locker,
    LockStore,
)

from .test_events import WAIT, until
from .test_locker import steal

sdk = pytest.importorskip("opentelemetry.sdk.metrics", reason="needs opentelemetry-sdk")
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402

DOC = Path(__file__).resolve().parent.parent / "docs" / "observability.md"
KINDS = {"Counter": "Sum", "UpDownCounter": "Sum", "Histogram": "Histogram"}


def documented() -> dict[str, tuple[str, str, set[str]]]:
    """The metric table of the docs: name -> (kind, unit, attribute keys)."""
    rows = re.findall(
        r"^\| `(aiolease\.[a-z._]+)` \| (\w+) \| `([^`]+)` \| ([^|]+) \|", DOC.read_text(), re.M
    )
    assert rows, "docs/observability.md has no metric table"
    return {
        name: (kind, unit, set(re.findall(r"`([a-z._]+)`", attributes)))
        for name, kind, unit, attributes in rows
    }


def points(reader: InMemoryMetricReader) -> dict[str, tuple[str, str, list[Any]]]:
    """Exported metrics: name -> (data type, unit, data points)."""
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, tuple[str, str, list[Any]]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "aiolease"
            for metric in scope.metrics:
                kind = type(metric.data).__name__
                found[metric.name] = (kind, metric.unit, list(metric.data.data_points))
    return found


def by(points_: list[Any], key: str) -> dict[Any, Any]:
    return {dict(p.attributes).get(key): p for p in points_}


@pytest.fixture
async def store(client: Any, table_name: str) -> AsyncIterator[LockStore]:
    s = LockStore(client, table_name)
    await s.create_table()
    await s.add_item("a")
    yield s
    await s.aclose()


async def test_a_scripted_run_exports_exactly_the_documented_metrics(
    client: Any, store: LockStore
) -> None:
    reader = InMemoryMetricReader()
    provider = sdk.MeterProvider(metric_readers=[reader])
    table = store.table_name
    # A crashed worker's expired lease on "a": the pool obtain below takes it over.
    await Locker(store).obtain_lease(LeaseRequest("crashed", 0.2))
    locker = Locker(store, max_clock_skew=0.0, meter_provider=provider)
    async with locker.events() as stream:
        with pytest.raises(LeaseLostError, match="thief"):  # noqa: PT012
            async with locker.lease(LeaseRequest("w1", 2), wait_period=0.1, heartbeat_period=0.3):
                seen = await until(stream, LeaseRenewed)
                seen += await until(stream, LeaseRenewed)
                await steal(client, store, "a")
                await asyncio.sleep(WAIT)  # cancelled by the loss
        seen += await until(stream, LeaseLost)
        await store.add_item("b")
        async with locker.lease(LeaseRequest("w1", 2), "b"):
            seen += await until(stream, LeaseAcquired)
    renewed = sum(isinstance(e, LeaseRenewed) for e in seen)
    assert isinstance(seen[0], LeaseTakenOver) and renewed >= 2, seen

    found = points(reader)
    docs = documented()
    assert set(found) == set(docs), "the instruments differ from the documented ones"
    for name, (kind, unit, attributes) in docs.items():
        data_type, exported_unit, data = found[name]
        assert data_type == KINDS[kind], f"{name} is a {data_type}, documented as {kind}"
        assert exported_unit == unit, f"{name} has unit {exported_unit}, documented {unit}"
        for point in data:
            assert set(point.attributes) == attributes, (
                f"{name} has attributes {set(point.attributes)}, documented {attributes}"
            )
            assert point.attributes["aiolease.table"] == table

    def value(name: str, key: str = "", of: object = None) -> Any:
        data = found[name][2]
        return by(data, key)[of] if key else data[0]

    assert len(found["aiolease.leases.held"][2]) == 1
    assert value("aiolease.leases.held").value == 0, "both heartbeats have ended"
    assert value("aiolease.acquisitions", "aiolease.takeover", True).value == 1
    assert value("aiolease.acquisitions", "aiolease.takeover", False).value == 1
    assert value("aiolease.obtain.duration").count == 2
    assert set(by(found["aiolease.renewals"][2], "aiolease.outcome")) == {"renewed", "lost"}
    assert value("aiolease.renewals", "aiolease.outcome", "renewed").value == renewed
    assert value("aiolease.renewals", "aiolease.outcome", "lost").value == 1
    durations = by(found["aiolease.renewal.duration"][2], "aiolease.outcome")
    assert (durations["renewed"].count, durations["lost"].count) == (renewed, 1)
    assert list(durations["renewed"].explicit_bounds)[:2] == [0.005, 0.01], "seconds buckets"
    assert by(found["aiolease.losses"][2], "aiolease.reason").keys() == {"taken over"}
    assert value("aiolease.losses", "aiolease.reason", "taken over").value == 1
    lag = value("aiolease.heartbeat.lag")
    assert 1 <= lag.count <= renewed + 1, "one per heartbeat wake-up before a renewal"
    assert 0 <= lag.sum < lag.count * 0.25, f"lag of {lag.sum} s over {lag.count} wake-ups"
    provider.shutdown()


async def test_the_lessee_is_an_attribute_only_when_asked_for(store: LockStore) -> None:
    reader = InMemoryMetricReader()
    provider = sdk.MeterProvider(metric_readers=[reader])
    locker = Locker(store, meter_provider=provider, metrics_lessee_id=True)
    got: list[LeaseEvent] = []
    locker.add_listener(got.append)
    lease = await locker.obtain_lease(LeaseRequest("w1", 2))
    (point,) = points(reader)["aiolease.acquisitions"][2]
    assert dict(point.attributes) == {
        "aiolease.table": store.table_name,
        "aiolease.lessee_id": "w1",
        "aiolease.takeover": False,
    }
    await store.release(lease)
    provider.shutdown()


def test_a_meter_provider_must_be_one(store: LockStore) -> None:
    with pytest.raises(TypeError, match="MeterProvider"):
        Locker(store, meter_provider=object())


def test_opentelemetry_is_not_imported_without_a_meter_provider() -> None:
    code = (
        "import sys, aiolease\n"
        "class NoClient:\n"
        "    update_item = None\n"
        "aiolease.Locker(aiolease.LockStore(NoClient(), 'leases'))\n"
        "bad = [m for m in sys.modules if m.startswith(('opentelemetry', 'aiolease._metrics'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_attribute_cache_stays_bounded_with_many_lessees() -> None:
    from datetime import UTC, datetime

    from aiolease import Lease
    from aiolease._metrics import _MAX_CACHED_ATTRIBUTES, Metrics

    metrics = Metrics(
        sdk.MeterProvider(metric_readers=[InMemoryMetricReader()]), "t", lessee_id=True
    )
    now = datetime.now(UTC)
    for n in range(3 * _MAX_CACHED_ATTRIBUTES):
        metrics.renewal(Lease("a", LeaseRequest(f"w{n}", 3), now, 1), "renewed", 0.01)
    assert 0 < len(metrics._attributes) <= _MAX_CACHED_ATTRIBUTES
