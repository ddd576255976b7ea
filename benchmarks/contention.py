"""Section 3: 20 workers race for a pool of items; write attempts per obtained lease.

aiolease's ``Locker.obtain_lease`` against the seed's algorithm (scan the first page, try
every ID in order with a conditional update), written here as a small baseline.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from aiolease import LeaseNotObtainedError, LeaseRequest, Locker, LockStore

from ._common import CountingClient, open_client, ratio, summary, table_name

# Long enough that no lease expires during the race: every item is taken exactly once.
_DURATION = 600.0


async def _seed_obtain(client: Any, table: str, lessee: str) -> str | None:
    """The seed's ObtainLease: first Scan page, then its Lease() on each ID in order."""
    page = await client.scan(TableName=table)
    for row in page.get("Items", []):
        lease_id = row["LeaseID"]["S"]
        now = time.time_ns()
        try:
            await client.update_item(
                TableName=table,
                Key={"LeaseID": {"S": lease_id}},
                UpdateExpression="SET #l = :l, #u = :u",
                ConditionExpression=(
                    "attribute_exists(#k) AND (attribute_not_exists(#l) OR #u < :now OR #l = :l)"
                ),
                ExpressionAttributeNames={"#k": "LeaseID", "#l": "ProcessID", "#u": "LeaseUntil"},
                ExpressionAttributeValues={
                    ":l": {"S": lessee},
                    ":u": {"N": str(now + int(_DURATION * 1e9))},
                    ":now": {"N": str(now)},
                },
            )
        except client.exceptions.ConditionalCheckFailedException:
            continue
        return lease_id
    return None


async def _race(
    endpoint_url: str, workers: int, items: int, algorithm: str, budget: float
) -> dict[str, Any]:
    """``workers`` tasks take leases until all ``items`` are held (or ``budget`` s pass)."""
    async with open_client(endpoint_url) as raw:
        setup = LockStore(raw, table_name(f"race-{algorithm}"))
        await setup.create_table()
        await asyncio.gather(*(setup.add_item(f"item-{i:05d}") for i in range(items)))
        failed = {"endgame": 0, "before": 0}

        def on_update(kwargs: dict[str, Any], ok: bool) -> None:
            # Failed writes while fewer items are left than there are workers racing for them.
            if not ok:
                failed["endgame" if items - len(taken) <= workers else "before"] += 1

        client = CountingClient(raw, on_update=on_update)
        store = LockStore(client, setup.table_name)
        locker = Locker(store, max_clock_skew=0.5)
        taken: dict[str, str] = {}
        per_lease: list[float] = []
        start = asyncio.Event()

        async def worker(w: int) -> None:
            await start.wait()
            k = 0
            while len(taken) < items and time.perf_counter() < began + budget:
                k += 1
                lessee = f"w{w}-{k}"  # a fresh lessee per lease: the seed would re-enter its own
                t1 = time.perf_counter()
                if algorithm == "aiolease":
                    try:
                        lease = await locker.obtain_lease(LeaseRequest(lessee, _DURATION))
                    except LeaseNotObtainedError:
                        continue
                    lease_id: str | None = lease.lease_id
                else:
                    lease_id = await _seed_obtain(client, store.table_name, lessee)
                    if lease_id is None:
                        continue
                assert lease_id not in taken, f"{lease_id} taken twice"
                taken[lease_id] = lessee
                per_lease.append(time.perf_counter() - t1)

        tasks = [asyncio.create_task(worker(w)) for w in range(workers)]
        began = time.perf_counter()
        start.set()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - began
    writes = client.calls["update_item"]
    return {
        "workers": workers,
        "items": items,
        "obtained": len(taken),
        "capped": len(taken) < items,
        "write_attempts": writes,
        "scans": client.calls["scan"],
        "failed_writes_endgame": failed["endgame"],
        "failed_writes_before_endgame": failed["before"],
        "scan_seconds_per_lease": ratio(client.seconds["scan"], len(taken)),
        "write_seconds_per_lease": ratio(client.seconds["update_item"], len(taken)),
        "writes_per_lease": ratio(writes, len(taken)),
        "time_to_take_all_s": elapsed,
        "obtain_latency_s": summary(per_lease),
    }


async def contention(
    endpoint_url: str, workers: int, items: int, seed_items: int, seed_budget: float
) -> dict[str, Any]:
    """Both algorithms on fresh tables; the seed's race is cut off after ``seed_budget`` s."""
    ours = await _race(endpoint_url, workers, items, "aiolease", math.inf)
    seed = await _race(endpoint_url, workers, seed_items, "seed", seed_budget)
    return {
        "aiolease": ours,
        "seed": seed,
        "target_writes_per_lease": 1.3,
    }
