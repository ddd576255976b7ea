"""Section "hotpath": client CPU per renewal and acquire+release, side by side in one run.

Compared on one server: python-dynamodb-lock (sync boto3), bare boto3 and bare aiobotocore
sending aiolease's own renewal request (fresh values each time), and aiolease on the client
``LockStore.connect()`` opens, on a client the user built, and on a client configured as
``connect()`` did before issue 18. Kinds alternate in blocks (in a new order each round) so
that load drift on a shared machine hits all alike. CPU is ``time.process_time()`` (every
thread): medians of blocks; CPU ratios are medians of per-round ratios (paired: drift
cancels). Also a cProfile (CPU timer) of renewals before and after, by stage.
"""

from __future__ import annotations

import cProfile
import pstats
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from aiolease import LeaseRequest, LockStore

from . import peer
from ._common import CountingClient, open_client, ratio, summary, table_name

# The configuration LockStore.connect() gave its client before issue 18 (the "before").
OLD_CONNECT = {
    "connect_timeout": 2.0,
    "read_timeout": 5.0,
    "retries": {"total_max_attempts": 1, "mode": "standard"},
    "max_pool_connections": 50,
}
BLOCK = 40

# Where a renewal's CPU goes: (label, file suffix, function), each the cumulative time of one
# entry point (they nest: the client call holds all but aiolease's own work).
STAGES: list[tuple[str, str, str]] = [
    ("aiolease renew (all)", "aiolease/_store.py", "renew"),
    ("  aiobotocore client call", "aiobotocore/client.py", "_make_api_call"),
    ("    parameter validation", "botocore/validate.py", "validate"),
    ("    User-Agent strings", "botocore/useragent.py", "to_string"),
    ("    request serialisation", "botocore/serialize.py", "serialize_to_request"),
    ("    endpoint ruleset", "aiobotocore/client.py", "_resolve_endpoint_ruleset"),
    ("    SigV4 signing", "aiobotocore/signers.py", "sign"),
    ("    HTTP send and receive (aiohttp)", "aiobotocore/httpsession.py", "send"),
    ("    response parsing", "parsers.py", "parse"),
    ("    needs-retry handler", "aiobotocore/retries/standard.py", "needs_retry"),
]


def _fresh(request: dict[str, Any]) -> dict[str, Any]:
    """The renewal ``request`` with a new, later LeaseUntil (and duration map)."""
    until = {"N": str(time.time_ns() + 600 * 10**9)}
    values = {
        **request["ExpressionAttributeValues"],
        ":u": until,
        ":d": {"M": {"ms": {"N": "600000"}, "until": until}},
    }
    return {**request, "ExpressionAttributeValues": values}


async def _renewal_request(store: LockStore, lease: Any) -> tuple[Any, dict[str, Any]]:
    """Renew once through a recording proxy: the lease and the exact request aiolease sent."""
    sent: list[dict[str, Any]] = []
    client = store.client
    store.client = CountingClient(client, on_update=lambda kwargs, ok: sent.append(kwargs))
    try:
        lease = await store.renew(lease)
    finally:
        store.client = client
    return lease, sent[-1]


class _Peer:
    """python-dynamodb-lock and bare boto3 on one table of the same server."""

    def __init__(self, endpoint_url: str, request: dict[str, Any]) -> None:
        self.resource = peer._resource(endpoint_url)
        self.table = table_name("hot-peer")
        peer._create_table(self.resource, self.table)
        self.client = peer._lock_client(self.resource, self.table, period=3600, duration=7200)
        self.lock = self.client.acquire_lock("held")
        import boto3

        # A plain client: the resource's own client converts values to and from Python types.
        boto = boto3.client(
            "dynamodb", endpoint_url=endpoint_url, config=self.resource.meta.client.meta.config
        )
        boto.create_table(
            TableName=request["TableName"] + "-boto",
            KeySchema=[{"AttributeName": "LeaseID", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "LeaseID", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        key = request["Key"]
        item = {**key, "ProcessID": request["ExpressionAttributeValues"][":l"]}
        if ":t" in request["ExpressionAttributeValues"]:
            item["LeaseToken"] = request["ExpressionAttributeValues"][":t"]
        boto.put_item(TableName=request["TableName"] + "-boto", Item=item)
        self.boto = boto
        self.request = {**request, "TableName": request["TableName"] + "-boto"}

    def heartbeat(self) -> None:
        self.client._send_heartbeat(self.lock)

    def bare(self) -> None:
        self.boto.update_item(**_fresh(self.request))

    def acquire_release(self) -> None:
        self.client.release_lock(self.client.acquire_lock("pair"))

    def close(self) -> None:
        self.client._shutting_down = True  # its threads sleep for the hour: do not join


async def _blocks(
    kinds: dict[str, Callable[[], Awaitable[Any]]], rounds: int, block: int
) -> dict[str, dict[str, list[float]]]:
    """Per kind, CPU per call (one value per block) and wall time of every call."""
    cpu: dict[str, list[float]] = {name: [] for name in kinds}
    wall: dict[str, list[float]] = {name: [] for name in kinds}
    order = list(kinds.items())
    shuffle = random.Random(18).shuffle  # a new order each round, the same in every run
    for _ in range(rounds):
        shuffle(order)
        for name, run in order:
            c0 = time.process_time()
            for _ in range(block):
                t0 = time.perf_counter()
                await run()
                wall[name].append(time.perf_counter() - t0)
            cpu[name].append((time.process_time() - c0) / block)
    return {"cpu": cpu, "wall": wall}


def _sync(fn: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        fn()  # the peer is synchronous: it blocks the loop, as it would its own thread

    return run


async def hot_path(endpoint_url: str, rounds: int) -> dict[str, Any]:
    """CPU per renewal and acquire+release (latency and CPU) of every kind, interleaved."""
    from aiobotocore.config import AioConfig

    from aiolease.testing import fake_session

    async with AsyncExitStack() as stack:
        user = await stack.enter_async_context(open_client(endpoint_url))
        old = await stack.enter_async_context(
            fake_session().client(
                "dynamodb", endpoint_url=endpoint_url, config=AioConfig(**OLD_CONNECT)
            )
        )
        name = table_name("hot")
        connected = await stack.enter_async_context(
            LockStore.connect(name, endpoint_url=endpoint_url, session=fake_session())
        )
        stores = {
            "aiolease, connect()": connected,
            "aiolease, user client": LockStore(user, name),
            "aiolease, connect() before": LockStore(old, name),
        }
        await connected.create_table()
        leases: dict[str, Any] = {}
        request: dict[str, Any] = {}
        for label, store in stores.items():
            await store.add_item(label)
            leases[label] = await store.acquire(label, LeaseRequest("bench-hot", 600))
            leases[label], request = await _renewal_request(store, leases[label])
        bare_item = "bare"
        await connected.add_item(bare_item)
        await connected.add_item("pair")
        lease_bare = await connected.acquire(bare_item, LeaseRequest("bench-hot", 600))
        _, bare_request = await _renewal_request(connected, lease_bare)

        def renewing(label: str) -> Callable[[], Awaitable[Any]]:
            async def run() -> None:
                leases[label] = await stores[label].renew(leases[label])

            return run

        def bare_on(client: Any) -> Callable[[], Awaitable[Any]]:
            async def run() -> None:
                await client.update_item(**_fresh(bare_request))

            return run

        renewals: dict[str, Callable[[], Awaitable[Any]]] = {
            label: renewing(label) for label in stores
        }
        renewals["aiobotocore bare, user client"] = bare_on(user)
        renewals["aiobotocore bare, connect() client"] = bare_on(connected.client)
        the_peer = _Peer(endpoint_url, request) if peer.available() else None
        if the_peer is not None:
            renewals[peer.PEER] = _sync(the_peer.heartbeat)
            renewals["boto3 bare"] = _sync(the_peer.bare)

        # Acquire + release: aiolease's two writes; the same two sent bare; the peer's three.
        pair = LeaseRequest("bench-pair", 30)
        sent: list[dict[str, Any]] = []
        recorder = CountingClient(user, on_update=lambda kwargs, ok: sent.append(kwargs))
        recording = LockStore(recorder, name)
        await recording.release(await recording.acquire("pair", pair))
        acquire_kwargs, release_kwargs = sent

        def pairing(store: LockStore) -> Callable[[], Awaitable[Any]]:
            async def run() -> None:
                await store.release(await store.acquire("pair", pair))

            return run

        async def bare_pair() -> None:
            response = await user.update_item(**acquire_kwargs)
            token = response["Attributes"]["LeaseToken"]
            values = {**release_kwargs["ExpressionAttributeValues"], ":t": token}
            await user.update_item(**{**release_kwargs, "ExpressionAttributeValues": values})

        pairs: dict[str, Callable[[], Awaitable[Any]]] = {
            "aiolease, connect()": pairing(connected),
            "aiolease, user client": pairing(stores["aiolease, user client"]),
            "aiolease, connect() before": pairing(stores["aiolease, connect() before"]),
            "aiobotocore bare (the same two requests)": bare_pair,
        }
        if the_peer is not None:
            pairs[peer.PEER] = _sync(the_peer.acquire_release)
        try:
            await _blocks(renewals, 2, 10)  # warm up every path and the connection pools
            await _blocks(pairs, 2, 5)
            renewed = await _blocks(renewals, rounds, BLOCK)
            paired = await _blocks(pairs, rounds, BLOCK // 2)
        finally:
            if the_peer is not None:
                the_peer.close()
        for label, store in stores.items():
            await store.release(leases[label])
    renew_cpu = {k: statistics.median(v) for k, v in renewed["cpu"].items()}
    pair_cpu = {k: statistics.median(v) for k, v in paired["cpu"].items()}
    pair_wall = {k: summary(v) for k, v in paired["wall"].items()}
    return {
        "rounds": rounds,
        "block": BLOCK,
        "renew_cpu_s": renew_cpu,
        "renew_cpu_blocks_s": renewed["cpu"],
        "renew_wall_s": {k: summary(v) for k, v in renewed["wall"].items()},
        "pair_cpu_s": pair_cpu,
        "pair_wall_s": pair_wall,
        "peer": the_peer is not None,
    }


def hot_path_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """The table rows of the section: each figure against its reference, with the target."""
    out: list[tuple[str, str, str, str, str, str]] = []
    cpu, pair = result["renew_cpu_s"], result["pair_wall_s"]
    pair_cpu = result["pair_cpu_s"]

    def ms(x: float) -> str:
        return f"{x * 1000:.3f} ms"

    def met(ok: bool) -> str:
        return "yes" if ok else "NO"

    blocks = result["renew_cpu_blocks_s"]

    def paired(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(blocks[a], blocks[b], strict=True))

    def row(
        label: str, a: float, b: float, target: float | None = None, r: float | None = None
    ) -> None:
        r = ratio(a, b) if r is None else r
        out.append(
            (
                label,
                ms(a),
                ms(b),
                f"{r:.3f}",
                "-" if target is None else f"<= {target:g}",
                "-" if target is None else met(r <= target),
            )
        )

    c, ub = "aiolease, connect()", "aiobotocore bare, user client"
    cb, u, pp = "aiolease, connect() before", "aiolease, user client", peer.PEER
    bare_pair = "aiobotocore bare (the same two requests)"
    if result["peer"]:
        row(f"CPU/renewal: {c} vs {pp}", cpu[c], cpu[pp], 0.9, paired(c, pp))
        row(f"CPU/renewal: {cb} vs {pp}", cpu[cb], cpu[pp], None, paired(cb, pp))
        boto = "boto3 bare"
        row(f"CPU/renewal: {boto} vs {pp}", cpu[boto], cpu[pp], None, paired(boto, pp))
    row(f"CPU/renewal: {u} vs {ub}", cpu[u], cpu[ub], 1.03, paired(u, ub))
    cbare = "aiobotocore bare, connect() client"
    row(f"CPU/renewal: {c} vs {cbare}", cpu[c], cpu[cbare], 1.03, paired(c, cbare))
    row(f"CPU/renewal: {c} vs {cb}", cpu[c], cpu[cb], None, paired(c, cb))
    if result["peer"]:
        row(f"acquire+release median: {c} vs {pp}", pair[c]["median"], pair[pp]["median"], 1.0)
        row(f"acquire+release CPU: {c} vs {pp}", pair_cpu[c], pair_cpu[pp])
    row(
        f"acquire+release median: {u} vs {bare_pair}",
        pair[u]["median"],
        pair[bare_pair]["median"],
        1.03,
    )
    row(f"acquire+release CPU: {u} vs {bare_pair}", pair_cpu[u], pair_cpu[bare_pair], 1.03)
    row(f"acquire+release median: {c} vs {cb}", pair[c]["median"], pair[cb]["median"])
    return out


async def profile_renewals(endpoint_url: str, calls: int, top: int = 12) -> dict[str, Any]:
    """cProfile (CPU timer) of ``calls`` renewals on connect()'s client, before and after."""
    from aiobotocore.config import AioConfig

    from aiolease.testing import fake_session

    out: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        old = await stack.enter_async_context(
            fake_session().client(
                "dynamodb", endpoint_url=endpoint_url, config=AioConfig(**OLD_CONNECT)
            )
        )
        name = table_name("prof")
        connected = await stack.enter_async_context(
            LockStore.connect(name, endpoint_url=endpoint_url, session=fake_session())
        )
        await connected.create_table()
        for label, store in (("before", LockStore(old, name)), ("after", connected)):
            await store.add_item(label)
            lease = await store.acquire(label, LeaseRequest("bench-prof", 600))
            for _ in range(20):
                lease = await store.renew(lease)
            profile = cProfile.Profile(time.process_time)
            profile.enable()
            for _ in range(calls):
                lease = await store.renew(lease)
            profile.disable()
            await store.release(lease)
            out[label] = _summarise(pstats.Stats(profile), calls, top)
    return out


def _summarise(stats: pstats.Stats, calls: int, top: int) -> dict[str, Any]:
    """Per renewal: profiled CPU by stage (cumulative), and the top functions (own time)."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    stages: dict[str, float] = {}
    for label, suffix, function in STAGES:
        found = [e[3] for (p, _, f), e in raw.items() if p.endswith(suffix) and f == function]
        stages[label] = max(found, default=0.0) / calls
    ranked = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return {
        "profiled_cpu_per_renewal_s": sum(e[2] for e in raw.values()) / calls,
        "stages_per_renewal_s": stages,
        "top_tottime": [
            {
                "function": f"{_short(path)}:{line}({function})",
                "tottime_per_renewal_s": entry[2] / calls,
                "calls_per_renewal": entry[1] / calls,
            }
            for (path, line, function), entry in ranked
        ],
    }


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3."):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker.startswith("lib/") else tail
    return path.rsplit("/", 2)[-1] if "/" in path else path


def profile_text(profile: dict[str, Any], top: int = 8) -> str:
    """The profile summary: CPU per renewal by stage, before and after, and the top entries."""
    before, after = profile["before"], profile["after"]
    lines = [
        "profiled CPU per renewal (cProfile, CPU timer; inflated by the profiler), "
        "connect()'s client before -> after",
    ]
    for label in before["stages_per_renewal_s"]:
        b = before["stages_per_renewal_s"][label] * 1000
        a = after["stages_per_renewal_s"][label] * 1000
        lines.append(f"  {label:40s} {b:7.3f} ms -> {a:7.3f} ms")
    for name, side in (("before", before), ("after", after)):
        lines.append(f"top own time per renewal, {name}:")
        for entry in side["top_tottime"][:top]:
            lines.append(
                f"  {entry['tottime_per_renewal_s'] * 1000:6.3f} ms  "
                f"{entry['calls_per_renewal']:6.1f} calls  {entry['function']}"
            )
    return "\n".join(lines)
