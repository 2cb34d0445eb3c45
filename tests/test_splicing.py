"""splice() carries bytes and half-close between a socket and a ByteStream, both ways."""

from __future__ import annotations

import asyncio
import os

from kubetunnel.splicing import splice
from kubetunnel.transports.loopback import pipe_pair


async def test_splice_carries_data_and_half_close_both_ways() -> None:
    ours, theirs = pipe_pair(limit=4096)
    results: list[tuple[int, int]] = []
    finished = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        results.append(await splice(reader, writer, ours))
        finished.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = os.urandom(300_000)
    writer.write(request)
    writer.write_eof()  # the socket's EOF must arrive at the stream as EOF

    received = bytearray()
    while chunk := await theirs.receive():
        received += chunk
    assert bytes(received) == request
    # The other direction is still open after the client's half-close (HTTP/1.0 style).
    await theirs.send(b"response body")
    await theirs.send_eof()
    assert await reader.read() == b"response body"
    writer.close()
    await writer.wait_closed()
    await asyncio.wait_for(finished.wait(), 5)
    server.close()
    await server.wait_closed()
    assert results == [(len(request), len(b"response body"))]
