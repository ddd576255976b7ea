"""Observability: print a locker's lifecycle events and export its metrics to the console.

Needs ``pip install 'aiolease[otel]' opentelemetry-sdk``. Runs against
``AIOLEASE_ENDPOINT_URL`` if set, else against an embedded moto server.
"""

import sys

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricsData,
    PeriodicExportingMetricReader,
)

from aiolease import LeaseEvent, LeaseRenewed, LeaseRequest, Locker, LockStore


# --8<-- [start:metrics]
def one_line_per_point(data: MetricsData) -> str:
    """The console exporter's output, shortened to one line per data point."""
    lines = []
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:  # a histogram: its count and sum
                        value = f"count={point.count} sum={point.sum:.3f}"
                    attributes = dict(point.attributes or {})
                    lines.append(f"metric {metric.name} {attributes} {value} {metric.unit}")
    return "\n".join(lines) + "\n"


def console_meter_provider() -> MeterProvider:
    exporter = ConsoleMetricExporter(out=sys.stdout, formatter=one_line_per_point)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    return MeterProvider(metric_readers=[reader])


# --8<-- [end:metrics]


# --8<-- [start:events]
def print_event(event: LeaseEvent) -> None:
    print(f"event {type(event).__name__}: {event.lease_id} token {event.token}")


async def main(endpoint_url: str | None = None) -> None:
    provider = console_meter_provider()
    async with LockStore.connect("observed", endpoint_url=endpoint_url) as store:
        await store.create_table()
        await store.add_item("shard-1")
        locker = Locker(store, meter_provider=provider)
        locker.add_listener(print_event)  # a plain function, called soon after each event
        # The same events as an async iterator (unsubscribed when the block is left):
        async with (
            locker.events() as events,
            locker.lease(LeaseRequest("worker-1", 3), heartbeat_period=0.5),
        ):
            async for event in events:
                if isinstance(event, LeaseRenewed):
                    break  # one renewal is enough for this example
    provider.shutdown()  # exports the metrics one last time
    # --8<-- [end:events]


if __name__ == "__main__":
    from aiolease.testing import run_with_dynamodb

    run_with_dynamodb(main)
