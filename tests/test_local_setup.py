"""Trying things across processes on one machine: a loopback endpoint needs no credentials,
and ``aiolease server`` keeps an embedded DynamoDB-compatible server up for other processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from aiolease import LeaseRequest, Locker, LockStore, LeaseStoreError

AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An environment where botocore finds no credentials and no region at all."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.usefixtures("no_aws_credentials")
async def test_connect_to_a_loopback_endpoint_needs_no_credentials(
    dynamodb_endpoint: str,
) -> None:
    table = f"local-{uuid.uuid4().hex[:8]}"
    async with LockStore.connect(table, endpoint_url=dynamodb_endpoint) as store:
        await store.create_table()
        await store.add_item("a")
        lease = await Locker(store).obtain_lease(LeaseRequest("w", 2))
        assert lease.lease_id == "a"


@pytest.mark.usefixtures("no_aws_credentials")
async def test_connect_elsewhere_without_credentials_says_they_are_missing() -> None:
    # Not a loopback address, so no throwaway credentials; never contacted (signing fails first).
    async with LockStore.connect("leases", endpoint_url="http://dynamodb.invalid:8000") as store:
        with pytest.raises(LeaseStoreError, match="no AWS credentials") as info:
            await store.describe_table()
    assert "AWS_ACCESS_KEY_ID" in str(info.value), "the message should say how to provide them"
