"""Section "edf": leases lost past capacity, renewals first come first served vs earliest deadline.

The server side is throttled on purpose, so that capacity is known and the queue forms in
the store's request slots (where the order is decided): the store has ``SLOTS`` slots and
every call holds its slot at least ``SERVICE_S`` (the real call, then a sleep for the rest),
so the store serves at most ``SLOTS / SERVICE_S`` calls/s. N leases are held with
``locker.heartbeat`` at a multiple of that capacity (renewals needed per second, at the
nominal period); each run counts the leases lost within the window. "fifo" renews with no
deadline (every waiter in arrival order, as the slots worked before issue 18); "edf" is the
heartbeat as it is. Both policies run on the same throttled server, alternating, per step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from aiolease import Lease, LeaseLostError, LeaseRequest, Locker, LockStore
from aiolease._wire.calls import deadline_first

from ._common import open_client, ratio, table_name

SLOTS = 2
SERVICE_S = 0.05
# Populations: (name, [(share of the demand, lease duration s, heartbeat period s)]).
POPULATIONS: list[tuple[str, list[tuple[float, float, float]]]] = [
    ("uniform 3 s leases", [(1.0, 3.0, 1.0)]),
    ("mixed 2 s and 12 s leases", [(0.5, 2.0, 2.0 / 3), (0.5, 12.0, 4.0)]),
]
_ACQUIRING = 8


class Throttled:
    """Delegates to a client; every call lasts at least ``service`` seconds."""

    def __init__(self, client: Any, service: float) -> None:
        self._client = client
        self._service = service
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._client, name)
        if name.startswith("_") or name == "meta" or not callable(target):
            return target

        async def call(**kwargs: Any) -> Any:
            t0 = time.monotonic()
            try:
                return await target(**kwargs)
            finally:
                self.calls += 1
                left = t0 + self._service - time.monotonic()
                if left > 0:
                    await asyncio.sleep(left)

        return call


class FifoStore(LockStore):
    """Renewals that carry no deadline: the slots serve them in arrival order (the before)."""

    async def renew(self, lease: Lease, until: datetime | None = None) -> Lease:
        with deadline_first(None):
            return await super().renew(lease, until)


@asynccontextmanager
async def _stores(endpoint_url: str, table: str) -> AsyncIterator[dict[str, LockStore]]:
    async with open_client(endpoint_url) as client:
        throttled = Throttled(client, SERVICE_S)
        yield {
            "fast": LockStore(client, table),
            "fifo": FifoStore(throttled, table, max_in_flight=SLOTS),
            "edf": LockStore(throttled, table, max_in_flight=SLOTS),
        }


async def _hold(
    fast: LockStore,
    store: LockStore,
    prefix: str,
    groups: list[tuple[int, float, float]],
    window: float,
) -> dict[str, Any]:
    """Take the leases (unthrottled), keep them on ``store`` for ``window`` s; count losses."""
    ramp = asyncio.Semaphore(_ACQUIRING)
    items: list[tuple[str, float, float]] = []
    for g, (count, duration, period) in enumerate(groups):
        items += [(f"{prefix}-{g}-{i:04d}", duration, period) for i in range(count)]

    locker = Locker(store, max_clock_skew=0.5)
    lost: dict[float, int] = {duration: 0 for _, duration, _ in groups}
    reasons: set[str] = set()
    leases: list[Lease] = []

    async def take_and_keep(item: str, duration: float, period: float) -> None:
        async with ramp:
            await fast.add_item(item)
            lease = await fast.acquire(item, LeaseRequest("bench-edf", duration))
        leases.append(lease)
        try:
            await locker.heartbeat(lease, period)  # from its acquisition on
        except LeaseLostError as exc:
            lost[lease.request.duration] += 1
            reasons.add(f"{exc.reason}: {exc}"[:300])

    # Groups interleaved, so that no group waits for the others' acquisitions.
    order = sorted(items, key=lambda item: int(item[0].rsplit("-", 1)[1]))
    tasks = [asyncio.create_task(take_and_keep(*item)) for item in order]
    await asyncio.sleep(window)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*(fast.release(lease) for lease in leases), return_exceptions=True)
    return {
        "n": len(items),
        "acquired": len(leases),
        "lost": sum(lost.values()),
        "lost_by_duration": lost,
        "reasons": sorted(reasons),
    }


async def edf(endpoint_url: str, fractions: list[float], window: float) -> dict[str, Any]:
    """Per population and multiple of capacity: leases lost under fifo and under edf."""
    capacity = SLOTS / SERVICE_S
    table = table_name("edf")
    steps: list[dict[str, Any]] = []
    async with _stores(endpoint_url, table) as stores:
        await stores["fast"].create_table()
        for p, (population, shares) in enumerate(POPULATIONS):
            for fraction in fractions:
                # Each group needs share * fraction * capacity renewals/s at its period.
                groups = [
                    (round(share * fraction * capacity * period), duration, period)
                    for share, duration, period in shares
                ]
                step: dict[str, Any] = {"population": population, "fraction": fraction}
                for policy in ("fifo", "edf"):
                    throttled = stores[policy].client
                    before = throttled.calls  # type: ignore[attr-defined]
                    t0 = time.monotonic()
                    step[policy] = await _hold(
                        stores["fast"], stores[policy], f"{policy}-{p}-{fraction}", groups, window
                    )
                    calls = throttled.calls - before  # type: ignore[attr-defined]
                    step[policy]["calls_per_s"] = calls / (time.monotonic() - t0)
                steps.append(step)
    return {
        "slots": SLOTS,
        "service_s": SERVICE_S,
        "capacity_per_s": capacity,
        "window_s": window,
        "steps": steps,
    }


def edf_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """One row per population and multiple: leases lost, edf vs fifo."""
    out: list[tuple[str, str, str, str, str, str]] = []
    for step in result["steps"]:
        f, e = step["fifo"], step["edf"]
        out.append(
            (
                f"leases lost at {step['fraction']:.1f}x capacity, {step['population']} "
                f"(N={e['n']}), edf vs fifo",
                f"{e['lost']} of {e['n']}",
                f"{f['lost']} of {f['n']}",
                f"{ratio(e['lost'], f['lost']):.2f}" if f["lost"] else "-",
                "<= fifo",
                "yes" if e["lost"] <= f["lost"] else "NO",
            )
        )
    return out
