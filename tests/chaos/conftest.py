"""Chaos fixtures: scenario length (short, or long with ``--soak``), a faulty client, figures."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from aiolease import LockStore

from .harness import RESULTS_FILE, ChaosClient

#: Length of each scenario with --soak (seconds); AIOLEASE_SOAK_SECONDS overrides it.
SOAK_SECONDS = 300.0


@pytest.fixture(scope="session", autouse=True)
def _fresh_results_file() -> None:
    """Start each run of the suite with an empty figures file."""
    if RESULTS_FILE.exists():
        RESULTS_FILE.unlink()


@pytest.fixture
def soak_seconds(request: pytest.FixtureRequest) -> float | None:
    """How long a soak scenario runs, or None in the default short mode."""
    if not request.config.getoption("--soak"):
        return None
    return float(os.environ.get("AIOLEASE_SOAK_SECONDS", SOAK_SECONDS))


@pytest.fixture
def run_time(soak_seconds: float | None) -> Callable[[float], float]:
    """``run_time(short)``: the scenario's length, ``short`` seconds unless soaking."""
    return lambda short: short if soak_seconds is None else max(short, soak_seconds)


@pytest.fixture
async def chaos(client: Any) -> tuple[ChaosClient, str]:
    """A ChaosClient on the raw client, and a fresh table name (created, empty)."""
    proxy = ChaosClient(client)
    table = f"chaos-{uuid.uuid4().hex[:12]}"
    store = LockStore(client, table)
    await store.create_table()
    return proxy, table
