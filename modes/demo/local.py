"""The laptop's side of the demo: the local HTTP server, and requests sent as a pod sends them."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass


class LocalServer:
    """The 'process on your laptop': a tiny HTTP server the demo stops and starts again."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # The CLI's liveness probe connects and closes without a request: not an error.
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await reader.readuntil(b"\r\n\r\n")
                body = f"hello from your laptop (pid {os.getpid()})".encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                             + body)
                await writer.drain()
            writer.close()

        # The same port every time: coming back means the tunnel finds it where it was.
        self._server = await asyncio.start_server(handle, "127.0.0.1", self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


@dataclass(frozen=True)
class Answer:
    status: int | None
    body: str
    error: str | None = None


async def ask(address: str, port: int = 80, timeout: float = 2.0) -> Answer:
    """One plain HTTP/1.1 GET to the ClusterIP, as a pod in the cluster would send it."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, port)
            try:
                writer.write(b"GET / HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n")
                await writer.drain()
                response = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        return Answer(None, "", type(exc).__name__)
    head, _, body = response.partition(b"\r\n\r\n")
    parts = head.split(b"\r\n", 1)[0].decode(errors="replace").split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return Answer(None, "", f"not HTTP: {head[:40]!r}")
    return Answer(int(parts[1]), body.decode(errors="replace").strip())
