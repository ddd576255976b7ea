"""Sections 1 and 2a: acquire+release latency and client CPU per renewal, against the floor."""

from __future__ import annotations

import time
from typing import Any

from aiolease import LeaseRequest, LockStore

from ._common import CountingClient, bare_update, open_client, ratio, summary, table_name
from .peer import peer_cpu_per_renewal


async def acquire_release(endpoint_url: str, rounds: int) -> dict[str, Any]:
    """One worker: store.acquire + store.release vs two bare UpdateItems, interleaved."""
    async with open_client(endpoint_url) as client:
        store = LockStore(client, table_name("latency"))
        await store.create_table()
        await store.add_item("a")
        await store.add_item("floor")
        request = LeaseRequest("bench-worker", 30)

        async def ours() -> float:
            t0 = time.perf_counter()
            lease = await store.acquire("a", request)
            await store.release(lease)
            return time.perf_counter() - t0

        async def floor() -> float:
            t0 = time.perf_counter()
            await bare_update(client, store.table_name, "floor")
            await bare_update(client, store.table_name, "floor")
            return time.perf_counter() - t0

        # The exact two requests aiolease sends, captured once and replayed through the bare
        # client: the server's cost of those expressions without the library around them.
        sent: list[dict[str, Any]] = []
        recorder = CountingClient(client, on_update=lambda kwargs, ok: sent.append(kwargs))
        recording = LockStore(recorder, store.table_name)
        await recording.release(await recording.acquire("a", request))
        acquire_kwargs, release_kwargs = sent

        async def same_requests() -> float:
            t0 = time.perf_counter()
            response = await client.update_item(**acquire_kwargs)
            token = response["Attributes"]["LeaseToken"]
            values = {**release_kwargs["ExpressionAttributeValues"], ":t": token}
            await client.update_item(**{**release_kwargs, "ExpressionAttributeValues": values})
            return time.perf_counter() - t0

        kinds = {"aiolease": ours, "floor": floor, "same_requests": same_requests}
        for _ in range(20):  # warm up the connection pool and every code path
            for measure in kinds.values():
                await measure()
        samples: dict[str, list[float]] = {name: [] for name in kinds}
        # Alternate (in blocks of 10) so that load drift on the shared machine hits all alike.
        for _ in range(rounds // 10):
            for name, measure in kinds.items():
                for _ in range(10):
                    samples[name].append(await measure())
    stats = {name: summary(values) for name, values in samples.items()}
    return {
        "aiolease_s": stats["aiolease"],
        "floor_s": stats["floor"],
        "same_requests_s": stats["same_requests"],
        "ratio_median": ratio(stats["aiolease"]["median"], stats["floor"]["median"]),
        "ratio_p99": ratio(stats["aiolease"]["p99"], stats["floor"]["p99"]),
        "same_requests_ratio_median": ratio(
            stats["same_requests"]["median"], stats["floor"]["median"]
        ),
        "library_ratio_median": ratio(
            stats["aiolease"]["median"], stats["same_requests"]["median"]
        ),
        "target": 1.10,
        "samples": samples,
    }


async def cpu_per_renewal(endpoint_url: str, calls: int) -> dict[str, Any]:
    """time.process_time() per store.renew vs per bare UpdateItem (sequential, same client)."""
    async with open_client(endpoint_url) as client:
        store = LockStore(client, table_name("cpu"))
        await store.create_table()
        await store.add_item("a")
        await store.add_item("floor")
        lease = await store.acquire("a", LeaseRequest("bench-worker", 600))
        for _ in range(20):
            lease = await store.renew(lease)
            await bare_update(client, store.table_name, "floor")
        ours: list[float] = []
        floor: list[float] = []
        block = 50
        for _ in range(max(1, calls // block)):
            c0 = time.process_time()
            for _ in range(block):
                lease = await store.renew(lease)
            c1 = time.process_time()
            for _ in range(block):
                await bare_update(client, store.table_name, "floor")
            c2 = time.process_time()
            ours.append((c1 - c0) / block)
            floor.append((c2 - c1) / block)
        await store.release(lease)
        ours_cpu = sum(ours) / len(ours)
        floor_cpu = sum(floor) / len(floor)
        result: dict[str, Any] = {
            "calls": len(ours) * block,
            "aiolease_cpu_s": ours_cpu,
            "floor_cpu_s": floor_cpu,
            "ratio": ratio(ours_cpu, floor_cpu),
            "target": 1.15,
        }
    result["peer"] = peer_cpu_per_renewal(endpoint_url, calls)
    result["peer_ratio"] = ratio(result["peer"]["cpu_s"], floor_cpu)
    return result
