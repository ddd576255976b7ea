"""What one obtain_lease costs on a large table: the scan layout beside the indexed layout.

For each table size, starts a fresh moto server, loads the rows (1% free, the rest held by
another worker) with concurrent BatchWriteItem requests, then obtains leases (each released
again, so the free share stays put) in both layouts, and finally tries to obtain on the
same table with every row held, as a waiting worker does each wait period. Items read are
the ``ScannedCount`` the server reports for every Scan/Query, summed per obtain.

    python benchmarks/obtain_at_scale.py                # 10,000 and 100,000 rows
    python benchmarks/obtain_at_scale.py --sizes 2000   # a quick look

Figures only: moto is a Python model of DynamoDB, so its times say little about
DynamoDB's; the items read are what DynamoDB would bill.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiolease import LeaseNotObtainedError, LeaseRequest, Locker, LockStore
from aiolease.testing import MotoServer, fake_session

INDEX = "LeaseBuckets"
HELD_UNTIL = str(2**62)  # "held for ever" by another worker


class CountingClient:
    """Wraps a DynamoDB client; sums the items each Scan/Query read and counts requests."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.items_read = 0
        self.requests = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in ("scan", "query"):
            return attr

        async def counted(**kwargs: Any) -> Any:
            response = await attr(**kwargs)
            self.requests += 1
            self.items_read += int(response.get("ScannedCount", response.get("Count", 0)))
            return response

        return counted


@dataclass
class Figures:
    reads: list[int] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def row(self) -> tuple[float, float, float]:
        return (
            statistics.mean(self.reads),
            statistics.mean(self.requests),
            statistics.median(self.seconds) * 1000,
        )


async def load(client: Any, store: LockStore, size: int, free: set[str], workers: int) -> float:
    """Write ``size`` rows in BatchWriteItem requests of 25; returns the seconds it took."""
    ids = [f"item-{i:07d}" for i in range(size)]
    batches = [ids[i : i + 25] for i in range(0, size, 25)]
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)

    def row(lease_id: str) -> dict[str, Any]:
        item = {
            "LeaseID": {"S": lease_id},
            "LeaseBucket": {"N": str(store.bucket_of(lease_id))},
            "LeaseToken": {"N": "1"},
            "payload": {"S": "x" * 32},
        }
        if lease_id in free:
            item["LeaseUntil"] = {"N": "0"}
        else:
            item["LeaseUntil"] = {"N": HELD_UNTIL}
            item["ProcessID"] = {"S": "someone-else"}
        return item

    async def writer() -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            pending: list[Any] = [{"PutRequest": {"Item": row(i)}} for i in batch]
            while pending:
                response = await client.batch_write_item(RequestItems={store.table_name: pending})
                pending = response.get("UnprocessedItems", {}).get(store.table_name, [])

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(workers)))
    return time.perf_counter() - started


async def measure(
    store: LockStore, counter: CountingClient, obtains: int, *, expect_free: bool
) -> Figures:
    figures = Figures()
    locker = Locker(store, max_clock_skew=0.0)
    for n in range(obtains):
        counter.items_read = counter.requests = 0
        started = time.perf_counter()
        try:
            lease = await locker.obtain_lease(LeaseRequest(f"bench-{n}", 60))
        except LeaseNotObtainedError:
            if expect_free:
                raise
            lease = None
        else:
            if not expect_free:
                raise AssertionError("obtained a lease on a table with every row held")
        figures.seconds.append(time.perf_counter() - started)
        figures.reads.append(counter.items_read)
        figures.requests.append(counter.requests)
        if lease is not None:
            await store.release(lease)
    return figures


async def run_size(size: int, args: argparse.Namespace) -> dict[str, Any]:
    server = MotoServer()
    endpoint = await asyncio.to_thread(server.start)
    try:
        async with fake_session().client("dynamodb", endpoint_url=endpoint) as client:
            counter = CountingClient(client)
            table = f"bench-{uuid.uuid4().hex[:8]}"
            indexed = LockStore(counter, table, index_name=INDEX, buckets=args.buckets)  # type: ignore[arg-type]
            scan = LockStore(counter, table)  # type: ignore[arg-type]
            await indexed.create_table()
            rng = random.Random(size)
            free = set(rng.sample([f"item-{i:07d}" for i in range(size)], int(size * args.free)))
            load_seconds = await load(client, indexed, size, free, args.loaders)
            print(f"{size:>8} rows loaded in {load_seconds:.1f} s", flush=True)
            result: dict[str, Any] = {"size": size, "load": load_seconds}
            for name, store in (("scan", scan), ("indexed", indexed)):
                result[name] = await measure(store, counter, args.obtains, expect_free=True)
            # Every row held: what a waiting worker pays per attempt.
            for lease_id in free:
                await scan.lease(lease_id, LeaseRequest("someone-else", 600))
            for name, store in (("scan", scan), ("indexed", indexed)):
                result[f"{name}-busy"] = await measure(
                    store, counter, args.busy_attempts, expect_free=False
                )
            return result
    finally:
        await asyncio.to_thread(server.stop)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print()
    print(
        f"obtain_lease on moto, {args.free:.0%} of rows free, {args.buckets} buckets, "
        f"{args.obtains} obtains (busy: {args.busy_attempts} attempts) per cell"
    )
    print()
    print("| rows | layout | items read per obtain | requests per obtain | ms per obtain |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for result in results:
        for name in ("scan", "indexed", "scan-busy", "indexed-busy"):
            reads, requests, ms = result[name].row()
            label = name.replace("-busy", ", all rows held")
            print(f"| {result['size']:,} | {label} | {reads:,.0f} | {requests:.1f} | {ms:,.1f} |")
    print()
    for result in results:
        print(f"loading {result['size']:,} rows took {result['load']:.1f} s")
    if len(results) >= 2:
        first, last = results[0]["indexed"].row()[0], results[-1]["indexed"].row()[0]
        print(
            f"indexed reads per obtain, {results[-1]['size']:,} vs {results[0]['size']:,} "
            f"rows: {last / first:.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--free", type=float, default=0.01, help="share of rows free")
    parser.add_argument("--buckets", type=int, default=16)
    parser.add_argument("--obtains", type=int, default=20)
    parser.add_argument("--busy-attempts", type=int, default=3)
    parser.add_argument("--loaders", type=int, default=16, help="concurrent batch writers")
    args = parser.parse_args()

    async def run_all() -> list[dict[str, Any]]:
        return [await run_size(size, args) for size in args.sizes]

    report(asyncio.run(run_all()), args)


if __name__ == "__main__":
    main()
