"""Shared helpers for the benchmarks: clients, a call-counting client proxy, statistics."""

from __future__ import annotations

import itertools
import os
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiolease.testing import FAKE_CREDENTIALS, fake_session

# The connection pool of every benchmark client: wide enough that the server, not the pool,
# is what saturates (moto serves one request at a time anyway).
POOL = 64


def set_fake_environment() -> None:
    """Throwaway credentials for the local server, also inherited by child processes."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", FAKE_CREDENTIALS["aws_access_key_id"])
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", FAKE_CREDENTIALS["aws_secret_access_key"])
    os.environ.setdefault("AWS_DEFAULT_REGION", FAKE_CREDENTIALS["region_name"])


def client_config() -> Any:
    """botocore retries off (the library retries itself), generous timeouts, a wide pool."""
    from aiobotocore.config import AioConfig

    return AioConfig(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=POOL,
    )


def open_client(endpoint_url: str) -> Any:
    """An aiobotocore DynamoDB client context manager on the local server."""
    return fake_session().client("dynamodb", endpoint_url=endpoint_url, config=client_config())


def table_name(prefix: str) -> str:
    return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"


def bare_update(client: Any, table: str, item: str) -> Any:
    """The floor: one plain UpdateItem round trip (one attribute set, no condition)."""
    return client.update_item(
        TableName=table,
        Key={"LeaseID": {"S": item}},
        UpdateExpression="SET #u = :u",
        ExpressionAttributeNames={"#u": "LeaseUntil"},
        ExpressionAttributeValues={":u": {"N": str(time.time_ns())}},
    )


@dataclass
class CountingClient:
    """Delegates to an aiobotocore client and counts calls per operation (like tests/faults.py).

    ``on_update`` (if set) is called with the UpdateItem arguments and whether it succeeded,
    so a benchmark can timestamp renewals per item without touching the library.
    """

    client: Any
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: Summed wall time spent in each operation (calls overlap, so this can exceed the run).
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    on_update: Callable[[dict[str, Any], bool], None] | None = None

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.client, name)
        if name.startswith("_") or name == "meta" or not callable(target):
            return target

        async def call(**kwargs: Any) -> Any:
            self.calls[name] += 1
            t0 = time.perf_counter()
            ok = False
            try:
                response = await target(**kwargs)
                ok = True
                return response
            finally:
                self.seconds[name] += time.perf_counter() - t0
                if name == "update_item" and self.on_update is not None:
                    self.on_update(kwargs, ok)

        return call


def summary(values: Iterable[float]) -> dict[str, float]:
    """count, median, p99, mean, min, max of a sample."""
    data = sorted(values)
    if not data:
        return {"count": 0}
    return {
        "count": len(data),
        "median": statistics.median(data),
        "p99": percentile(data, 99),
        "mean": statistics.fmean(data),
        "min": data[0],
        "max": data[-1],
    }


def percentile(sorted_data: list[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted data."""
    if not sorted_data:
        return float("nan")
    rank = max(1, min(len(sorted_data), round(pct / 100 * len(sorted_data) + 0.5)))
    return sorted_data[rank - 1]


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def renewals_in_window(times: list[float], start: float, end: float) -> tuple[int, list[float]]:
    """Renewals inside [start, end) and every gap between renewals seen from the window.

    Gaps include the one from the last renewal before the window, and the one still open
    at its end, so a lease that stops being renewed shows up as a long gap.
    """
    inside = [t for t in times if start <= t < end]
    before = [t for t in times if t < start]
    points = ([before[-1]] if before else []) + inside
    gaps = [b - a for a, b in itertools.pairwise(points)]
    if points:
        gaps.append(end - points[-1])
    return len(inside), gaps
