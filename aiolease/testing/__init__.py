"""Test your lease code against a real DynamoDB-compatible server (moto), as aiolease does.

``async with local_dynamodb() as endpoint_url:`` starts an embedded moto server on a free
127.0.0.1 port, serving one request at a time so that conditional writes are atomic as on
DynamoDB, and stops it on exit. The pytest plugin (loaded automatically) adds the fixtures
``dynamodb_endpoint`` (one server per test session) and ``lock_store`` (a fresh table per
test). Needs the ``server`` extra: ``pip install "aiolease[server]"``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import IO

from .._connect import FAKE_CREDENTIALS, fake_session
from ._server import READY

__all__ = ["FAKE_CREDENTIALS", "MotoServer", "fake_session", "local_dynamodb", "run_with_dynamodb"]

_START_TIMEOUT = 60.0


class MotoServer:
    """An embedded moto server in a child process on 127.0.0.1, one request at a time.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``endpoint_url`` is
    set once started. The child exits by itself if this process dies.
    """

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.endpoint_url: str | None = None
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> str:
        """Start the server and return its endpoint URL (waits until it accepts requests)."""
        if self._process is not None:
            raise RuntimeError("server already started")
        # Looked up, not imported: importing moto hooks a stub into every botocore client
        # this process makes (one more handler per request), and the server runs apart.
        if importlib.util.find_spec("moto") is None:
            raise RuntimeError('the embedded server needs moto: pip install "aiolease[server]"')
        process = subprocess.Popen(
            [sys.executable, "-m", "aiolease.testing._server", "--port", str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._process = process
        line = _read_line(process.stdout, _START_TIMEOUT)
        if not line.startswith(READY):
            self.stop()
            raise RuntimeError(f"moto server failed to start (said {line!r})")
        self.endpoint_url = line[len(READY) :].strip()
        self.port = int(self.endpoint_url.rsplit(":", 1)[1])
        return self.endpoint_url

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()

    def restart(self) -> str:
        """Stop and start again on the same port (all tables are lost)."""
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _read_line(stream: IO[str] | None, timeout: float) -> str:
    """Read one line from a child's stdout, giving up after ``timeout`` seconds."""
    assert stream is not None
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else ""


@asynccontextmanager
async def local_dynamodb(port: int = 0) -> AsyncIterator[str]:
    """Run an embedded moto server for the block; yields its endpoint URL.

    Also sets throwaway AWS credentials and a region in the environment if none are set,
    so that clients made inside the block need no configuration.
    """
    server = MotoServer(port)
    endpoint_url = await asyncio.to_thread(server.start)
    saved = _set_fake_environment()
    try:
        yield endpoint_url
    finally:
        _restore_environment(saved)
        await asyncio.to_thread(server.stop)


def run_with_dynamodb(main: Callable[[str], Awaitable[object]]) -> None:
    """Run ``main(endpoint_url)`` against ``$AIOLEASE_ENDPOINT_URL``, else an embedded server.

    How each script under ``docs/examples`` runs on its own: against a server you point it
    at, or against a moto server started (and stopped) for the run.
    """

    async def run() -> None:
        if url := os.environ.get("AIOLEASE_ENDPOINT_URL"):
            await main(url)
        else:
            async with local_dynamodb() as url:
                await main(url)

    asyncio.run(run())


_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": FAKE_CREDENTIALS["aws_access_key_id"],
    "AWS_SECRET_ACCESS_KEY": FAKE_CREDENTIALS["aws_secret_access_key"],
    "AWS_DEFAULT_REGION": FAKE_CREDENTIALS["region_name"],
}


def _set_fake_environment() -> dict[str, str | None]:
    saved: dict[str, str | None] = {}
    for name, value in _ENVIRONMENT.items():
        if name not in os.environ:
            saved[name] = None
            os.environ[name] = value
    return saved


def _restore_environment(saved: dict[str, str | None]) -> None:
    for name in saved:
        os.environ.pop(name, None)
