"""Section "events": client CPU per heartbeat renewal with events and metrics on vs off.

Lockers on one client and one table, each heartbeating its own item back to back (a period
far shorter than a call): "off" is a plain locker; "events" has a listener and a stream
being read; "metrics" an OpenTelemetry SDK meter provider (with an in-memory reader); "on"
both. They run in alternating blocks so that load drift on a shared machine hits all alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import warnings
from typing import Any

from aiolease import EventStream, LeaseEvent, LeaseRequest, Locker, LockStore

from ._common import CountingClient, open_client, ratio, table_name

# Back-to-back renewals: the heartbeat sleeps at most this long between them.
PERIOD = 0.0005
DURATION = 600.0
TARGET = 1.05


async def _block(locker: Locker, lease: Any, counter: CountingClient, renewals: int) -> float:
    """CPU seconds per renewal for ``renewals`` heartbeat renewals of ``lease``."""
    done = asyncio.Event()
    start = counter.calls["update_item"]

    def on_update(kwargs: dict[str, Any], ok: bool) -> None:
        if counter.calls["update_item"] - start >= renewals:
            done.set()

    counter.on_update = on_update
    c0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        heartbeat = asyncio.create_task(locker.heartbeat(lease, PERIOD))
    await done.wait()
    heartbeat.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await heartbeat
    cpu = time.process_time() - c0
    counter.on_update = None
    return cpu / (counter.calls["update_item"] - start)


async def events_cost(endpoint_url: str, renewals: int) -> dict[str, Any]:
    """CPU per renewal (median of blocks): off, events only, metrics only, both on."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    providers = [MeterProvider(metric_readers=[InMemoryMetricReader()]) for _ in range(2)]
    received = 0

    def listener(event: LeaseEvent) -> None:
        nonlocal received
        received += 1

    async def consume(stream: EventStream) -> None:
        async for _ in stream:
            pass

    async with open_client(endpoint_url) as client:
        counter = CountingClient(client)
        store = LockStore(counter, table_name("events"))
        await store.create_table()
        lockers = {
            "off": Locker(store),
            "events": Locker(store),
            "metrics": Locker(store, meter_provider=providers[0]),
            "on": Locker(store, meter_provider=providers[1]),
        }
        streams = []
        for name in ("events", "on"):
            lockers[name].add_listener(listener)
            streams.append(lockers[name].events())
        consumers = [asyncio.create_task(consume(stream)) for stream in streams]
        request = LeaseRequest("bench-worker", DURATION)
        leases = {}
        for name, locker in lockers.items():
            await store.add_item(name)
            leases[name] = await locker.wait_until_lease_obtained(request, lease_id=name)
        samples: dict[str, list[float]] = {name: [] for name in lockers}
        block = 50
        for name, locker in lockers.items():  # warm up every path
            await _block(locker, leases[name], counter, 20)
        names = list(lockers)
        for round_ in range(max(1, renewals // block)):
            # A different order each round: no configuration always runs right after another.
            for name in names[round_ % 4 :] + names[: round_ % 4]:
                samples[name].append(await _block(lockers[name], leases[name], counter, block))
        for stream in streams:
            stream.close()
        await asyncio.gather(*consumers)
        for lease in leases.values():
            await store.release(lease)
        await store.aclose()
    for provider in providers:
        provider.shutdown()
    # Medians of the blocks: a block that another process's burst hit does not count twice.
    cpu = {name: statistics.median(values) for name, values in samples.items()}

    def paired(name: str) -> float:
        """The median over rounds of this configuration's block against the round's "off"
        block: slow drift in the machine's load cancels out within a round."""
        return statistics.median(
            ratio(a, b) for a, b in zip(samples[name], samples["off"], strict=True)
        )

    return {
        "renewals": len(samples["on"]) * block,
        "off_cpu_s": cpu["off"],
        "events_cpu_s": cpu["events"],
        "metrics_cpu_s": cpu["metrics"],
        "on_cpu_s": cpu["on"],
        "ratio": paired("on"),
        "events_ratio": paired("events"),
        "metrics_ratio": paired("metrics"),
        "events_received": received,
        "target": TARGET,
    }
