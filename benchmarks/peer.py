"""python-dynamodb-lock, the thread-based boto3 peer, measured on the same server.

Its heartbeat thread sweeps every held lock sequentially, spreading the calls over the
heartbeat period; it renews by swapping the lock's record version number with UpdateItem.
"""

from __future__ import annotations

import datetime
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._common import percentile, ratio, renewals_in_window, summary, table_name

PEER = "python-dynamodb-lock"


def available() -> bool:
    try:
        import python_dynamodb_lock  # noqa: F401
    except ImportError:
        return False
    return True


def _quiet() -> None:
    """Its heartbeat threads warn through the root logger's last resort: keep the table clean."""
    import logging

    logger = logging.getLogger("python_dynamodb_lock")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False


def _resource(endpoint_url: str) -> Any:
    _quiet()
    import boto3
    from botocore.config import Config

    config = Config(retries={"total_max_attempts": 1}, max_pool_connections=64)
    return boto3.resource("dynamodb", endpoint_url=endpoint_url, config=config)


def _create_table(resource: Any, name: str) -> None:
    resource.meta.client.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "lock_key", "KeyType": "HASH"},
            {"AttributeName": "sort_key", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "lock_key", "AttributeType": "S"},
            {"AttributeName": "sort_key", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    resource.meta.client.get_waiter("table_exists").wait(TableName=name)


def _lock_client(resource: Any, table: str, *, period: float, duration: float) -> Any:
    """A lock client whose heartbeats are timestamped (a subclass hook, the library untouched)."""
    from python_dynamodb_lock.python_dynamodb_lock import DynamoDBLock, DynamoDBLockClient

    class Timed(DynamoDBLockClient):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.renewals: dict[str, list[float]] = {}
            super().__init__(*args, **kwargs)

        def _send_heartbeat(self, lock: Any) -> None:
            super()._send_heartbeat(lock)
            if lock.status == DynamoDBLock.LOCKED:
                self.renewals.setdefault(lock.unique_identifier, []).append(time.monotonic())

    return Timed(
        resource,
        table_name=table,
        owner_name=f"bench-peer-{time.monotonic_ns()}",  # skips socket.getfqdn()
        heartbeat_period=datetime.timedelta(seconds=period),
        lease_duration=datetime.timedelta(seconds=duration),
        # "in danger" at the same point aiolease cancels the work: a tenth before expiry.
        safe_period=datetime.timedelta(seconds=duration * 0.9),
    )


def peer_cpu_per_renewal(endpoint_url: str, calls: int) -> dict[str, Any]:
    """process_time per heartbeat UpdateItem of python-dynamodb-lock, and of bare boto3."""
    resource = _resource(endpoint_url)
    table = table_name("peer-cpu")
    _create_table(resource, table)
    # A heartbeat period of an hour keeps its own threads asleep: we call the renewal directly.
    client = _lock_client(resource, table, period=3600, duration=7200)
    lock = client.acquire_lock("a")
    boto_table = resource.Table(table)
    boto_table.put_item(Item={"lock_key": "floor", "sort_key": "-"})

    def bare() -> None:
        boto_table.update_item(
            Key={"lock_key": "floor", "sort_key": "-"},
            UpdateExpression="SET #u = :u",
            ExpressionAttributeNames={"#u": "LeaseUntil"},
            ExpressionAttributeValues={":u": time.time_ns()},
        )

    for _ in range(20):
        client._send_heartbeat(lock)
        bare()
    peer: list[float] = []
    boto: list[float] = []
    block = 50
    for _ in range(max(1, calls // block)):
        c0 = time.process_time()
        for _ in range(block):
            client._send_heartbeat(lock)
        c1 = time.process_time()
        for _ in range(block):
            bare()
        c2 = time.process_time()
        peer.append((c1 - c0) / block)
        boto.append((c2 - c1) / block)
    # Its threads sleep for the hour-long period (daemons): stop them without joining.
    client._shutting_down = True
    return {"cpu_s": sum(peer) / len(peer), "boto3_floor_cpu_s": sum(boto) / len(boto)}


def peer_throughput(
    endpoint_url: str, n: int, *, period: float, duration: float, window: float
) -> dict[str, Any]:
    """Hold ``n`` locks with one lock client for ``window`` seconds; renewals/s, lost locks."""
    resource = _resource(endpoint_url)
    table = table_name("peer-hold")
    _create_table(resource, table)
    client = _lock_client(resource, table, period=period, duration=duration)
    with ThreadPoolExecutor(8) as pool:
        locks = list(pool.map(lambda i: client.acquire_lock(f"item-{i:05d}"), range(n)))
    # Let the sweep settle into its rhythm, then measure.
    time.sleep(period)
    start = time.monotonic()
    c0 = time.process_time()
    time.sleep(window)
    end = time.monotonic()
    cpu = time.process_time() - c0
    statuses = [lock.status for lock in locks]
    closer = threading.Thread(target=client.close, daemon=True)
    closer.start()
    closer.join(timeout=period * 2 + 5)
    renewals = 0
    intervals: list[float] = []
    starved = 0
    for lock in locks:
        count, gaps = renewals_in_window(
            client.renewals.get(lock.unique_identifier, []), start, end
        )
        renewals += count
        intervals.extend(gaps)
        if gaps and max(gaps) > duration * 0.9:
            starved += 1
    lost = sum(1 for s in statuses if s != "LOCKED")
    needed = n / period
    achieved = renewals / (end - start)
    intervals.sort()
    return {
        "n": n,
        "needed_per_s": needed,
        "achieved_per_s": achieved,
        "achieved_over_needed": ratio(achieved, needed),
        "lost": max(lost, starved),
        "interval_s": summary(intervals),
        "interval_p99_over_period": ratio(percentile(intervals, 99), period),
        "cpu_per_renewal_s": ratio(cpu, renewals),
    }
