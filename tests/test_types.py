"""LeaseRequest and Lease: validation at construction, conversions, conveniences."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aiolease import Lease, LeaseRequest


def test_lease_request_accepts_seconds_and_timedeltas() -> None:
    assert LeaseRequest("w", 30).duration == 30.0
    assert LeaseRequest("w", timedelta(minutes=2)).duration == 120.0
    assert isinstance(LeaseRequest("w", 1).duration, float)


@pytest.mark.parametrize(
    ("lessee_id", "duration", "error", "field"),
    [
        ("", 30, ValueError, "lessee_id"),
        (None, 30, TypeError, "lessee_id"),
        (7, 30, TypeError, "lessee_id"),
        ("x" * 1025, 30, ValueError, "lessee_id"),
        ("w", 0, ValueError, "duration"),
        ("w", -1, ValueError, "duration"),
        ("w", math.nan, ValueError, "duration"),
        ("w", math.inf, ValueError, "duration"),
        ("w", "30", TypeError, "duration"),
        ("w", True, TypeError, "duration"),
        ("w", timedelta(0), ValueError, "duration"),
        ("w", timedelta(days=30), ValueError, "duration"),
    ],
)
def test_lease_request_refuses_bad_values_naming_the_field(
    lessee_id: Any, duration: Any, error: type[Exception], field: str
) -> None:
    with pytest.raises(error, match=field):
        LeaseRequest(lessee_id, duration)


def test_lease_request_is_frozen() -> None:
    request = LeaseRequest("w", 1)
    with pytest.raises(AttributeError):
        request.duration = 5  # type: ignore[misc]


def test_lease_exposes_the_lessee_id_of_its_request() -> None:
    lease = Lease("item", LeaseRequest("w-1", 5), datetime.now(UTC), 3, {"a": 1})
    assert lease.lessee_id == "w-1"
    assert lease.until.tzinfo is not None
