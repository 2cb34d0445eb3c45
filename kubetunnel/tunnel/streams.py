"""One stream inside a session: its state machine and its two credit windows.

A stream is a full-duplex byte stream like a TCP connection: each direction ends with FIN (half-
close) independently, and either side may RESET it at any time. The receiving side grants the
sender credit (a window of bytes); the sender never has more unacknowledged bytes in flight than
that, so a reader that stops reading stalls only its own stream and the memory a stream can take
is bounded by its window.

Two ways to use a stream: the coroutine methods of :class:`kubetunnel.plugins.ByteStream`
(``receive``/``send``/``send_eof``/``aclose``), or, for relaying to a socket without a task per
stream, a *sink* that gets data pushed to it plus the non-blocking ``send_nowait``.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable
from typing import Protocol

from kubetunnel.tunnel.framing import ErrorCode, Payload, ProtocolError

MAX_WINDOW = (1 << 31) - 1


class StreamState(enum.Enum):
    OPEN = "open"
    HALF_CLOSED_LOCAL = "half-closed-local"  # we sent FIN; we may still receive
    HALF_CLOSED_REMOTE = "half-closed-remote"  # we received FIN; we may still send
    CLOSED = "closed"  # both FINs
    RESET = "reset"  # either side reset it, or the session ended under it


class Sink(Protocol):
    """Where a relaying stream pushes what arrives. The sink calls ``stream.consumed(n)`` once it
    has really passed ``n`` bytes on, which is what returns credit to the sender."""

    def on_data(self, data: Payload) -> None: ...

    def on_fin(self) -> None: ...

    def on_reset(self, code: int, reason: str) -> None: ...


class StreamOwner(Protocol):
    """What a stream needs from its session (``kubetunnel.tunnel.session.Session``), stated
    here so that the session builds on streams and not the other way round."""

    @property
    def writable(self) -> bool: ...

    def _send_data(self, stream_id: int, data: Payload) -> None: ...

    def _send_fin(self, stream_id: int) -> None: ...

    def _send_reset(self, stream_id: int, code: int, reason: str) -> None: ...

    def _send_window(self, stream_id: int, increment: int) -> None: ...

    def _want_writable(self, stream: Stream) -> None: ...

    def _forget(self, stream: Stream) -> None: ...


class Stream:
    """One multiplexed stream; created by :class:`kubetunnel.tunnel.session.Session` only."""

    def __init__(
        self, session: StreamOwner, stream_id: int, send_window: int, recv_window: int,
        kind: int, destination: int | str,
    ) -> None:
        self._session = session
        self.id = stream_id
        self.kind = kind
        self.destination = destination  # the agent port (inbound) or "host:port" (outbound)
        self.send_credit = send_window
        self.recv_credit = recv_window  # what the peer may still send before we grant more
        self._window = recv_window
        self._unacked = 0
        self.local_fin = False
        self.remote_fin = False
        self.reset_code: int | None = None
        self.reset_reason = ""
        self._buffer: deque[Payload] = deque()
        self._buffered = 0
        self._sink: Sink | None = None
        self._recv_waiter: asyncio.Future[None] | None = None
        self._send_waiter: asyncio.Future[None] | None = None
        self.on_writable: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"<Stream {self.id} {self.state.value} credit={self.send_credit}>"

    @property
    def state(self) -> StreamState:
        if self.reset_code is not None:
            return StreamState.RESET
        if self.local_fin and self.remote_fin:
            return StreamState.CLOSED
        if self.local_fin:
            return StreamState.HALF_CLOSED_LOCAL
        if self.remote_fin:
            return StreamState.HALF_CLOSED_REMOTE
        return StreamState.OPEN

    @property
    def finished(self) -> bool:
        """No frame will ever be sent or accepted for this stream again."""
        return self.reset_code is not None or (self.local_fin and self.remote_fin)

    # --- events from the peer, called by the session ---------------------------------------

    def _on_data(self, data: Payload, fin: bool) -> None:
        if self.remote_fin:
            raise ProtocolError(f"DATA on stream {self.id} after its FIN")
        size = len(data)
        if size > self.recv_credit:
            raise ProtocolError(
                f"stream {self.id} sent {size} bytes with {self.recv_credit} of credit",
                ErrorCode.FLOW_CONTROL,
            )
        self.recv_credit -= size
        if fin:
            self.remote_fin = True
        if self._sink is not None:
            if size:
                self._sink.on_data(data)
            if fin:
                self._sink.on_fin()
        else:
            if size:
                self._buffer.append(data)
                self._buffered += size
            _wake(self._recv_waiter)
        if fin:
            self._maybe_forget()

    def _on_window(self, increment: int) -> None:
        self.send_credit += increment
        if self.send_credit > MAX_WINDOW:
            raise ProtocolError(f"stream {self.id} window grew past 2^31-1", ErrorCode.FLOW_CONTROL)
        self._notify_writable()

    def _on_reset(self, code: int, reason: str) -> None:
        if self.reset_code is not None:
            return
        self.reset_code, self.reset_reason = code, reason
        self._buffer.clear()
        self._buffered = 0
        if self._sink is not None:
            self._sink.on_reset(code, reason)
        _wake(self._recv_waiter)
        self._notify_writable()
        self._session._forget(self)

    def _notify_writable(self) -> None:
        _wake(self._send_waiter)
        if self.on_writable is not None:
            self.on_writable()

    # --- the relaying interface -------------------------------------------------------------

    def attach(self, sink: Sink) -> None:
        """Push everything received (already buffered, then new) to ``sink``."""
        self._sink = sink
        while self._buffer:
            chunk = self._buffer.popleft()
            sink.on_data(chunk)
        self._buffered = 0
        if self.reset_code is not None:
            sink.on_reset(self.reset_code, self.reset_reason)
        elif self.remote_fin:
            sink.on_fin()

    def consumed(self, size: int) -> None:
        """``size`` received bytes have left our hands: grant the sender that much more credit."""
        if self.remote_fin or self.reset_code is not None or size <= 0:
            return
        self._unacked += size
        if self._unacked >= self._window >> 2:
            self.recv_credit += self._unacked
            self._session._send_window(self.id, self._unacked)
            self._unacked = 0

    def send_nowait(self, data: Payload) -> int:
        """Queue as much of ``data`` as credit and the session's buffer allow; return how much.

        When it returns less than ``len(data)``, ``on_writable`` (or a waiting ``send``) is called
        once more can go.
        """
        self._check_sendable()
        size = min(len(data), self.send_credit)
        session = self._session
        if not size or not session.writable:
            session._want_writable(self)
            return 0
        self.send_credit -= size
        session._send_data(self.id, data if size == len(data) else memoryview(data)[:size])
        if size < len(data):
            session._want_writable(self)
        return size

    def send_eof_nowait(self) -> None:
        """Half-close our direction: the peer reads what was sent, then end of stream."""
        if self.local_fin or self.reset_code is not None:
            return
        self.local_fin = True
        self._session._send_fin(self.id)
        self._maybe_forget()

    def reset(self, code: int = ErrorCode.CANCEL, reason: str = "") -> None:
        """Abort both directions at once and tell the peer; idempotent."""
        if self.finished:
            return
        self._session._send_reset(self.id, code, reason)
        self._on_reset(code, reason)

    def _check_sendable(self) -> None:
        if self.reset_code is not None:
            raise ConnectionResetError(
                f"stream {self.id} was reset: {self.reset_reason or self.reset_code}"
            )
        if self.local_fin:
            raise BrokenPipeError(f"stream {self.id} is closed for sending")

    def _maybe_forget(self) -> None:
        if self.local_fin and self.remote_fin:
            self._session._forget(self)

    # --- the ByteStream interface -------------------------------------------------------------

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while not self._buffer:
            if self.reset_code is not None:
                raise ConnectionResetError(
                    f"stream {self.id} was reset: {self.reset_reason or self.reset_code}"
                )
            if self.remote_fin:
                return b""
            self._recv_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._recv_waiter
            finally:
                self._recv_waiter = None
        chunk = self._buffer.popleft()
        if len(chunk) > max_bytes:
            self._buffer.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        self._buffered -= len(chunk)
        self.consumed(len(chunk))
        return bytes(chunk)

    async def send(self, data: bytes) -> None:
        # Copy anything mutable: the frame is written later, after the caller may change it.
        view = memoryview(data if isinstance(data, bytes) else bytes(data))
        while view:
            sent = self.send_nowait(view)
            view = view[sent:]
            if view:
                self._send_waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._send_waiter
                finally:
                    self._send_waiter = None

    async def send_eof(self) -> None:
        self._check_sendable()
        self.send_eof_nowait()

    async def aclose(self) -> None:
        """Graceful when only our direction was still open (FIN), otherwise a reset (CANCEL):
        like a TCP close, a peer that might still send must learn that nobody will read."""
        if self.finished:
            return
        if self.remote_fin and not self._buffer:
            self.send_eof_nowait()
        else:
            self.reset(ErrorCode.CANCEL, "closed by the application")


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
