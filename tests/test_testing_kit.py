"""aiolease.testing: the embedded server, its one-request-at-a-time guarantee, the fixtures."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from aiolease import LeaseUnavailableError, LockStore
from aiolease.testing import MotoServer, fake_session, local_dynamodb


async def test_local_dynamodb_serves_a_table_and_stops_on_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    async with local_dynamodb() as endpoint_url:
        assert endpoint_url.startswith("http://127.0.0.1:")
        assert os.environ["AWS_ACCESS_KEY_ID"], "throwaway credentials are set for the block"
        async with LockStore.connect("kit", endpoint_url=endpoint_url) as store:
            await store.create_table()
            assert await store.add_item("one")
            assert await store.list_lease_ids() == ["one"]
    assert "AWS_ACCESS_KEY_ID" not in os.environ, "the environment is restored on exit"
    async with LockStore.connect(
        "kit", endpoint_url=endpoint_url, session=fake_session(), connect_timeout=1
    ) as store:
        with pytest.raises(LeaseUnavailableError):
            await store.list_lease_ids()  # nobody listens there any more


def test_moto_server_start_stop_restart() -> None:
    server = MotoServer()
    with server:
        assert server.running and server.endpoint_url is not None
        port = server.port
        with pytest.raises(RuntimeError, match="already started"):
            server.start()
        assert server.restart().endswith(f":{port}"), "restart keeps the port"
        assert server.running
    assert not server.running
    server.stop()  # idempotent


async def test_conditional_writes_on_one_item_are_atomic(client: Any, table_name: str) -> None:
    """Ten writers race for one item, ten times: exactly one conditional write wins each time.

    moto's own threaded server lets several win; the kit serves one request at a time.
    """
    store = LockStore(client, table_name)
    await store.create_table()

    async def claim(item: str, writer: int) -> bool:
        try:
            await client.update_item(
                TableName=table_name,
                Key={"LeaseID": {"S": item}},
                UpdateExpression="SET #o = :w",
                ConditionExpression="attribute_not_exists(#o)",
                ExpressionAttributeNames={"#o": "Owner"},
                ExpressionAttributeValues={":w": {"N": str(writer)}},
            )
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    for round_ in range(10):
        item = f"race-{round_}"
        wins = await asyncio.gather(*(claim(item, w) for w in range(10)))
        assert sum(wins) == 1, f"round {round_}: {sum(wins)} conditional writes won"
        response = await client.get_item(
            TableName=table_name, Key={"LeaseID": {"S": item}}, ConsistentRead=True
        )
        assert int(response["Item"]["Owner"]["N"]) == wins.index(True)


async def test_lock_store_fixture_gives_a_fresh_empty_table(lock_store: LockStore) -> None:
    assert await lock_store.list_lease_ids() == []
    assert (await lock_store.describe_table())["TableStatus"] == "ACTIVE"
    await lock_store.add_item("mine")  # the next test's table will not have it


async def test_lock_store_fixture_tables_are_not_shared(lock_store: LockStore) -> None:
    assert await lock_store.list_lease_ids() == []


def test_the_plugin_works_for_users_in_pytest_asyncio_strict_mode(tmp_path: Path) -> None:
    """A user's project: no conftest, strict mode; the fixtures come from the entry point."""
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from aiolease import LeaseRequest, Locker

            @pytest.mark.asyncio
            async def test_my_worker(lock_store):
                await lock_store.add_item("job-1")
                locker = Locker(lock_store)
                async with locker.lease(LeaseRequest("me", 2)) as lease:
                    assert lease.lease_id == "job-1"

            def test_endpoint(dynamodb_endpoint):
                assert dynamodb_endpoint.startswith("http://127.0.0.1:")
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTEST_"))}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["-o", "asyncio_mode=strict", "test_user.py"]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
