"""The loopback transport keeps TCP's promises: order, half-close, back-pressure, refusal."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from kubetunnel.errors import KubetunnelError
from kubetunnel.plugins import ByteStream, TransportSettings, TunnelTarget
from kubetunnel.transports import loopback
from kubetunnel.transports.loopback import LoopbackTransport, pipe_pair


async def _read_all(stream: ByteStream) -> bytes:
    chunks = []
    while chunk := await stream.receive():
        chunks.append(chunk)
    return b"".join(chunks)


async def test_bytes_arrive_in_order_both_ways() -> None:
    a, b = pipe_pair(limit=1000)
    payload = os.urandom(50_000)

    async def send_and_eof(stream: ByteStream, data: bytes) -> None:
        await stream.send(data)
        await stream.send_eof()

    results = await asyncio.gather(
        send_and_eof(a, payload), send_and_eof(b, payload[::-1]), _read_all(b), _read_all(a)
    )
    assert hashlib.sha256(results[2]).digest() == hashlib.sha256(payload).digest()
    assert results[3] == payload[::-1]


async def test_half_close_keeps_the_other_direction_open() -> None:
    a, b = pipe_pair()
    await a.send(b"request")
    await a.send_eof()
    assert await _read_all(b) == b"request"
    await b.send(b"response after the client's EOF")
    await b.send_eof()
    assert await _read_all(a) == b"response after the client's EOF"


async def test_sender_waits_while_the_buffer_is_full() -> None:
    a, b = pipe_pair(limit=10)
    send = asyncio.create_task(a.send(b"x" * 25))
    await asyncio.sleep(0.01)
    assert not send.done()  # 10 bytes buffered, the rest waits for the reader
    assert await b.receive(100) == b"x" * 10
    assert await b.receive(100) == b"x" * 10
    assert await b.receive(100) == b"x" * 5
    await send


async def test_close_resets_the_peer() -> None:
    a, b = pipe_pair()
    reader = asyncio.create_task(b.receive())
    await a.aclose()
    assert await reader == b""
    with pytest.raises(ConnectionResetError):
        await b.send(b"too late")  # a no longer reads
    await a.aclose()  # idempotent


async def test_transport_connects_to_a_listener_and_refuses_otherwise() -> None:
    async def echo(stream: ByteStream) -> None:
        data = await _read_all(stream)
        await stream.send(data.upper())
        await stream.send_eof()

    loopback.default_hub.listen("agent", echo)
    transport = LoopbackTransport(TransportSettings())
    stream = await transport.connect(TunnelTarget(namespace="ns", address="agent"))
    await stream.send(b"hello")
    await stream.send_eof()
    assert await _read_all(stream) == b"HELLO"
    with pytest.raises(KubetunnelError, match="nothing listens"):
        await transport.connect(TunnelTarget(namespace="ns", address="elsewhere"))
    with pytest.raises(KubetunnelError, match="already in use"):
        loopback.default_hub.listen("agent", echo)


def test_bad_buffer_option_is_a_clear_error() -> None:
    with pytest.raises(KubetunnelError, match="number of bytes"):
        LoopbackTransport(TransportSettings(options={"buffer": "lots"}))
