"""What the chaos scenarios share: a random-fault client, workers that record holds, figures.

``ChaosClient`` extends the queued faults of ``tests.faults.FaultyClient`` with faults
drawn at random rates per kind of call (acquire, renew, release, scan...), and keeps a
ledger of every lease write that reached the table (even when its answer was then
dropped), so that a scenario can check what the table held, not what workers believed.

Workers come in two modes: :func:`worker` holds one item per ``locker.lease()``, and
:func:`session_worker` holds several items at once under one ``locker.session()``. The
session's own writes (start, renew, end) count as acquire, renew and release for the
faults, so a scenario's faults hit the writes that keep its leases alive in either mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiolease import (
    Lease,
    LeaseLostError,
    LeaseNotObtainedError,
    LeaseRequest,
    LeaseUnavailableError,
    Locker,
    LockStore,
)

from ..faults import Fault, FaultyClient
from ..history import Hold, Report, check_history

#: Where the suite writes its figures (git-ignored); docs/reliability.md quotes them.
RESULTS_DIR = Path(__file__).resolve().parents[2] / "chaos-results"
RESULTS_FILE = RESULTS_DIR / "chaos.jsonl"


#: What a fault rule for a kind of call also applies to: the session's own writes.
FAMILY = {"session-start": "acquire", "session-renew": "renew", "session-end": "release"}


def family_of(kind: str) -> str:
    """The kind of lease write ``kind`` is, for faults: a session renewal is a renewal."""
    return FAMILY.get(kind, kind)


def assigned(expression: str, name: str) -> str | None:
    """The value placeholder that ``expression`` assigns or compares to ``name`` first."""
    match = re.search(rf"(?<![\w#]){re.escape(name)}\s*=\s*(:\w+)", expression)
    return match.group(1) if match else None


def kind_of(operation: str, kwargs: dict[str, Any]) -> str:
    """Name a DynamoDB call by the lease operation it performs (from its expressions)."""
    if operation != "update_item":
        return operation
    update = kwargs.get("UpdateExpression", "")
    condition = kwargs.get("ConditionExpression", "")
    if "#su" in update:  # a session row's expiry: the session's own writes
        if "attribute_not_exists(#k)" in condition:
            return "session-start"
        value = kwargs.get("ExpressionAttributeValues", {}).get(assigned(update, "#su") or "")
        if value == {"N": "0"}:
            return "session-end"
        return "session-renew"
    if update.startswith("SET #l = :l"):
        return "acquire"
    if update.startswith("SET #u = :u"):
        return "renew"
    if update.startswith("REMOVE #l"):
        # An undo names the exact expiry it wrote (and the token, when it knows it); a
        # release names the lessee and token only.
        if ":u" in condition:
            return "undo"
        if ":t" in condition:
            return "release"
        return "force_release"
    return "add_item"


@dataclass(frozen=True)
class Write:
    """A lease write that reached the table (acquire, renew, undo, release, session writes).

    ``item`` is the row's key: a session row's for the session writes. ``session`` is the
    session key an acquisition took the item under (None outside sessions).
    """

    kind: str
    item: str
    lessee: str
    until_ns: int
    landed: float  # time.monotonic() when the server answered
    session: str | None = None


#: The writes whose ``until_ns`` is an expiry the holder may work by.
EXPIRING = frozenset({"acquire", "renew", "session-start", "session-renew"})
#: The writes that give an acquired item back.
GIVING_BACK = frozenset({"undo", "release", "force_release"})


@dataclass
class Rule:
    kind: str
    rate: float
    fault: Fault
    name: str
    first: int = 0  # the first ``first`` matching calls always get the fault


class ChaosClient(FaultyClient):
    """A FaultyClient that also injects faults at random rates and records landed writes."""

    def __init__(self, client: Any, seed: int | None = None) -> None:
        super().__init__(client)
        self.rules: list[Rule] = []
        self.injected: Counter[str] = Counter()
        #: faults injected per exact kind of call (``injected`` counts session writes
        #: under their family: a session renewal's fault is a fault "on renew")
        self.injected_on: Counter[str] = Counter()
        self.ledger: list[Write] = []
        self.random = random.Random(seed)

    def add(self, kind: str, rate: float, fault: Fault, name: str, *, first: int = 0) -> None:
        """Apply ``fault`` to calls of ``kind`` with probability ``rate``; ``name`` counts it.

        ``first``: the first that many calls of ``kind`` get it for sure, so that a short
        run cannot miss a fault by chance.
        """
        self.rules.append(Rule(kind, rate, fault, name, first))

    def clear(self) -> None:
        self.rules.clear()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.client, name)
        if name.startswith("_") or name == "meta" or not callable(target):
            return target

        async def call(**kwargs: Any) -> Any:
            self.calls[name] += 1
            kind = kind_of(name, kwargs)

            async def landed() -> Any:
                response = await target(**kwargs)
                self._record(kind, kwargs)
                return response

            queued = self.faults.get(name)
            fault = queued.popleft() if queued else self.sticky.get(name)
            if fault is None:
                family = family_of(kind)
                for rule in self.rules:
                    if rule.kind not in (kind, family, "*"):
                        continue
                    if rule.first > 0 or self.random.random() < rule.rate:
                        rule.first = max(0, rule.first - 1)
                        fault = rule.fault
                        self.injected[f"{rule.name} on {family}"] += 1
                        self.injected_on[kind] += 1
                        break
            if fault is None:
                return await landed()
            return await fault(landed)

        return call

    def _record(self, kind: str, kwargs: dict[str, Any]) -> None:
        if kind not in EXPIRING | GIVING_BACK | {"session-end"}:
            return
        values = kwargs["ExpressionAttributeValues"]
        update = kwargs.get("UpdateExpression", "")
        condition = kwargs.get("ConditionExpression", "")
        (key,) = kwargs["Key"].values()
        lessee = values.get(assigned(update, "#l") or assigned(condition, "#l") or ":l")
        # A session write's expiry is the session row's; an item's is its LeaseUntil (the
        # largest number for an item held under a session: the session's expiry governs).
        if kind in GIVING_BACK:
            until = values.get(":u")  # an undo names the expiry it took back; a release none
        else:
            until = values.get(
                assigned(update, "#su" if kind.startswith("session") else "#u") or ""
            )
        session = values.get(assigned(update, "#s") or "")
        self.ledger.append(
            Write(
                kind,
                key["S"],
                lessee["S"] if lessee else "",
                int(until["N"]) if until else 0,
                time.monotonic(),
                session["S"] if session else None,
            )
        )

    def expiry_before(self, item: str, lessee: str, moment: float) -> int:
        """The latest expiry that ``lessee`` wrote to row ``item`` and that landed by ``moment``."""
        return max(
            (
                w.until_ns
                for w in self.ledger
                if w.kind in EXPIRING
                and w.item == item
                and w.lessee == lessee
                and w.landed <= moment
            ),
            default=0,
        )

    def session_of(self, item: str, lessee: str, moment: float) -> str | None:
        """The session under which ``lessee``'s latest acquisition of ``item`` by ``moment`` was."""
        taken = [
            w
            for w in self.ledger
            if w.kind == "acquire" and w.item == item and w.lessee == lessee and w.landed <= moment
        ]
        return taken[-1].session if taken else None

    def hold_expiry(self, item: str, lessee: str, start: float, end: float) -> int:
        """The latest expiry a hold of ``item`` (from ``start`` to ``end``) had in the table.

        An item held under a session expires with its session: the session row's expiry.
        """
        session = self.session_of(item, lessee, start)
        if session is not None:
            return self.expiry_before(session, lessee, end)
        return self.expiry_before(item, lessee, end)


# -- faults drawn at random ---------------------------------------------------------------


def spike(low: float, high: float, rng: random.Random) -> Fault:
    """A latency spike of ``low..high`` seconds, before the request or after it landed."""

    def fault(call: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        seconds = rng.uniform(low, high)

        async def run() -> Any:
            if rng.random() < 0.5:
                await asyncio.sleep(seconds)
                return await call()
            result = await call()
            await asyncio.sleep(seconds)
            return result

        return run()

    return fault


def dropped(max_wait: float, rng: random.Random) -> Fault:
    """The write lands, then the client gives up on the answer after up to ``max_wait`` s."""
    from botocore.exceptions import ReadTimeoutError

    def fault(call: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        async def run() -> Any:
            await call()
            await asyncio.sleep(rng.uniform(0, max_wait))
            raise ReadTimeoutError(endpoint_url="injected")

        return run()

    return fault


# -- workers that record what they held ------------------------------------------------------


@dataclass
class Recorder:
    """Every hold of a scenario's workers, and why each lease ended."""

    holds: list[Hold] = field(default_factory=list)
    #: per hold: the holder's own wall clock (epoch ns) when its work stopped
    end_walls: list[int] = field(default_factory=list)
    lost_holds: list[Hold] = field(default_factory=list)
    obtained: list[Lease] = field(default_factory=list)
    losses: Counter[str] = field(default_factory=Counter)
    not_obtained: int = 0
    #: session mode: sessions started, and sessions whose scope ended with a loss
    sessions: int = 0
    sessions_lost: int = 0
    #: session mode: session starts given up as unavailable (throttled, 5xx) on entry
    sessions_unavailable: int = 0

    def lost(self, exc: LeaseLostError) -> None:
        cause = exc.__cause__
        why = cause.reason if isinstance(cause, LeaseLostError) else exc.reason
        self.losses[loss_category(why)] += 1

    def check(self) -> Report:
        return check_history(self.holds)


def loss_category(why: str) -> str:
    """A few words on why a lease was lost, for the figures."""
    if "deadline" in why:
        return "local deadline (renewals failed or were too slow)"
    if "held by" in why or "taken over" in why:
        return "taken by another lessee"
    if "free" in why or "gone" in why or "released" in why or "deleted" in why:
        return "released by another"
    if "table" in why:
        return "table error"
    return why[:60]


async def worker(
    locker: Locker,
    name: str,
    recorder: Recorder,
    stop_at: float,
    *,
    duration: float,
    hold_time: tuple[float, float],
    heartbeat_period: float | None = None,
    lease_id: str | None = None,
    wait_period: float = 0.2,
    clock: Callable[[], int] = time.time_ns,
    rng: random.Random | None = None,
    stop: asyncio.Event | None = None,
    on_obtained: Callable[[Lease], None] | None = None,
) -> None:
    """Lease, work ``hold_time`` seconds, release; again until ``stop_at`` (monotonic).

    Setting ``stop`` ends the current hold early (normally, with a release) and the loop.
    """
    rng = rng or random.Random()
    stop = stop or asyncio.Event()
    request = LeaseRequest(name, duration)
    while time.monotonic() < stop_at and not stop.is_set():
        try:
            async with locker.lease(
                request,
                lease_id,
                wait_period=wait_period,
                timeout=None if math.isinf(stop_at) else max(0.5, stop_at - time.monotonic()),
                heartbeat_period=heartbeat_period,
            ) as lease:
                recorder.obtained.append(lease)
                start = time.monotonic()
                if on_obtained is not None:
                    on_obtained(lease)
                lost = True
                try:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), rng.uniform(*hold_time))
                    lost = False
                finally:
                    hold = Hold(lease.lease_id, name, lease.fencing_token, start, time.monotonic())
                    recorder.holds.append(hold)
                    recorder.end_walls.append(clock())
                    if lost:
                        recorder.lost_holds.append(hold)
        except LeaseLostError as exc:
            recorder.lost(exc)
        except LeaseNotObtainedError:
            recorder.not_obtained += 1
        await asyncio.sleep(rng.uniform(0, wait_period))


async def session_worker(
    locker: Locker,
    name: str,
    recorder: Recorder,
    stop_at: float,
    *,
    duration: float,
    hold_time: tuple[float, float],
    items: int,
    session_time: tuple[float, float] = (2.0, 5.0),
    heartbeat_period: float | None = None,
    wait_period: float = 0.2,
    clock: Callable[[], int] = time.time_ns,
    rng: random.Random | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """:func:`worker` in session mode: hold ``items`` items at once under one session.

    Each session lives ``session_time`` seconds (then its scope is left: its items
    released, the session ended) and its ``items`` tasks lease, work ``hold_time``
    seconds and release, again and again. A lost session ends its holds (each counted as
    a lost lease, as in :func:`worker`); the next session starts after a pause.
    """
    rng = rng or random.Random()
    stop = stop or asyncio.Event()
    request = LeaseRequest(name, duration)
    while time.monotonic() < stop_at and not stop.is_set():
        ends = min(stop_at, time.monotonic() + rng.uniform(*session_time))
        try:
            async with locker.session(request, heartbeat_period=heartbeat_period) as session:
                recorder.sessions += 1
                async with asyncio.TaskGroup() as group:
                    for _ in range(items):
                        group.create_task(
                            _hold_items(
                                session, recorder, ends, stop, hold_time, wait_period, clock, rng
                            )
                        )
        except LeaseLostError as exc:
            # The session's loss cancels its body, so its holds end by that cancellation:
            # the loss is counted once, for the session.
            recorder.sessions_lost += 1
            recorder.lost(exc)
        except LeaseNotObtainedError:
            recorder.not_obtained += 1
        except LeaseUnavailableError:
            # locker.session() tries its start write a few times only (locker.lease() keeps
            # waiting instead); a worker starts again, as a user's would.
            recorder.sessions_unavailable += 1
        await asyncio.sleep(rng.uniform(0, wait_period))


async def _hold_items(
    session: Any,
    recorder: Recorder,
    ends: float,
    stop: asyncio.Event,
    hold_time: tuple[float, float],
    wait_period: float,
    clock: Callable[[], int],
    rng: random.Random,
) -> None:
    """One task of a session worker: hold any item, work, release; until ``ends`` or a loss."""
    name = session.lessee_id
    while time.monotonic() < ends and not stop.is_set():
        try:
            async with session.lease(
                wait_period=wait_period, timeout=max(0.5, ends - time.monotonic())
            ) as lease:
                recorder.obtained.append(lease)
                start = time.monotonic()
                lost = True
                try:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), rng.uniform(*hold_time))
                    lost = False
                finally:
                    hold = Hold(lease.lease_id, name, lease.fencing_token, start, time.monotonic())
                    recorder.holds.append(hold)
                    recorder.end_walls.append(clock())
                    if lost:
                        recorder.lost_holds.append(hold)
        except LeaseLostError as exc:
            recorder.lost(exc)
            return  # the session is lost: every item of it is
        except LeaseNotObtainedError:
            recorder.not_obtained += 1
        await asyncio.sleep(rng.uniform(0, wait_period))


def check_stopped_before_expiry(recorder: Recorder, client: ChaosClient) -> int:
    """Every hold's work stopped before the expiry its holder last wrote (by its own clock).

    Returns how many holds were checked against a landed write.
    """
    checked = 0
    for hold, end_wall in zip(recorder.holds, recorder.end_walls, strict=True):
        assert hold.end is not None
        expiry = client.hold_expiry(hold.item, hold.lessee, hold.start, hold.end)
        assert expiry, f"no landed write for {hold}"
        assert end_wall < expiry, (
            f"{hold.lessee} worked on {hold.item} (token {hold.token}) until "
            f"{(end_wall - expiry) / 1e9:.3f} s past the expiry it had written"
        )
        checked += 1
    return checked


def check_no_orphans(recorder: Recorder, client: ChaosClient) -> None:
    """Every acquisition that reached the table became a hold or was undone: none orphaned."""
    if any(w.session is not None for w in client.ledger):
        _check_no_orphans_in_sessions(recorder, client)
        return
    obtained = {(lease.lease_id, lease.lessee_id, lease.until_ns) for lease in recorder.obtained}
    undone = {(w.item, w.lessee, w.until_ns) for w in client.ledger if w.kind == "undo"}
    acquired = [w for w in client.ledger if w.kind == "acquire"]
    orphans = [w for w in acquired if (w.item, w.lessee, w.until_ns) not in obtained | undone]
    assert not orphans, f"acquisitions that landed but nobody held or undid: {orphans[:3]}"


def _check_no_orphans_in_sessions(recorder: Recorder, client: ChaosClient) -> None:
    """Session mode: an item's expiry is its session's, so match acquisitions by order.

    An acquisition that landed is followed, before the item's next acquisition landed, by
    a hold of its lessee that started after it, or by that lessee giving the item back.
    """
    writes = sorted(client.ledger, key=lambda w: w.landed)
    orphans = []
    for i, taken in enumerate(writes):
        if taken.kind != "acquire":
            continue
        later = (w for w in writes[i + 1 :] if w.item == taken.item and w.kind == "acquire")
        until = next((w.landed for w in later), math.inf)
        held = any(
            h.item == taken.item and h.lessee == taken.lessee and taken.landed <= h.start < until
            for h in recorder.holds
        )
        given_back = any(
            w.kind in GIVING_BACK
            and w.item == taken.item
            and w.lessee == taken.lessee
            and taken.landed <= w.landed <= until
            for w in writes
        )
        if not held and not given_back:
            orphans.append(taken)
    assert not orphans, f"acquisitions that landed but nobody held or undid: {orphans[:3]}"


async def check_nothing_stuck(
    client: Any,
    table: str,
    items: list[str],
    *,
    since: float,
    bound: float,
    wait_period: float,
    max_clock_skew: float,
) -> list[float]:
    """Every item can be had again within ``bound`` seconds of ``since`` (monotonic).

    A fresh locker without faults leases each item by name: items that holders left
    behind, or that a lost or dead session still names, are free to it once their
    holder's expiry and the clock-skew allowance have passed, and it tries every wait
    period. Returns how long after ``since`` each item was held again.
    """
    locker = Locker(LockStore(client, table), max_clock_skew=max_clock_skew)
    request = LeaseRequest("sweeper", 1.0)

    async def one(item: str) -> float:
        left = max(0.1, since + bound - time.monotonic())
        try:
            async with locker.lease(request, item, wait_period=wait_period, timeout=left):
                return time.monotonic() - since
        except LeaseNotObtainedError:
            raise AssertionError(
                f"{item} still held {bound:.2f} s after every worker stopped"
            ) from None

    try:
        return list(await asyncio.gather(*(one(item) for item in items)))
    finally:
        await locker.aclose()


# -- figures ---------------------------------------------------------------------------------


@dataclass
class Figures:
    """One scenario's figures, as written to ``chaos-results/chaos.jsonl``."""

    scenario: str
    seconds: float
    holds_checked: int
    items: int
    handovers: int
    overlaps: int = 0
    faults_injected: dict[str, int] = field(default_factory=dict)
    leases_lost: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        scenario: str,
        seconds: float,
        report: Report,
        *,
        faults: Counter[str] | dict[str, int] | None = None,
        recorder: Recorder | None = None,
        losses: dict[str, int] | None = None,
        **extra: Any,
    ) -> Figures:
        return cls(
            scenario=scenario,
            seconds=round(seconds, 1),
            holds_checked=report.holds,
            items=report.items,
            handovers=report.handovers,
            faults_injected=dict(sorted((faults or {}).items())),
            leases_lost=dict(recorder.losses) if recorder else (losses or {}),
            extra=extra,
        )

    def publish(self) -> None:
        RESULTS_DIR.mkdir(exist_ok=True)
        with RESULTS_FILE.open("a") as out:
            out.write(json.dumps(asdict(self), sort_keys=True) + "\n")
        print(f"\n[chaos] {self.scenario}: {json.dumps(asdict(self), sort_keys=True)}")


def by_item(holds: list[Hold]) -> dict[str, list[Hold]]:
    out: dict[str, list[Hold]] = defaultdict(list)
    for hold in holds:
        out[hold.item].append(hold)
    return out


class LogCounter(logging.Handler):
    """Counts aiolease log records by message template while installed (a context manager)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: Counter[str] = Counter()
        self._logger = logging.getLogger("aiolease")
        self._level = self._logger.level

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[str(record.msg)] += 1

    def count(self, text: str) -> int:
        return sum(n for key, n in self.counts.items() if text in key)

    def __enter__(self) -> LogCounter:
        self._logger.addHandler(self)
        self._logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)
