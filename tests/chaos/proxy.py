"""A loopback TCP proxy in front of the moto server that can play "DynamoDB is down".

Passing bytes through untouched, it keeps moto's state (tables, rows) across an outage,
which restarting moto would lose. Modes:

- ``up``: forward every connection to the server;
- ``refuse``: stop listening (new connections get ECONNREFUSED) and cut open ones;
- ``hang``: accept connections and read requests, but never answer;
- ``error``: answer every request with an HTTP 503 ``ServiceUnavailableException``.

Switching mode cuts every open connection, as a crashed or restarted server would.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

Mode = Literal["up", "refuse", "hang", "error"]

_ERROR_BODY = (
    b'{"__type":"com.amazonaws.dynamodb.v20120810#ServiceUnavailableException",'
    b'"message":"injected by the chaos proxy"}'
)
_ERROR_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/x-amz-json-1.0\r\n"
    b"Content-Length: " + str(len(_ERROR_BODY)).encode() + b"\r\n"
    b"Connection: close\r\n\r\n" + _ERROR_BODY
)


class ChaosProxy:
    """``async with ChaosProxy(upstream_port) as proxy:`` serves on ``proxy.endpoint_url``."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.upstream_port = upstream_port
        self.port = 0
        self.mode: Mode = "up"
        self.connections = 0
        self.refused_requests = 0  # answered with 503 or left hanging
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> ChaosProxy:
        await self._listen()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop_listening()
        self._cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def set_mode(self, mode: Mode) -> None:
        """Switch mode; open connections are cut so that the change applies at once."""
        if mode == self.mode:
            return
        self._cut()
        if mode == "refuse":
            await self._stop_listening()
        elif self._server is None:
            await self._listen()
        self.mode = mode

    # -- plumbing -------------------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    def _cut(self) -> None:
        for writer in list(self._writers):
            transport = writer.transport
            transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            if self.mode == "up":
                await self._forward(reader, writer)
            elif self.mode == "hang":
                self.refused_requests += 1
                while await reader.read(65536):
                    pass
            elif self.mode == "error":
                await _read_request(reader)
                self.refused_requests += 1
                writer.write(_ERROR_RESPONSE)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
            self._tasks.discard(task)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream_port)
        self._writers.add(up_writer)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._writers.discard(up_writer)
            up_writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.transport.abort()


async def _read_request(reader: asyncio.StreamReader) -> None:
    """Read one HTTP request (headers and a Content-Length body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    await reader.readexactly(length)
