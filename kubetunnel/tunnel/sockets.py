"""Real sockets as the tunnel sees them: a ByteStream over an asyncio transport, and the helpers
every socket we touch needs (no Nagle delay, reset instead of close).

Built on the protocol/transport layer rather than asyncio streams: one callback per read with
no intermediate StreamReader buffer, and the kernel's large reads handed on as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, cast, runtime_checkable

# asyncio's write buffer limits: above HIGH the transport asks us to pause, and we wait for it
# to drain below LOW. Large enough that one bulk frame batch fits without waiting.
WRITE_HIGH = 1024 * 1024
WRITE_LOW = 256 * 1024
READ_LIMIT = 1024 * 1024  # received but unread bytes above which we stop reading the socket

_LINGER_ZERO = struct.pack("ii", 1, 0)


def tune(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY on TCP sockets: the tunnel batches writes itself; Nagle would only add delay."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def abort_with_reset(transport: asyncio.BaseTransport) -> None:
    """Close so that the peer sees a TCP reset at once (SO_LINGER 0), not an orderly FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    abort = getattr(transport, "abort", None)
    if abort is not None:
        abort()
    else:
        transport.close()


@runtime_checkable
class PushStream(Protocol):
    """Optional fast path a ByteStream may offer: bytes pushed to a callback as they arrive and
    written without awaiting. The session uses it when present, which saves an event-loop turn
    and a task switch per hop: the difference between a relay near socat's latency and twice it.
    """

    def set_receiver(
        self, on_data: Callable[[bytes], None], on_end: Callable[[BaseException | None], None]
    ) -> None:
        """From now on hand every received chunk to ``on_data``; EOF or loss to ``on_end``."""
        ...

    def write_nowait(self, data: bytes) -> None:
        """Write without waiting (raises ConnectionResetError once the connection is gone)."""
        ...

    @property
    def write_blocked(self) -> bool:
        """The peer is slow: stop producing until ``on_drained`` is called."""
        ...

    @property
    def write_buffer_size(self) -> int: ...

    on_drained: Callable[[], None] | None


class SocketStream(asyncio.Protocol):
    """:class:`kubetunnel.plugins.ByteStream` over one asyncio transport (TCP or TLS), with the
    :class:`PushStream` fast path."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._lost: BaseException | None = None
        self._connection_lost = False
        self._reading_paused = False
        self._write_paused = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed_waiter: asyncio.Future[None] | None = None
        self._on_data: Callable[[bytes], None] | None = None
        self._on_end: Callable[[BaseException | None], None] | None = None
        self.on_drained: Callable[[], None] | None = None

    # --- protocol callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        tune(transport)
        transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        self._closed_waiter = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if self._on_data is not None:
            self._on_data(data)
            return
        self._chunks.append(data)
        self._size += len(data)
        if self._size > READ_LIMIT and not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()
        _wake(self._read_waiter)

    def eof_received(self) -> bool:
        self._eof = True
        if self._on_end is not None:
            self._on_end(None)
        _wake(self._read_waiter)
        return True  # keep our direction open: half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self._connection_lost = True
        self._lost = exc
        if self._on_end is not None and not self._eof:
            self._on_end(exc)
        _wake(self._read_waiter)
        _wake(self._drain_waiter)
        _wake(self._closed_waiter)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        _wake(self._drain_waiter)
        if self.on_drained is not None:
            self.on_drained()

    # --- PushStream -----------------------------------------------------------------------------

    def set_receiver(
        self, on_data: Callable[[bytes], None], on_end: Callable[[BaseException | None], None]
    ) -> None:
        self._on_data, self._on_end = on_data, on_end
        while self._chunks:
            on_data(self._chunks.popleft())
        self._size = 0
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
        if self._eof:
            on_end(None)
        elif self._connection_lost:
            on_end(self._lost)

    def write_nowait(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or self._connection_lost or transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        transport.write(data)

    @property
    def write_blocked(self) -> bool:
        return self._write_paused

    @property
    def write_buffer_size(self) -> int:
        return 0 if self._transport is None else self._transport.get_write_buffer_size()

    # --- ByteStream -----------------------------------------------------------------------------

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while not self._chunks:
            if self._eof:
                return b""
            if self._connection_lost:
                if self._lost is not None:
                    raise ConnectionResetError(str(self._lost) or type(self._lost).__name__)
                return b""
            self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        chunk = self._chunks.popleft()
        if len(chunk) > max_bytes:
            self._chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        self._size -= len(chunk)
        if self._reading_paused and self._size <= READ_LIMIT // 2 and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
        return chunk

    async def send(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or self._connection_lost or transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        transport.write(data)
        while self._write_paused and not self._connection_lost:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None
        if self._connection_lost:
            raise ConnectionResetError("the connection was lost while sending")

    async def send_eof(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
        else:
            # TLS has no half-close; the peer still sees end of stream after our data.
            transport.close()

    async def aclose(self) -> None:
        transport = self._transport
        if transport is None:
            return
        transport.close()
        if self._closed_waiter is not None:
            # close() flushes first; a peer that does not read must not hold us forever.
            try:
                await asyncio.wait_for(asyncio.shield(self._closed_waiter), 2.0)
            except TimeoutError:
                transport.abort()
                await self._closed_waiter

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default if self._transport is None else self._transport.get_extra_info(name, default)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
