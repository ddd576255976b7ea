"""Trying things across processes on one machine: a loopback endpoint needs no credentials,
and ``aiolease server`` keeps an embedded DynamoDB-compatible server up for other processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from aiolease import LeaseRequest, LeaseStoreError, Locker, LockStore

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


def clean_environment(tmp_path: Path) -> dict[str, str]:
    """This process's environment without any AWS configuration."""
    env = {k: v for k, v in os.environ.items() if k not in AWS_VARIABLES}
    env.pop("AIOLEASE_ENDPOINT_URL", None)
    env.pop("AIOLEASE_TABLE", None)
    none = str(tmp_path / "none")
    return {**env, "AWS_SHARED_CREDENTIALS_FILE": none, "AWS_CONFIG_FILE": none}


async def test_aiolease_server_serves_other_processes_until_sigterm(tmp_path: Path) -> None:
    clean = clean_environment(tmp_path)
    server = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "aiolease", "server", "--port", "0", "--table", "shared"),
        env=clean,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert server.stdout is not None
    try:
        printed: list[str] = []
        while not printed or not printed[-1].startswith("Serving until"):
            line = await asyncio.wait_for(server.stdout.readline(), 60)
            assert line, f"the server exited early, having printed {printed}"
            printed.append(line.decode().strip())
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in printed
            if line.startswith("export ")
        )
        assert set(exports) == {
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
            "AIOLEASE_ENDPOINT_URL",
            "AIOLEASE_TABLE",
        }, printed
        endpoint = exports["AIOLEASE_ENDPOINT_URL"]
        assert endpoint in printed[0]
        # Another process, with only what the server printed: the CLI registers an item.
        added = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "aiolease", "add", "shard-1"],
            env={**clean, **exports},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert added.returncode == 0, added.stderr
        # And another client, with no credentials at all, leases it.
        async with LockStore.connect("shared", endpoint_url=endpoint) as store:
            lease = await Locker(store).obtain_lease(LeaseRequest("w", 2))
        assert lease.lease_id == "shard-1"
        server.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(server.communicate(), 30)
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    assert server.returncode == 0, err.decode()
    assert "Traceback" not in err.decode(), err.decode()
    # Quiet by default: no access line per request (--log-requests turns them on).
    assert "HTTP/1.1" not in err.decode(), err.decode()


def test_aiolease_server_on_a_port_in_use_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from aiolease.cli import EXIT_FAILED, main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["server", "--port", str(port)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"127.0.0.1:{port}" in err and "--port" in err, err


async def test_the_test_servers_stay_up_flag_outlives_a_closed_stdin() -> None:
    server = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "aiolease.testing._server", "--port", "0", "--stay-up"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        line = (await asyncio.wait_for(server.stdout.readline(), 60)).decode()
        endpoint = line.rsplit(" ", 1)[-1].strip()
        server.stdin.close()  # without --stay-up the server exits at once on this
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(server.wait()), 1.0)
        async with LockStore.connect("stays", endpoint_url=endpoint) as store:
            await store.create_table()
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), 30) == 0
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
