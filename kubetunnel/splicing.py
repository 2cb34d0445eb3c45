"""Copying between a TCP connection (asyncio streams) and any :class:`ByteStream`, both ways,
with half-close carried across: the socket's EOF becomes ``send_eof`` and the other way round.
"""

from __future__ import annotations

import asyncio
import contextlib

from kubetunnel.plugins import ByteStream

CHUNK = 256 * 1024


async def splice(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: ByteStream
) -> tuple[int, int]:
    """Until both directions ended; returns (bytes sent to the stream, bytes received)."""
    sent = received = 0

    async def upstream() -> None:
        nonlocal sent
        while data := await reader.read(CHUNK):
            await stream.send(data)
            sent += len(data)
        await stream.send_eof()

    async def downstream() -> None:
        nonlocal received
        while data := await stream.receive(CHUNK):
            writer.write(data)
            received += len(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                for other in pending:
                    other.cancel()
                break
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(ConnectionError, OSError):
            await stream.aclose()
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    return sent, received
