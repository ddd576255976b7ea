"""Regression tests for the CLI's release (issue 12, item 14): conditioned on what it showed."""

from __future__ import annotations

import asyncio
import builtins
import sys
from typing import Any

import pytest

from aiolease import LeaseRequest, LockStore
from aiolease.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main


def run(endpoint: str, table: str, *argv: str) -> int:
    return main([*argv, "--table", table, "--endpoint-url", endpoint])


async def test_release_refuses_when_the_row_changed_after_it_was_shown(
    dynamodb_endpoint: str,
    store: LockStore,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await store.add_item("stuck")
    old = await store.acquire("stuck", LeaseRequest("stuck-worker", 30))
    loop = asyncio.get_running_loop()
    taken: list[Any] = []

    async def change_hands() -> None:
        # While the operator reads the question, the holder releases and another takes it.
        await store.release(old)
        taken.append(await store.acquire("stuck", LeaseRequest("new-worker", 30)))

    def answer(question: str) -> str:
        sys.stdout.write(question)
        asyncio.run_coroutine_threadsafe(change_hands(), loop).result(10)
        return "y"

    monkeypatch.setattr(builtins, "input", answer)
    status = await asyncio.to_thread(run, dynamodb_endpoint, store.table_name, "release", "stuck")
    captured = capsys.readouterr()
    assert status == EXIT_FAILED, captured
    assert "changed" in captured.err
    item = await store.get_item("stuck")
    assert item is not None and item.lessee_id == "new-worker", "released the new holder"
    assert item.fencing_token == taken[0].fencing_token


async def test_release_says_a_live_holder_stops_at_its_next_renewal(
    dynamodb_endpoint: str,
    store: LockStore,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await store.add_item("stuck")
    await store.acquire("stuck", LeaseRequest("stuck-worker", 30))
    monkeypatch.setattr(builtins, "input", lambda question: (sys.stdout.write(question), "n")[1])
    assert await asyncio.to_thread(run, dynamodb_endpoint, store.table_name, "release", "stuck")
    question = capsys.readouterr().out
    assert "next renewal" in question, question
    assert "at once" not in question
    status = await asyncio.to_thread(
        run, dynamodb_endpoint, store.table_name, "release", "stuck", "--yes"
    )
    assert status == EXIT_OK
    assert "next renewal" in capsys.readouterr().out


def test_a_malformed_table_name_is_a_usage_error_not_a_traceback(
    dynamodb_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["ls", "--table", "t", "--endpoint-url", dynamodb_endpoint])
    assert info.value.code == EXIT_USAGE, "a table name DynamoDB refuses is a usage error"
    err = capsys.readouterr().err
    assert "not a valid DynamoDB table name" in err
    assert "Traceback" not in err
