"""A thin fault-injecting proxy around an aiobotocore DynamoDB client.

Faults are queued per operation name (``update_item``, ``scan``...) and consumed one per
call, so a test states exactly which calls misbehave. The library is never patched: the
store simply receives this proxy as its client.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError, ReadTimeoutError

Fault = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


def client_error(code: str, status: int = 400, operation: str = "UpdateItem") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"injected {code}"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


def throttle(call: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
    """Refused before reaching the table, like DynamoDB throttling."""

    async def run() -> Any:
        raise client_error("ThrottlingException")

    return run()


def server_error(call: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
    async def run() -> Any:
        raise client_error("InternalServerError", 500)

    return run()


def drop_response(call: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
    """The request is applied, but its answer never arrives (a read timeout)."""

    async def run() -> Any:
        await call()
        raise ReadTimeoutError(endpoint_url="injected")

    return run()


def hang(call: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
    """The request is never answered."""

    async def run() -> Any:
        await asyncio.Event().wait()

    return run()


def land_then_hang(landed: asyncio.Event) -> Fault:
    """The request is applied and ``landed`` set; then its answer never comes."""

    def fault(call: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        async def run() -> Any:
            await call()
            landed.set()
            await asyncio.Event().wait()

        return run()

    return fault


def delay(seconds: float) -> Fault:
    def fault(call: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        async def run() -> Any:
            await asyncio.sleep(seconds)
            return await call()

        return run()

    return fault


@dataclass
class FaultyClient:
    """Delegates to ``client``; calls with a queued fault run through it instead."""

    client: Any
    faults: dict[str, deque[Fault]] = field(default_factory=lambda: defaultdict(deque))
    sticky: dict[str, Fault] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def inject(self, operation: str, *faults: Fault) -> None:
        """Apply ``faults`` to the next calls of ``operation``, one each."""
        self.faults[operation].extend(faults)

    def always(self, operation: str, fault: Fault | None) -> None:
        """Apply ``fault`` to every call of ``operation`` until set to None."""
        if fault is None:
            self.sticky.pop(operation, None)
        else:
            self.sticky[operation] = fault

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.client, name)
        if name.startswith("_") or name == "meta" or not callable(target):
            return target

        async def call(**kwargs: Any) -> Any:
            self.calls[name] += 1
            queued = self.faults.get(name)
            fault = queued.popleft() if queued else self.sticky.get(name)
            if fault is None:
                return await target(**kwargs)
            return await fault(lambda: target(**kwargs))

        return call


def without_old_item(call: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
    """A refused conditional write answered without the old item, as some DynamoDB-compatible
    servers answer (they ignore ``ReturnValuesOnConditionCheckFailure``)."""

    async def run() -> Any:
        try:
            return await call()
        except ClientError as exc:
            exc.response.pop("Item", None)
            raise

    return run()


def refused_index_key(exc: ClientError) -> bool:
    """Whether a hand-written row was refused for a wrongly typed index key: DynamoDB (and
    dynalite) refuse such a row in an indexed table, so it can never be found there."""
    error = exc.response.get("Error", {})
    return error.get("Code") == "ValidationException" and "Index Key" in error.get("Message", "")
