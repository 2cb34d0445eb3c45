"""Relaying between a tunnel stream and a real TCP socket, with no task per connection.

The socket side is an asyncio protocol: what the kernel hands us goes straight into the stream
(``send_nowait``) and, when the stream has no credit, the socket stops being read until credit
returns; what the stream receives is written straight to the socket, and credit goes back to the
sender only once the socket's buffer has room, so a slow client slows exactly one stream.

Endings map one to one: the socket's EOF is the stream's FIN and the other way round (HTTP/1.0
bodies that end at close work), a reset socket resets the stream, and a reset stream resets the
socket (SO_LINGER 0), so a client in the cluster sees what it would see talking to the real pod.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from kubetunnel.tunnel.framing import ErrorCode, Payload
from kubetunnel.tunnel.sockets import abort_with_reset, tune
from kubetunnel.tunnel.streams import Stream

BRIDGE_WRITE_HIGH = 256 * 1024


class SocketBridge(asyncio.Protocol):
    """Copies one socket <-> one stream. Give it the stream, or an ``opener`` that makes one
    when the socket connects (returning None refuses the socket with a reset)."""

    def __init__(
        self, stream: Stream | None = None, opener: Callable[[], Stream | None] | None = None
    ) -> None:
        self.stream = stream
        self._opener = opener
        self._transport: asyncio.Transport | None = None
        self._pending: memoryview | None = None  # socket bytes the stream had no credit for
        self._eof_pending = False
        self._local_done = False  # the socket sent EOF and the stream carried it as FIN
        self._remote_done = False  # the stream sent FIN and the socket got it as EOF
        self._write_paused = False
        self._unacked = 0

    # --- socket side -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        if self.stream is None and self._opener is not None:
            self.stream = self._opener()
        if self.stream is None:
            abort_with_reset(transport)
            return
        tune(transport)
        transport.set_write_buffer_limits(BRIDGE_WRITE_HIGH)
        self.stream.attach(self)

    def data_received(self, data: bytes) -> None:
        stream = self.stream
        if stream is None or stream.finished or stream.local_fin:
            return
        if self._pending is not None:  # cannot happen while paused, but keep order regardless
            self._pending = memoryview(bytes(self._pending) + data)
            return
        sent = stream.send_nowait(data)
        if sent < len(data):
            self._pending = memoryview(data)[sent:]
            assert self._transport is not None
            self._transport.pause_reading()
            stream.on_writable = self._flush_pending

    def _flush_pending(self) -> None:
        stream, pending = self.stream, self._pending
        if stream is None or pending is None or stream.finished or self._transport is None:
            return
        sent = stream.send_nowait(pending)
        if sent < len(pending):
            self._pending = pending[sent:]
            return
        self._pending = None
        stream.on_writable = None
        if self._eof_pending:
            self._send_eof()
        elif not self._transport.is_closing():
            self._transport.resume_reading()

    def eof_received(self) -> bool:
        if self._pending is not None:
            self._eof_pending = True
        else:
            self._send_eof()
        return True  # keep writing to the socket until the stream ends too

    def _send_eof(self) -> None:
        stream = self.stream
        if stream is not None and not stream.finished:
            stream.send_eof_nowait()
        self._local_done = True
        self._maybe_close()

    def connection_lost(self, exc: Exception | None) -> None:
        stream = self.stream
        if stream is not None and not stream.finished:
            if exc is not None:
                stream.reset(ErrorCode.CONNECTION_RESET, f"connection reset: {exc}")
            else:
                stream.reset(ErrorCode.CANCEL, "connection closed")

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._unacked and self.stream is not None:
            self.stream.consumed(self._unacked)
            self._unacked = 0

    # --- stream side (Sink) --------------------------------------------------------------------

    def on_data(self, data: Payload) -> None:
        transport, stream = self._transport, self.stream
        assert transport is not None
        assert stream is not None
        if transport.is_closing():
            return
        transport.write(data)
        if self._write_paused:
            self._unacked += len(data)
        else:
            stream.consumed(len(data))

    def on_fin(self) -> None:
        transport = self._transport
        assert transport is not None
        if not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()
        self._remote_done = True
        self._maybe_close()

    def on_reset(self, code: int, reason: str) -> None:
        if self._transport is not None:
            abort_with_reset(self._transport)

    def _maybe_close(self) -> None:
        if self._local_done and self._remote_done and self._transport is not None:
            self._transport.close()


async def dial(stream: Stream, host: str, port: int, timeout: float) -> bool:
    """Connect ``stream`` to ``host:port``; on failure reset it with the reason. Whether it
    connected."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            await loop.create_connection(lambda: SocketBridge(stream), host, port)
    except (OSError, TimeoutError) as exc:
        reason = f"cannot connect to {host}:{port}: {exc or 'timed out'}"
        stream.reset(ErrorCode.CONNECT_FAILED, reason)
        return False
    return True
