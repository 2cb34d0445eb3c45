"""HTTP/2 cleartext with prior knowledge (as gRPC uses) on a filtered port: routed per stream.

The client's connection is terminated here (the ``h2`` library, server side); each request
stream is routed by its headers (``:path``; ``host`` is the ``:authority``) and opened on an
HTTP/2 connection to its upstream (``h2``, client side), one per upstream and client connection,
made when first needed. HEADERS, DATA, trailers and RST_STREAM are relayed both ways; flow
control is end to end: received DATA is acknowledged to its sender only once the other side's
window took it, so a slow reader slows its own stream.

A laptop that cannot be reached (its dial fails, or the tunnel says its local dial failed before
it said anything) sends its streams to the origin with what they sent so far. A stream that
matches mirror intercepts is also copied as it arrives (:mod:`modes.agent.h2mirroring`) and, once
the client ended it, queued for each mirror; the stream itself never waits on a copy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from kubetunnel.logging import get_logger
from kubetunnel.tunnel.framing import Payload
from kubetunnel.tunnel.sockets import abort_with_reset, tune
from modes.agent.h2mirroring import H2Copies
from modes.agent.h2peers import ERRORS as _ERRORS
from modes.agent.h2peers import Headers, Peer
from modes.agent.mirroring import COPY_LIMIT
from modes.agent.routing import Router, Target
from modes.agent.upstreams import Upstream

log = get_logger(__name__)

_REFUSED, _CANCEL = 0x7, 0x8


class RoutedStream:
    """A client's request stream and where it went."""

    def __init__(self, sid: int, headers: Headers, target: Target) -> None:
        self.sid = sid
        self.headers = headers
        self.target = target
        self.up: Any = None  # the h2c module's upstream connection, once chosen
        self.up_sid = 0
        self.ops: list[tuple[Any, Callable[[], None] | None, bool]] = []  # sent, for a replay
        self.answered = False
        self.trailers = False  # the client sent trailers (they ended the stream)


class _UpstreamConnection:
    """An HTTP/2 connection to one upstream, for one client connection (an UpstreamSink)."""

    def __init__(self, owner: H2cConnection, target: Target) -> None:
        self.owner = owner
        self.target = target
        self.upstream: Upstream | None = None
        self.peer = Peer(True, self._write)
        self.streams: dict[int, RoutedStream] = {}  # by upstream stream id
        self.waiting: list[RoutedStream] = []  # until connected
        self.heard = False  # the upstream said something: no replay elsewhere after that

    def _write(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.write(data)

    def open(self, stream: RoutedStream) -> None:
        stream.up = self
        if self.upstream is None:
            self.waiting.append(stream)
            return
        sid = self.peer.conn.get_next_available_stream_id()
        stream.up_sid = sid
        self.streams[sid] = stream
        self.peer.conn.send_headers(sid, stream.headers)
        ops, stream.ops = stream.ops, []
        for data, ack, end in ops:
            self.relay(stream, data, ack, end)
        self.peer.flush()

    def relay(self, stream: RoutedStream, data: Any, ack: Callable[[], None] | None,
              end: bool) -> None:
        """The client's DATA (or trailers, or end) for ``stream``; ``ack`` returns the client's
        credit once the upstream's window took it."""
        if not stream.up_sid:  # not open yet: kept, and the client's credit with it
            stream.ops.append((data, ack, end))
            return
        if not self.heard:  # kept for a replay elsewhere until the upstream says anything
            stream.ops.append((data, None, end))
        self.peer.send(stream.up_sid, data, ack, end)
        self.peer.flush()

    def connected(self, upstream: Upstream) -> None:
        self.upstream = upstream
        upstream.bind(self)
        self.peer.flush()
        waiting, self.waiting = self.waiting, []
        for stream in waiting:
            self.open(stream)

    # --- UpstreamSink ---------------------------------------------------------------------

    def upstream_data(self, data: Payload) -> None:
        if not self.heard:
            self.heard = True
            for stream in self.streams.values():
                stream.ops.clear()
        owner = self.owner
        try:
            events = self.peer.conn.receive_data(bytes(data))
        except h2.exceptions.ProtocolError as exc:
            self.upstream_lost(f"HTTP/2 error: {exc}", True)
            return
        for event in events:
            sid = getattr(event, "stream_id", 0) or 0
            back = self.streams.get(sid)
            if isinstance(event, h2.events.WindowUpdated):
                self.peer.window_opened(event.stream_id)
            elif back is None:
                if isinstance(event, h2.events.DataReceived):  # for a stream we let go
                    self._acker(sid, event.flow_controlled_length or 0)()
            else:
                try:
                    self._relay_back(back, event)
                except _ERRORS:  # the client reset its stream meanwhile
                    self._forget(back)
        if any(isinstance(e, h2.events.ConnectionTerminated) for e in events):
            self.upstream_lost("the upstream sent GOAWAY", True)
            return
        self.peer.flush()
        owner.down.flush()

    def _relay_back(self, stream: RoutedStream, event: h2.events.Event) -> None:
        down = self.owner.down
        if isinstance(event, h2.events.ResponseReceived | h2.events.InformationalResponseReceived):
            stream.answered = True
            down.conn.send_headers(stream.sid, event.headers)
        elif isinstance(event, h2.events.DataReceived):
            size = event.flow_controlled_length
            down.send(stream.sid, event.data, self._acker(stream.up_sid, size or 0))
        elif isinstance(event, h2.events.TrailersReceived):
            down.send(stream.sid, list(event.headers), end=True)
            self._forget(stream)
        elif isinstance(event, h2.events.StreamEnded):
            down.send(stream.sid, b"", end=True)
            self._forget(stream)
        elif isinstance(event, h2.events.StreamReset):
            down.reset(stream.sid, event.error_code or 0)
            self._forget(stream)

    def _acker(self, sid: int, size: int) -> Callable[[], None]:
        def ack() -> None:
            with contextlib.suppress(*_ERRORS):
                self.peer.conn.acknowledge_received_data(size, sid)
            self.peer.flush()

        return ack

    def _forget(self, stream: RoutedStream) -> None:
        self.streams.pop(stream.up_sid, None)
        self.owner.streams.pop(stream.sid, None)

    def upstream_eof(self) -> None:
        self.upstream_lost("the upstream closed", True)

    def upstream_lost(self, reason: str | None, delivered: bool) -> None:
        self.owner.lost(self, reason or "closed", delivered)

    def upstream_writable(self, writable: bool) -> None:
        pass  # HTTP/2 flow control bounds what we write


class H2cConnection(asyncio.Protocol):
    """Handed the client's connection by :class:`modes.agent.h1.H1Connection` on the preface."""

    def __init__(self, router: Router, port: int) -> None:
        self.router = router
        self._port = port
        self._transport: asyncio.Transport | None = None
        self.down = Peer(False, self._write)
        self.streams: dict[int, RoutedStream] = {}
        self._ups: dict[str, _UpstreamConnection] = {}
        self._copies = H2Copies(COPY_LIMIT)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        tune(transport)
        self.down.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.down.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.info("router.h2_error", port=self._port, error=str(exc))
            self.down.flush()
            self._close(abort=True)
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self._request(event.stream_id, event.headers)
                continue
            if isinstance(event, h2.events.WindowUpdated):
                self.down.window_opened(event.stream_id)
                continue
            if isinstance(event, h2.events.ConnectionTerminated):
                self._close(abort=False)
                return
            if self._copies:
                self._copies.feed(event)
            sid = getattr(event, "stream_id", 0) or 0
            stream = self.streams.get(sid)
            if stream is None or stream.up is None:
                if isinstance(event, h2.events.DataReceived):  # a stream already answered
                    self._acker(sid, event.flow_controlled_length or 0)()
                continue
            up = stream.up
            if isinstance(event, h2.events.DataReceived):
                up.relay(stream, event.data, self._acker(stream.sid, event.flow_controlled_length),
                         False)
            elif isinstance(event, h2.events.TrailersReceived):
                stream.trailers = True
                up.relay(stream, list(event.headers), None, True)
            elif isinstance(event, h2.events.StreamEnded):
                # After trailers (which ended it), a second end would make h2 close the upstream
                # stream under its answer: a protocol error on the whole connection.
                if not stream.trailers:
                    up.relay(stream, b"", None, True)
            elif isinstance(event, h2.events.StreamReset):
                self.streams.pop(stream.sid, None)
                if stream.up_sid:
                    up.streams.pop(stream.up_sid, None)
                    up.peer.reset(stream.up_sid, event.error_code)
                    up.peer.flush()
        self.down.flush()

    def _acker(self, sid: int, size: int) -> Callable[[], None]:
        def ack() -> None:
            with contextlib.suppress(*_ERRORS):
                self.down.conn.acknowledge_received_data(size, sid)
            self.down.flush()

        return ack

    def _request(self, sid: int, headers: Headers) -> None:
        wanted: dict[str, str] = {}
        names, path = self.router.header_names, b""
        for name, value in headers:
            if name == b":path":
                path = value
            key = b"host" if name == b":authority" else name
            if key in names:
                text = value.decode("latin-1")
                k = key.decode("latin-1")
                wanted[k] = f"{wanted[k]}, {text}" if k in wanted else text
        query = path.find(b"?")
        route = self.router.choose((path if query < 0 else path[:query]).decode("latin-1"),
                                   wanted)
        if route.target is None:
            self.router.counters.reset += 1
            self.down.reset(sid, _REFUSED)
            return
        if route.mirrors:
            self._copies.start(sid, headers, route.mirrors)
        stream = RoutedStream(sid, headers, route.target)
        self.streams[sid] = stream
        self._upstream(route.target).open(stream)

    def _upstream(self, target: Target) -> _UpstreamConnection:
        up = self._ups.get(target.key)
        if up is None:
            up = self._ups[target.key] = _UpstreamConnection(self, target)
            self.router.spawn(self._dial(up))
        return up

    async def _dial(self, up: _UpstreamConnection) -> None:
        try:
            upstream = await up.target.dial()
        except (ConnectionError, OSError, TimeoutError) as exc:
            self.lost(up, f"cannot reach {up.target.key}: {exc!r}", False)
            return
        if self._transport is None or self._transport.is_closing():
            upstream.close()
            return
        up.connected(upstream)

    def lost(self, up: _UpstreamConnection, reason: str, delivered: bool) -> None:
        """An upstream connection failed: its streams go to the fallback if nothing reached the
        upstream, else they are reset."""
        if self._ups.get(up.target.key) is up:
            del self._ups[up.target.key]
        streams = [*up.streams.values(), *up.waiting]
        up.streams.clear()
        up.waiting.clear()
        if up.upstream is not None:
            up.upstream.bind(None)
            up.upstream.abort()
        fallback = up.target.fallback
        for stream in streams:
            if not delivered and not stream.answered and fallback is not None:
                self.router.counters.fell_back(up.target.intercept)
                stream.target, stream.up, stream.up_sid = fallback, None, 0
                self._upstream(fallback).open(stream)
            else:
                self.router.counters.reset += 1
                self.streams.pop(stream.sid, None)
                self.down.reset(stream.sid, _CANCEL)
        log.info("router.h2_upstream_lost", target=up.target.key, reason=reason,
                 streams=len(streams))
        self.down.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        for up in list(self._ups.values()):
            if up.upstream is not None:
                up.upstream.bind(None)
                up.upstream.close()
        self._ups.clear()
        self.streams.clear()
        self._copies.clear()

    def eof_received(self) -> bool:
        self._close(abort=False)
        return False

    def _close(self, abort: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if abort:
            abort_with_reset(transport)
        else:
            transport.close()
