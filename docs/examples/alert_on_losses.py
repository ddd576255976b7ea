"""Alerting on lost leases: a task that follows ``locker.events()`` and pages on each loss.

A worker holds ``shard-1``; an operator force-releases it (as ``aiolease release`` does);
the worker's next renewal finds it gone, its work is cancelled, and the alert task sees a
``LeaseLost``. Runs against ``AIOLEASE_ENDPOINT_URL`` if set, else an embedded moto server.
"""

import asyncio
import contextlib

from aiolease import LeaseLost, LeaseLostError, LeaseRequest, Locker, LockStore


# --8<-- [start:alert]
async def page(message: str) -> None:
    """Stand-in for a pager or chat webhook call."""
    print(f"ALERT: {message}")


async def alert_on_losses(locker: Locker) -> None:
    async with locker.events() as events:  # unsubscribes when the task is cancelled
        async for event in events:
            if isinstance(event, LeaseLost):
                holder = f", now held by {event.new_holder}" if event.new_holder else ""
                await page(f"{event.lessee_id} lost {event.lease_id} ({event.reason}){holder}")
            # --8<-- [end:alert]


async def main(endpoint_url: str | None = None) -> None:
    async with LockStore.connect("alerts", endpoint_url=endpoint_url) as store:
        await store.create_table()
        await store.add_item("shard-1")
        locker = Locker(store)
        alerts = asyncio.create_task(alert_on_losses(locker))
        await asyncio.sleep(0)  # let the alert task subscribe
        try:
            async with locker.lease(LeaseRequest("worker-1", 2), heartbeat_period=0.3):
                await store.force_release("shard-1")  # an operator frees the item
                await asyncio.sleep(10)  # cancelled at the next renewal
        except LeaseLostError as exc:
            print(f"worker-1 stopped: {exc.reason}")
        await asyncio.sleep(0)  # the alert task's turn
        alerts.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await alerts


if __name__ == "__main__":
    from aiolease.testing import run_with_dynamodb

    run_with_dynamodb(main)
