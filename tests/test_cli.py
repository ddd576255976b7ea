"""The operator commands against the moto server: output, confirmation, exit codes, --help."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import subprocess
import sys
import uuid
from typing import Any

import pytest

from aiolease import LeaseItem, LeaseRequest, LockStore
from aiolease.cli import EXIT_FAILED, EXIT_OK, EXIT_STORE, EXIT_USAGE, main

HOLDER = LeaseRequest("stuck-worker", 30)


@pytest.fixture
def table(dynamodb_endpoint: str) -> str:
    """A fresh table name, for tests where the CLI creates the table."""
    return f"cli-{uuid.uuid4().hex[:12]}"


def run(endpoint: str, table: str, *argv: str) -> int:
    return main([*argv, "--table", table, "--endpoint-url", endpoint])


async def cli(store: LockStore, endpoint: str, *argv: str) -> int:
    """Run the CLI on the store's table, in a thread (it runs its own event loop)."""
    return await asyncio.to_thread(run, endpoint, store.table_name, *argv)


async def row(store: LockStore, lease_id: str) -> LeaseItem:
    rows = {item.lease_id: item async for item in store.scan(consistent_read=True)}
    return rows[lease_id]


def ls_json(endpoint: str, table: str, capsys: pytest.CaptureFixture[str]) -> list[Any]:
    capsys.readouterr()
    assert run(endpoint, table, "ls", "--json") == EXIT_OK
    rows: list[Any] = json.loads(capsys.readouterr().out)
    return rows


# -- create-table, add, ls ----------------------------------------------------------------


def test_create_table_add_and_ls_json_show_items_with_typed_attributes(
    dynamodb_endpoint: str, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(dynamodb_endpoint, table, "create-table") == EXIT_OK
    assert run(dynamodb_endpoint, table, "create-table") == EXIT_OK, "must be idempotent"
    assert "is ready" in capsys.readouterr().out
    status = run(
        dynamodb_endpoint, table, "add", "shard-1", "--attr", "region=eu-west-1", "--attr", "w:=3"
    )
    assert status == EXIT_OK
    assert run(dynamodb_endpoint, table, "add", "shard-2") == EXIT_OK
    assert "added 'shard-2'" in capsys.readouterr().out

    rows = ls_json(dynamodb_endpoint, table, capsys)
    assert [row["id"] for row in rows] == ["shard-1", "shard-2"]
    assert rows[0]["attributes"] == {"region": "eu-west-1", "w": 3}
    assert rows[0]["holder"] is None and rows[0]["expires_in"] is None
    assert rows[0]["fencing_token"] == 0


async def test_add_of_an_existing_item_leaves_it_untouched(
    dynamodb_endpoint: str, store: LockStore, capsys: pytest.CaptureFixture[str]
) -> None:
    await store.add_item("a", {"x": "1"})
    assert await cli(store, dynamodb_endpoint, "add", "a", "--attr", "x=2") == EXIT_OK
    assert "already exists" in capsys.readouterr().out
    assert (await row(store, "a")).attributes == {"x": "1"}


async def test_ls_shows_holder_expiry_and_token_of_a_held_item(
    dynamodb_endpoint: str, store: LockStore, capsys: pytest.CaptureFixture[str]
) -> None:
    await store.add_item("held")
    await store.add_item("free")
    token = (await store.acquire("held", HOLDER)).fencing_token

    assert await cli(store, dynamodb_endpoint, "ls") == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "HOLDER", "EXPIRES", "IN", "TOKEN", "ATTRIBUTES"]
    free, held = lines[1].split(), lines[2].split()
    assert free[:2] == ["free", "-"], lines
    assert held[0:2] == ["held", "stuck-worker"] and held[3] == str(token), lines
    assert held[2].endswith("s") and 25 < float(held[2][:-1]) <= 30, lines

    assert await cli(store, dynamodb_endpoint, "ls", "--json") == EXIT_OK
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["held"]["holder"] == "stuck-worker"
    assert 25 < rows["held"]["expires_in"] <= 30
    assert rows["held"]["fencing_token"] == token


async def test_ls_of_an_empty_table_says_so(
    dynamodb_endpoint: str, store: LockStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli(store, dynamodb_endpoint, "ls") == EXIT_OK
    assert "no items" in capsys.readouterr().out
    assert await cli(store, dynamodb_endpoint, "ls", "--json") == EXIT_OK
    assert json.loads(capsys.readouterr().out) == []


# -- release ------------------------------------------------------------------------------


async def test_release_yes_frees_the_item_and_keeps_token_and_row(
    dynamodb_endpoint: str, store: LockStore, capsys: pytest.CaptureFixture[str]
) -> None:
    await store.add_item("stuck", {"keep": "me"})
    token = (await store.acquire("stuck", HOLDER)).fencing_token

    assert await cli(store, dynamodb_endpoint, "release", "stuck", "--yes") == EXIT_OK
    assert "was held by 'stuck-worker'" in capsys.readouterr().out
    after = await row(store, "stuck")
    assert after.lessee_id is None
    assert after.fencing_token == token, "a forced release must keep the fencing token"
    assert after.attributes == {"keep": "me"}
    next_holder = await store.acquire("stuck", LeaseRequest("next", 5))
    assert next_holder.fencing_token > token, "the next holder's token grows"


async def test_release_refused_at_the_prompt_leaves_the_item_held(
    dynamodb_endpoint: str,
    store: LockStore,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await store.add_item("stuck")
    await store.acquire("stuck", HOLDER)

    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    assert await cli(store, dynamodb_endpoint, "release", "stuck") == EXIT_FAILED
    captured = capsys.readouterr()
    assert "held by 'stuck-worker'" in captured.out and "[y/N]" in captured.out
    assert "not released" in captured.err
    assert (await row(store, "stuck")).lessee_id == "stuck-worker"

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no terminal, no answer: no
    assert await cli(store, dynamodb_endpoint, "release", "stuck") == EXIT_FAILED
    assert (await row(store, "stuck")).lessee_id == "stuck-worker"

    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    assert await cli(store, dynamodb_endpoint, "release", "stuck") == EXIT_OK
    assert (await row(store, "stuck")).lessee_id is None


async def test_release_of_a_free_item_changes_nothing(
    dynamodb_endpoint: str, store: LockStore, capsys: pytest.CaptureFixture[str]
) -> None:
    await store.add_item("idle")
    assert await cli(store, dynamodb_endpoint, "release", "idle") == EXIT_OK  # no question asked
    assert "already free" in capsys.readouterr().out


async def test_release_of_a_missing_item_fails(
    dynamodb_endpoint: str, store: LockStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli(store, dynamodb_endpoint, "release", "ghost", "--yes") == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("aiolease: error: no item 'ghost'") and err.count("\n") == 1


async def test_release_of_a_session_row_is_a_usage_error_and_keeps_the_session(
    dynamodb_endpoint: str, store: LockStore, capsys: pytest.CaptureFixture[str]
) -> None:
    session = await store.start_session(LeaseRequest("worker-a", 30))
    with pytest.raises(SystemExit) as info:
        await cli(store, dynamodb_endpoint, "release", session.lease_id, "--yes")
    assert info.value.code == EXIT_USAGE
    assert "end the session instead" in capsys.readouterr().err
    row = await store.get_session(session.lease_id)
    assert row is not None and not row.ended and row.lessee_id == "worker-a"


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["ls"], ["add", "x"], ["release", "x", "--yes"]])
def test_a_missing_table_is_a_one_line_error_with_exit_code_3(
    dynamodb_endpoint: str, table: str, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    assert run(dynamodb_endpoint, table, *command) == EXIT_STORE
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert table in err and "does not exist" in err and "create-table" in err


async def test_a_table_keyed_otherwise_is_exit_code_3(
    dynamodb_endpoint: str, client: Any, table_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    other = LockStore(client, table_name, "Other")
    await other.create_table()
    assert await cli(other, dynamodb_endpoint, "create-table") == EXIT_STORE
    assert "LeaseID" in capsys.readouterr().err
    assert await cli(other, dynamodb_endpoint, "ls") == EXIT_STORE
    assert "LeaseID" in capsys.readouterr().err


def test_an_unreachable_endpoint_is_exit_code_3(
    table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert run(f"http://127.0.0.1:{port}", table, "ls") == EXIT_STORE
    err = capsys.readouterr().err
    assert err.startswith("aiolease: error:") and err.count("\n") == 1
    assert "unavailable" in err and f"127.0.0.1:{port}" in err


def test_missing_credentials_are_exit_code_3(
    table: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # Not a loopback address, so no throwaway credentials; never contacted (signing fails first).
    assert run("http://dynamodb.invalid:8000", table, "ls") == EXIT_STORE
    assert "no AWS credentials" in capsys.readouterr().err


def test_usage_errors_exit_with_code_2(
    dynamodb_endpoint: str, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["ls", "--endpoint-url", dynamodb_endpoint])  # no --table
    assert info.value.code == EXIT_USAGE
    assert "--table is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        run(dynamodb_endpoint, table, "add", "x", "--attr", "novalue")
    assert info.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as info:
        run(dynamodb_endpoint, table, "add", "x", "--attr", "n:={bad json")
    assert info.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == EXIT_USAGE


# -- help ---------------------------------------------------------------------------------


def test_help_lists_every_command_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "create-table", "add", "ls", "release"):
        assert command in out
    assert "exit codes:" in out and "3  the table, the credentials or the endpoint" in out


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("demo", "SIGKILL"),
        ("create-table", "on-demand"),
        ("add", "KEY:=JSON"),
        ("ls", "--json"),
        ("release", "--yes"),
    ],
)
def test_each_command_has_help_with_an_example(
    capsys: pytest.CaptureFixture[str], command: str, expected: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert expected in out and "example" in out and "--endpoint-url" in out


def test_python_dash_m_aiolease_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aiolease", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("aiolease ")
