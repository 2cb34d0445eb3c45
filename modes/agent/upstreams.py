"""Connections from the agent's request router to where requests go: the Service's own pods (a
TCP connection to the origin Service) or a developer's local process (a tunnel stream). Both are
driven by callbacks, like the connection relays of :mod:`modes.agent.fronting`, so a request
costs no task switch on its way; and both are kept open between requests (:class:`Pool`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from kubetunnel.tunnel.framing import ErrorCode, Payload
from kubetunnel.tunnel.sockets import abort_with_reset, tune
from kubetunnel.tunnel.streams import Stream

WRITE_HIGH = 256 * 1024
_NOT_DELIVERED = (ErrorCode.CONNECT_FAILED, ErrorCode.REFUSED)
MAX_IDLE = 64
"""Idle connections kept per upstream; a burst beyond it closes the extra ones after use."""


class UpstreamSink(Protocol):
    """Who reads an upstream connection (one request's exchange at a time)."""

    def upstream_data(self, data: Payload) -> None: ...

    def upstream_eof(self) -> None: ...

    def upstream_lost(self, reason: str | None, delivered: bool) -> None:
        """The connection ended (``reason`` None: in order). ``delivered`` False means the peer
        provably never saw a byte we sent (the tunnel's CONNECT_FAILED or REFUSED: the laptop
        could not dial its local process), so the request may be replayed elsewhere."""
        ...

    def upstream_writable(self, writable: bool) -> None:
        """Back-pressure: stop (False) or resume (True) producing for :meth:`Upstream.write`."""
        ...


class Upstream(Protocol):
    """One connection to an upstream, push style: what arrives goes to the bound sink."""

    state: Any
    """Kept with the connection (in the pool too) for its user: the response parser."""

    @property
    def closed(self) -> bool: ...

    def bind(self, sink: UpstreamSink | None) -> None: ...

    def write(self, data: bytes | memoryview) -> None: ...

    def write_eof(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


Dial = Callable[[], Awaitable[Upstream]]
"""Opens a new connection to one upstream; raises ConnectionError (or OSError, TimeoutError) when
it cannot."""


class _Unbound:
    """The sink of an idle connection: anything it hears ends it (an idle HTTP/1.1 connection
    that talks or closes is of no further use)."""

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    def upstream_data(self, data: Payload) -> None:
        self._upstream.abort()

    def upstream_eof(self) -> None:
        self._upstream.close()

    def upstream_lost(self, reason: str | None, delivered: bool) -> None:
        pass

    def upstream_writable(self, writable: bool) -> None:
        pass


class TcpUpstream(asyncio.Protocol):
    """An :class:`Upstream` over a TCP connection (the origin Service)."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self.state: Any = None
        self._unbound = _Unbound(self)
        self._sink: UpstreamSink = self._unbound
        self._lost = False

    @property
    def closed(self) -> bool:
        return self._lost or self._transport is None or self._transport.is_closing()

    def bind(self, sink: UpstreamSink | None) -> None:
        self._sink = sink if sink is not None else self._unbound

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        tune(transport)
        self._transport.set_write_buffer_limits(WRITE_HIGH)

    def data_received(self, data: bytes) -> None:
        self._sink.upstream_data(data)

    def eof_received(self) -> bool:
        self._sink.upstream_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._sink.upstream_lost(None if exc is None else str(exc) or type(exc).__name__, True)

    def pause_writing(self) -> None:
        self._sink.upstream_writable(False)

    def resume_writing(self) -> None:
        self._sink.upstream_writable(True)

    def write(self, data: bytes | memoryview) -> None:
        if not self.closed:
            assert self._transport is not None
            self._transport.write(data)

    def write_eof(self) -> None:
        if not self.closed:
            assert self._transport is not None
            if self._transport.can_write_eof():
                self._transport.write_eof()

    def pause_reading(self) -> None:
        if not self.closed:
            assert self._transport is not None
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.closed:
            assert self._transport is not None
            self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            abort_with_reset(self._transport)


def tcp_dial(host: str, port: int, timeout: float = 5.0) -> Dial:
    async def dial() -> Upstream:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, upstream = await loop.create_connection(TcpUpstream, host, port)
        return upstream

    return dial


class TunnelUpstream:
    """An :class:`Upstream` over a tunnel stream to a developer's local process. Credit goes
    back to the laptop only once the client's socket took the bytes (as in
    :class:`kubetunnel.tunnel.bridging.SocketBridge`), so a slow client slows this stream only."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self.state: Any = None
        self._sink: UpstreamSink = _Unbound(self)
        self._pending = bytearray()  # written without credit yet
        self._eof_pending = False
        self._paused = False
        self._unacked = 0
        stream.on_writable = self._flush
        stream.attach(self)

    @property
    def closed(self) -> bool:
        return self._stream.finished or self._stream.remote_fin

    def bind(self, sink: UpstreamSink | None) -> None:
        self._sink = sink if sink is not None else _Unbound(self)

    # --- Sink of the stream ----------------------------------------------------------------------

    def on_data(self, data: Payload) -> None:
        self._sink.upstream_data(data)
        if self._paused:
            self._unacked += len(data)
        else:
            self._stream.consumed(len(data))

    def on_fin(self) -> None:
        self._sink.upstream_eof()

    def on_reset(self, code: int, reason: str) -> None:
        self._sink.upstream_lost(reason or f"reset ({code})", code not in _NOT_DELIVERED)

    # --- Upstream --------------------------------------------------------------------------------

    def write(self, data: bytes | memoryview) -> None:
        stream = self._stream
        if stream.finished or stream.local_fin:
            return
        if self._pending:
            self._pending += data
            return
        sent = stream.send_nowait(data)
        if sent < len(data):
            self._pending += memoryview(data)[sent:]
            self._sink.upstream_writable(False)

    def _flush(self) -> None:
        stream = self._stream
        if not self._pending or stream.finished:
            return
        # bytes, not a view: the session writes the frame later, and _pending changes.
        sent = stream.send_nowait(bytes(self._pending))
        del self._pending[:sent]
        if not self._pending:
            if self._eof_pending:
                stream.send_eof_nowait()
            self._sink.upstream_writable(True)

    def write_eof(self) -> None:
        if self._pending:
            self._eof_pending = True
        elif not self._stream.finished:
            self._stream.send_eof_nowait()

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        if self._unacked:
            self._stream.consumed(self._unacked)
            self._unacked = 0

    def close(self) -> None:
        stream = self._stream
        if not stream.finished:
            if stream.remote_fin and not self._pending:
                stream.send_eof_nowait()
            else:
                stream.reset(ErrorCode.CANCEL, "closed by the agent's router")

    def abort(self) -> None:
        self._stream.reset(ErrorCode.CANCEL, "aborted by the agent's router")


def tunnel_dial(open_stream: Callable[[], Stream | None]) -> Dial:
    """``open_stream`` opens an inbound stream to one developer's laptop, or returns None when
    that laptop cannot take requests now (no tunnel, local process down, disconnecting)."""

    async def dial() -> Upstream:
        stream = open_stream()
        if stream is None:
            raise ConnectionRefusedError("the local process cannot take requests now")
        return TunnelUpstream(stream)

    return dial


class Pool:
    """Idle keep-alive connections per upstream key (most recently used first out: the warmest
    connection, and the idle tail can time out at the upstream without being picked)."""

    def __init__(self, max_idle: int = MAX_IDLE) -> None:
        self._idle: dict[str, list[Upstream]] = {}
        self._max_idle = max_idle
        self._retired: set[str] = set()

    def take(self, key: str) -> Upstream | None:
        if key in self._retired:
            return None
        idle = self._idle.get(key)
        while idle:
            upstream = idle.pop()
            if not upstream.closed:
                return upstream
        return None

    def give(self, key: str, upstream: Upstream) -> None:
        upstream.bind(None)
        if upstream.closed:
            return
        if key in self._retired:
            upstream.close()
            return
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self._max_idle:
            idle[:] = [u for u in idle if not u.closed]
            if len(idle) >= self._max_idle:
                upstream.close()
                return
        idle.append(upstream)

    def idle(self, key: str) -> int:
        return sum(1 for u in self._idle.get(key, ()) if not u.closed)

    def drop(self, key: str) -> None:
        """Close the idle connections of an upstream that is gone (an intercept removed)."""
        self._retired.discard(key)
        for upstream in self._idle.pop(key, ()):
            upstream.abort()

    def retire(self, key: str) -> None:
        """An upstream that takes no new request for now (a laptop draining or whose local
        process is down): its idle connections close, and connections that finish a request
        close instead of coming back, so nothing of it stays open (a draining CLI waits for
        that). New requests dial, and a refused dial sends them elsewhere."""
        self._retired.add(key)
        for upstream in self._idle.pop(key, ()):
            upstream.close()

    def restore(self, key: str) -> None:
        self._retired.discard(key)

    def upstreams(self) -> list[str]:
        return list(self._idle)

    def close(self) -> None:
        for idle in self._idle.values():
            for upstream in idle:
                upstream.abort()
        self._idle.clear()
