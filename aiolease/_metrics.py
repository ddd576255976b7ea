"""OpenTelemetry metrics of a locker's leases, through the OpenTelemetry API only.

Built only when a locker is given a ``meter_provider`` (``pip install aiolease[otel]``);
the SDK, the exporters and the provider are the user's. Attributes are few and bounded:
the table, what happened (outcome, reason, takeover), and the lessee only if asked for;
never lease IDs. docs/observability.md lists every instrument.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._types import Lease

__all__ = ["LOSS_REASONS", "Metrics", "loss_reason"]

# Buckets for the histograms in seconds (OpenTelemetry's advisory for HTTP durations): the
# SDK's default buckets are for milliseconds and would put every renewal in the first one.
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)

# The values of the losses' ``aiolease.reason``: LeaseLostError.reason, with the new
# holder's name cut off ("taken over by 'w2'" counts as "taken over"); anything else "other".
LOSS_REASONS = (
    "taken over",
    "released by another",
    "item deleted",
    "row malformed",
    "taken or freed by another",
    "local deadline passed",
    "acquisition answered too late",
    "overrun",
    "table error",
    "heartbeat failed",
)
_KNOWN_REASONS = frozenset(LOSS_REASONS)


def loss_reason(reason: str) -> str:
    """A loss reason as a metric attribute value: one of :data:`LOSS_REASONS` or ``"other"``."""
    if reason.startswith("taken over by "):
        return "taken over"
    return reason if reason in _KNOWN_REASONS else "other"


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aiolease")
    except PackageNotFoundError:  # run from a source tree
        return None


# Attribute dicts kept for reuse: a handful per lessee (outcomes, reasons), so this covers
# hundreds of lessees; a locker that sees more (metrics_lessee_id=True, lessee IDs unique
# per task) rebuilds them instead of growing without bound.
_MAX_CACHED_ATTRIBUTES = 1024


class Metrics:
    """The instruments of one locker, on a meter of ``meter_provider``."""

    def __init__(self, meter_provider: Any, table: str, *, lessee_id: bool = False) -> None:
        try:
            from opentelemetry.metrics import MeterProvider
        except ImportError:
            raise ImportError(
                "metrics need the OpenTelemetry API: pip install 'aiolease[otel]'"
            ) from None
        if not isinstance(meter_provider, MeterProvider):
            raise TypeError(
                "meter_provider must be an opentelemetry.metrics.MeterProvider, "
                f"not {type(meter_provider).__name__}"
            )
        meter = meter_provider.get_meter("aiolease", _version())
        self._table = table
        self._lessee_id = lessee_id
        self._attributes: dict[tuple[str, str, str, object], dict[str, Any]] = {}
        self.held = meter.create_up_down_counter(
            "aiolease.leases.held",
            unit="{lease}",
            description="Leases this process keeps alive now (a heartbeat is running)",
        )
        self.acquisitions = meter.create_counter(
            "aiolease.acquisitions",
            unit="{acquisition}",
            description="Leases obtained; aiolease.takeover true when from another holder",
        )
        self.obtain_duration = meter.create_histogram(
            "aiolease.obtain.duration",
            unit="s",
            description="Time from starting to obtain a lease (waiting included) to having it",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.renewals = meter.create_counter(
            "aiolease.renewals",
            unit="{renewal}",
            description="Renewal attempts by outcome: renewed, failed (retried) or lost",
        )
        self.renewal_duration = meter.create_histogram(
            "aiolease.renewal.duration",
            unit="s",
            description="Duration of each renewal attempt's call, by outcome",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.losses = meter.create_counter(
            "aiolease.losses",
            unit="{loss}",
            description="Leases lost, by reason",
        )
        self.heartbeat_lag = meter.create_histogram(
            "aiolease.heartbeat.lag",
            unit="s",
            description="How late heartbeats woke up for a renewal (event-loop lag)",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )

    def _attrs(self, lease: Lease, key: str = "", value: object = None) -> dict[str, Any]:
        """The attributes for ``lease``, plus ``key: value``; built once per combination."""
        lessee = lease.request.lessee_id if self._lessee_id else ""
        cache_key = (lessee, key, type(value).__name__, value)
        attributes = self._attributes.get(cache_key)
        if attributes is None:
            attributes = {"aiolease.table": self._table}
            if self._lessee_id:
                attributes["aiolease.lessee_id"] = lessee
            if key:
                attributes[key] = value
            if len(self._attributes) >= _MAX_CACHED_ATTRIBUTES:
                self._attributes.clear()  # many lessees over time: start again, bounded
            self._attributes[cache_key] = attributes
        return attributes

    def acquired(self, lease: Lease, takeover: bool, waited: float) -> None:
        self.acquisitions.add(1, self._attrs(lease, "aiolease.takeover", takeover))
        self.obtain_duration.record(waited, self._attrs(lease))

    def holding(self, lease: Lease, change: int) -> None:
        self.held.add(change, self._attrs(lease))

    def woke(self, lease: Lease, lag: float) -> None:
        self.heartbeat_lag.record(max(0.0, lag), self._attrs(lease))

    def renewal(self, lease: Lease, outcome: str, seconds: float) -> None:
        attributes = self._attrs(lease, "aiolease.outcome", outcome)
        self.renewals.add(1, attributes)
        self.renewal_duration.record(seconds, attributes)

    def lost(self, lease: Lease, reason: str) -> None:
        self.losses.add(1, self._attrs(lease, "aiolease.reason", loss_reason(reason)))
