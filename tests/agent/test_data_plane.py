"""Cluster client -> agent port -> tunnel -> CLI -> local server, with real sockets both ends."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct

import pytest

from kubetunnel.tunnel.bridging import BRIDGE_WRITE_HIGH, SocketBridge

from .conftest import Stack, download_for


async def _transfer(port: int, upload: bytes, download: int) -> tuple[bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(download.to_bytes(8, "big"))

    async def send() -> None:
        for start in range(0, len(upload), 1 << 16):
            writer.write(upload[start:start + (1 << 16)])
            await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    received = await reader.read(-1)  # until the server's close: a close-delimited body
    await sender
    writer.close()
    await writer.wait_closed()
    return received[:32], received[32:]


async def test_large_transfers_both_ways(stack: Stack) -> None:
    await stack.connected_client()
    upload = os.urandom(6 * 1024 * 1024)
    digest, body = await _transfer(stack.port("exchange"), upload, 6 * 1024 * 1024)
    assert digest == hashlib.sha256(upload).digest()
    assert hashlib.sha256(body).digest() == hashlib.sha256(download_for(6 * 1024 * 1024)).digest()


async def test_half_close_http10_style(stack: Stack) -> None:
    """The client half-closes after its request; the body of the answer ends at the close."""
    await stack.connected_client()
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port("exchange"))
    writer.write((100_000).to_bytes(8, "big") + b"GET / HTTP/1.0\r\n\r\n")
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(-1), 5)
    assert answer[:32] == hashlib.sha256(b"GET / HTTP/1.0\r\n\r\n").digest()
    assert answer[32:] == download_for(100_000)
    writer.close()
    await writer.wait_closed()


async def test_echo_keeps_working_after_the_peer_half_closes(stack: Stack) -> None:
    await stack.connected_client()
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port("echo"))
    writer.write(b"ping")
    writer.write_eof()  # our direction done; the echo must still answer, then close
    assert await asyncio.wait_for(reader.read(-1), 5) == b"ping"
    writer.close()
    await writer.wait_closed()


async def test_a_slow_reader_does_not_slow_another_stream(stack: Stack) -> None:
    client = await stack.connected_client()
    # Stream 1 asks for a big download and then does not read it.
    slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", stack.port("exchange"))
    slow_writer.write((32 * 1024 * 1024).to_bytes(8, "big"))
    slow_writer.write_eof()
    await asyncio.sleep(0.2)
    # Stream 2 runs at full speed meanwhile.
    upload = os.urandom(4 * 1024 * 1024)
    digest, body = await asyncio.wait_for(
        _transfer(stack.port("exchange"), upload, 4 * 1024 * 1024), 10
    )
    assert digest == hashlib.sha256(upload).digest()
    assert len(body) == 4 * 1024 * 1024
    # The stalled stream is bounded by credit, not buffered whole: the agent holds at most its
    # socket's buffer plus one window, and the CLI has stopped reading the local server.
    session, cli_session = stack.agent.session, client.session
    assert session is not None
    assert cli_session is not None
    slow = min(session.streams.values(), key=lambda s: s.id)
    agent_bridge = slow._sink
    assert isinstance(agent_bridge, SocketBridge)
    assert agent_bridge._transport is not None
    held = agent_bridge._transport.get_write_buffer_size()
    assert held <= BRIDGE_WRITE_HIGH + session.options.window
    cli_bridge = cli_session.streams[slow.id]._sink
    assert isinstance(cli_bridge, SocketBridge)
    assert cli_bridge._pending is not None  # back-pressure reached the local server's socket
    # And once read, it is complete and intact.
    answer = await asyncio.wait_for(slow_reader.read(-1), 20)
    assert answer[32:] == download_for(32 * 1024 * 1024)
    slow_writer.close()
    await slow_writer.wait_closed()


async def test_a_thousand_concurrent_streams(stack: Stack) -> None:
    await stack.connected_client()
    port = stack.port("echo")

    async def one(i: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        message = f"stream {i} ".encode() * 10
        replies = b""
        for _ in range(3):
            writer.write(message)
            replies += await reader.readexactly(len(message))
        writer.close()
        await writer.wait_closed()
        return replies

    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(1000))), 30)
    assert all(r == f"stream {i} ".encode() * 30 for i, r in enumerate(results))


async def test_client_reset_reaches_the_local_server(stack: Stack) -> None:
    await stack.connected_client()
    seen: asyncio.Future[BaseException | bytes] = asyncio.get_running_loop().create_future()

    async def watcher(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The CLI's liveness probes connect and close without a byte: not the stream we watch.
        try:
            first = await reader.read(1)
            if first:
                rest = await reader.read(-1)
                if not seen.done():
                    seen.set_result(first + rest)
        except ConnectionError as exc:
            if not seen.done():
                seen.set_result(exc)
        writer.close()

    # Point the echo route at a watcher for this test.
    stack.servers["echo"].close()
    await stack.servers["echo"].wait_closed()
    stack.servers["echo"] = await asyncio.start_server(
        watcher, "127.0.0.1", stack.routes[1].local_port
    )
    _, writer = await asyncio.open_connection("127.0.0.1", stack.port("echo"))
    writer.write(b"partial")
    await asyncio.sleep(0.1)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()  # RST
    result = await asyncio.wait_for(seen, 5)
    assert isinstance(result, ConnectionResetError)


async def test_local_reset_reaches_the_client(stack: Stack) -> None:
    await stack.connected_client()

    async def resetter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(5)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    stack.servers["echo"].close()
    await stack.servers["echo"].wait_closed()
    stack.servers["echo"] = await asyncio.start_server(
        resetter, "127.0.0.1", stack.routes[1].local_port
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port("echo"))
    writer.write(b"hello")
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
