"""``aiolease watch`` against the moto server: refreshes, highlighted changes, Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aiolease import LeaseItem, LeaseRequest, LockStore
from aiolease.cli import EXIT_OK, EXIT_USAGE, main
from aiolease.cli._exit import EXIT_INTERRUPTED
from aiolease.cli._watch import changed_rows, plain_lines

TIMEOUT = 30.0


@pytest.fixture
async def store(client: Any, table_name: str) -> AsyncIterator[LockStore]:
    s = LockStore(client, table_name)
    await s.create_table()
    await s.add_item("a", {"region": "eu"})
    await s.add_item("b")
    yield s
    await s.aclose()


async def test_watch_refreshes_count_times_and_exits_cleanly(
    dynamodb_endpoint: str, store: LockStore, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["watch", "--count", "2", "--interval", "0.05", "--table", store.table_name]
    status = await asyncio.to_thread(main, [*argv, "--endpoint-url", dynamodb_endpoint])
    assert status == EXIT_OK
    out = capsys.readouterr().out
    snapshots = out.split("\n\n")
    assert len(snapshots) == 2, f"expected two refreshes, got:\n{out}"
    for snapshot in snapshots:
        title, header, first, second = snapshot.strip("\n").splitlines()
        assert title.startswith(f"{store.table_name} at ") and "2 item(s)" in title
        assert header.split() == ["ID", "HOLDER", "EXPIRES", "IN", "TOKEN", "ATTRIBUTES"]
        assert first.split() == ["a", "-", "-", "0", 'region="eu"']
        assert second.split() == ["b", "-", "-", "0"]
    assert "\x1b" not in out, "piped output must carry no terminal codes"


def _item(lease_id: str, lessee: str | None, token: int) -> LeaseItem:
    return LeaseItem(lease_id, lessee, 0 if lessee is None else 1, token)


def test_a_new_holder_or_token_is_a_change_a_renewal_is_not() -> None:
    before = [_item("a", "w1", 1), _item("b", None, 0), _item("c", "w3", 4)]
    previous = {i.lease_id: (i.lessee_id, i.fencing_token) for i in before}
    now = [_item("a", "w2", 2), _item("b", None, 0), _item("c", "w3", 4), _item("d", None, 0)]
    assert changed_rows(None, now) == set(), "nothing is a change on the first refresh"
    assert changed_rows(previous, now) == {"a", "d"}
    lines = plain_lines([("a", "w2", "1.0s", "2", ""), ("b", "-", "-", "0", "")], {"a"})
    assert lines[1].startswith("* a") and lines[2].startswith("  b")
    bold = plain_lines([("a", "w2", "1.0s", "2", "")], {"a"}, bold=True)
    assert bold[1].startswith("\x1b[1m* a")


def test_watch_refuses_a_bad_interval(dynamodb_endpoint: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["watch", "--interval", "0", "--table", "t-x1", "--endpoint-url", dynamodb_endpoint])
    assert info.value.code == EXIT_USAGE


def test_watch_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["watch", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--interval" in out and "Ctrl-C" in out and "example" in out


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
async def test_watch_highlights_a_change_and_exits_0_on_ctrl_c(
    dynamodb_endpoint: str, store: LockStore
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "aiolease", "watch", "--table", store.table_name, "--interval", "0.2"),
        *("--endpoint-url", dynamodb_endpoint),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert process.stdout is not None

        async def line_starting(prefix: str) -> str:
            async with asyncio.timeout(TIMEOUT):
                while line := (await process.stdout.readline()).decode():  # type: ignore[union-attr]
                    if line.startswith(prefix):
                        return line
            raise AssertionError(f"watch ended before printing a line starting {prefix!r}")

        await line_starting(store.table_name)  # the first refresh
        lease = await store.acquire("a", LeaseRequest("w1", 30))
        changed = await line_starting("* a")
        assert "w1" in changed and f" {lease.fencing_token} " in changed
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()


def test_the_rich_view_shows_brackets_in_cells_as_text_not_markup(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("rich")
    from aiolease.cli._watch import _RichView

    view = _RichView()
    try:
        view.show("t[/y]", [("jobs[/x]", "w1", "1.0 s", "1", 'note="[/b]"')], set())
    finally:
        view.close()
    out = capsys.readouterr().out
    assert "jobs[/x]" in out and "[/b]" in out and "t[/y]" in out, out


class _HangingStore:
    """A store whose scan never answers; with ``stubborn``, its first cancellation hangs too."""

    def __init__(self, *, stubborn: bool = False) -> None:
        self.scanning = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.stubborn = stubborn

    async def scan(self, **kwargs: Any) -> AsyncIterator[Any]:
        self.scanning.set()
        try:
            await asyncio.Event().wait()  # an endpoint that does not answer
        except asyncio.CancelledError:
            self.cancelled.set()
            if not self.stubborn:
                raise
            await asyncio.Event().wait()  # an unwinding that hangs until cancelled again
        yield None  # pragma: no cover


def _watch_on(monkeypatch: pytest.MonkeyPatch, store: _HangingStore) -> asyncio.Task[int]:
    from aiolease.cli import _watch

    @contextlib.asynccontextmanager
    async def open_store(args: Any) -> AsyncIterator[Any]:
        yield store

    monkeypatch.setattr(_watch, "_open_store", open_store)
    args = argparse.Namespace(interval=0.2, count=None, plain=True, table="t")
    return asyncio.ensure_future(_watch.watch(args))


async def _outcome(task: asyncio.Task[int], within: float) -> int:
    try:
        return await asyncio.wait_for(asyncio.shield(task), within)
    except TimeoutError:
        for _ in range(2):  # a stubborn scan swallows the first cancellation
            task.cancel()
            await asyncio.wait({task}, timeout=1)
        raise AssertionError(f"watch still running {within} s after a Ctrl-C") from None


@pytest.mark.skipif(sys.platform == "win32", reason="the loop's SIGINT handler")
async def test_ctrl_c_ends_watch_promptly_with_0_while_a_scan_hangs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _HangingStore()
    task = _watch_on(monkeypatch, store)
    await asyncio.wait_for(store.scanning.wait(), TIMEOUT)
    os.kill(os.getpid(), signal.SIGINT)  # watch's loop handler takes it
    assert await _outcome(task, 2.0) == EXIT_OK
    assert store.cancelled.is_set(), "the hung scan was left running"


@pytest.mark.skipif(sys.platform == "win32", reason="the loop's SIGINT handler")
async def test_a_second_ctrl_c_ends_watch_at_once_with_130_while_the_first_unwinds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _HangingStore(stubborn=True)
    task = _watch_on(monkeypatch, store)
    await asyncio.wait_for(store.scanning.wait(), TIMEOUT)
    os.kill(os.getpid(), signal.SIGINT)
    try:
        await asyncio.wait_for(store.cancelled.wait(), 2.0)
    except TimeoutError:
        await _outcome(task, 0)  # stops it, then fails
    os.kill(os.getpid(), signal.SIGINT)
    # Well under the 5 s the first Ctrl-C gives a hung scan to unwind.
    assert await _outcome(task, 2.0) == EXIT_INTERRUPTED
