"""A client connection on a filtered port: HTTP/1.x requests routed one by one.

The connection's bytes go through llhttp (httptools); each request, once its head is parsed, is
routed (:meth:`modes.agent.routing.Router.choose`) and becomes an
:class:`~modes.agent.exchanges.Exchange` with its own upstream connection from the pool.

- **Order.** Responses go back in request order: pipelined requests are taken one at a time, the
  next one sent when the previous response has ended (as nginx does), so a response never waits
  in memory for an earlier one from another upstream. Request bytes that arrive meanwhile wait,
  bounded: above :data:`QUEUE_LIMIT` the client is not read.
- **Streaming.** Bodies (Content-Length or chunked) and responses flow as they arrive, with
  back-pressure both ways; nothing is buffered whole.
- **Upgrade and CONNECT.** The request goes to its upstream on a connection of its own, and from
  then on the bytes flow raw both ways (WebSocket, h2c upgrade, tunnels).
- **Not HTTP.** When the first bytes are not an HTTP/1.x request (a TLS ClientHello, another
  protocol), the connection is relayed raw to the origin with those bytes replayed
  (:class:`modes.agent.fronting.FrontConnection`); the HTTP/2 preface (prior knowledge, as gRPC
  uses) hands it to :mod:`modes.agent.h2c`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import cast

import httptools

from kubetunnel.logging import get_logger
from kubetunnel.tunnel.framing import Payload
from kubetunnel.tunnel.sockets import abort_with_reset, tune
from modes.agent.exchanges import QUEUE_LIMIT, Exchange
from modes.agent.fronting import REPLAY_LIMIT, FrontConnection
from modes.agent.h2c import H2cConnection
from modes.agent.mirroring import COPY_LIMIT, Mirror
from modes.agent.routing import Router, request_path

log = get_logger(__name__)

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_HEAD = 64 * 1024
WRITE_HIGH = 256 * 1024


class _HeadTooLarge(Exception):
    pass


class H1Connection(asyncio.Protocol):
    """The protocol of every connection accepted on a filtered port."""

    def __init__(self, router: Router, port: int) -> None:
        self.router = router
        self._port = port
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[Exchange] = deque()
        self._first: bytearray | None = bytearray()  # until the first head: for a raw relay
        self._sniffed = False
        self._raw: Exchange | None = None  # upgraded: every further byte goes there
        self._current: Exchange | None = None  # the request being parsed
        self._url = b""
        self._lines: list[bytes] = []  # the head's header lines, as they will be sent
        self._wanted: dict[str, str] = {}  # the headers filters look at: name -> joined values
        self._head_size = 0
        self._names: frozenset[bytes] = frozenset()
        self._chunked = False
        self._trailers: list[bytes] = []
        self._copy: bytearray | None = None
        self._mirrors: tuple[Mirror, ...] = ()
        self._client_eof = False
        self._closing = False
        self._write_paused = False
        self._upstream_blocked = False
        self._read_paused = False

    # --- the client socket ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        tune(transport)
        self._transport.set_write_buffer_limits(WRITE_HIGH)

    def data_received(self, data: bytes) -> None:
        if self._raw is not None:
            self._raw.send(data)
            return
        if self._closing:
            return
        first = self._first
        if first is not None:
            first += data
            if not self._sniffed:
                if len(first) < len(H2_PREFACE) and H2_PREFACE.startswith(first):
                    return  # maybe the HTTP/2 preface: wait for the rest
                self._sniffed = True
                if first.startswith(H2_PREFACE):
                    self._hand_over(H2cConnection(self.router, self._port))
                    return
                data = bytes(first)
            if len(first) > REPLAY_LIMIT:
                self._first = None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            rest = memoryview(data)[int(upgrade.args[0]):]
            if self._raw is not None and rest:
                self._raw.send(bytes(rest))
        except (httptools.HttpParserError, _HeadTooLarge) as exc:
            if self._first is not None and self.router.raw_front is not None:
                self.router.counters.raw += 1
                self._hand_over(FrontConnection(self.router.raw_front, self._port))
                return
            self.router.counters.bad_requests += 1
            log.info("router.bad_request", port=self._port, error=str(exc) or type(exc).__name__)
            self._abort()
        else:
            self._update_reading()

    def _hand_over(self, protocol: asyncio.Protocol) -> None:
        transport = self._transport
        assert transport is not None
        assert self._first is not None
        data, self._first = bytes(self._first), None
        self._closing = True
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if not transport.is_closing():
            protocol.data_received(data)
            if self._client_eof:
                protocol.eof_received()

    def eof_received(self) -> bool:
        self._client_eof = True
        if self._raw is not None:
            self._raw.client_eof()
            return True
        current = self._current
        if current is not None and not current.request_done:
            current.client_eof()
        if not self._queue:
            self._close()
        return True  # answer what was asked before closing

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        while self._queue:
            exchange = self._queue.popleft()
            exchange.abort()
            self._mirror(exchange)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._queue and self._queue[0].upstream is not None:
            self._queue[0].upstream.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._queue and self._queue[0].upstream is not None:
            self._queue[0].upstream.resume_reading()

    # --- llhttp callbacks -------------------------------------------------------------------

    # These run for every header of every request: kept to the bare minimum of Python calls.

    def on_message_begin(self) -> None:
        self._url, self._lines, self._wanted, self._head_size = b"", [], {}, 0
        self._chunked, self._trailers, self._current = False, [], None
        self._names = self.router.header_names

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_HEAD:
            raise _HeadTooLarge("request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD:
            raise _HeadTooLarge("request head too large")
        if self._current is not None:
            self._trailers.append(name + b": " + value + b"\r\n")
            return
        self._lines += (name, b": ", value, b"\r\n")
        lower = name.lower()
        if lower in self._names:  # a header some filter looks at
            key, text = lower.decode("latin-1"), value.decode("latin-1")
            wanted = self._wanted
            wanted[key] = f"{wanted[key]}, {text}" if key in wanted else text

    def on_headers_complete(self) -> None:
        self._first = None
        if self._closing:
            return
        parser, url = self._parser, self._url
        method = parser.get_method()
        self._lines.append(b"\r\n")
        head = b"%b %b HTTP/%b\r\n%b" % (method, url, parser.get_http_version().encode(),
                                         b"".join(self._lines))
        route = self.router.choose(request_path(url), self._wanted)
        upgrade = parser.should_upgrade()
        exchange = Exchange(self, method, head, route.target, parser.should_keep_alive(), upgrade)
        self._current = exchange
        self._mirrors = () if upgrade else route.mirrors
        self._copy = bytearray(head) if self._mirrors else None
        self._queue.append(exchange)
        if len(self._queue) == 1:
            exchange.activate()

    def on_chunk_header(self) -> None:
        self._chunked = True

    def on_body(self, body: bytes) -> None:
        exchange = self._current
        if exchange is None:
            return
        data = b"%x\r\n%b\r\n" % (len(body), body) if self._chunked else body
        exchange.send(data)
        copy = self._copy
        if copy is not None:
            if len(copy) + len(data) > COPY_LIMIT:
                self._copy = None
                for mirror in self._mirrors:
                    mirror.drop()
            else:
                copy += data

    def on_message_complete(self) -> None:
        exchange = self._current
        if exchange is None:
            return
        if exchange.upgrade:
            self._raw = exchange  # the rest of this connection is the upgraded protocol's
            return
        if self._chunked:
            exchange.send(b"0\r\n" + b"".join(self._trailers) + b"\r\n")
        if self._copy is not None:
            # Sent once the response has gone back: the copy never delays the real answer.
            exchange.copy = (bytes(self._copy), self._mirrors)
            self._copy = None
        self._current = None
        exchange.request_complete()

    # --- the exchanges' side (exchanges.Client) ---------------------------------------------

    @property
    def client_paused(self) -> bool:
        return self._write_paused

    def client_write(self, data: Payload) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def client_write_eof(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()

    def attached(self) -> None:
        self._update_reading()

    @staticmethod
    def _mirror(exchange: Exchange) -> None:
        if exchange.copy is not None:
            copy, mirrors = exchange.copy
            exchange.copy = None
            for mirror in mirrors:
                mirror.offer(copy, exchange.method == b"HEAD")

    def exchange_done(self, exchange: Exchange, keep_alive: bool) -> None:
        self._mirror(exchange)
        if self._queue and self._queue[0] is exchange:
            self._queue.popleft()
        if exchange.upgrade:
            self._raw = None
        self._upstream_blocked = False
        if not keep_alive:
            self._close()
            return
        if self._queue:
            self._queue[0].activate()
        elif self._client_eof:
            self._close()
        self._update_reading()

    def exchange_failed(self, exchange: Exchange, reason: str) -> None:
        self._mirror(exchange)
        self.router.counters.reset += 1
        log.info("router.request_failed", port=self._port, reason=reason)
        self._abort()

    def upstream_writable(self, writable: bool) -> None:
        self._upstream_blocked = not writable
        self._update_reading()

    def _update_reading(self) -> None:
        queue = self._queue
        if not (self._read_paused or self._upstream_blocked or len(queue) > 1
                or (queue and queue[0].upstream is None)):
            return  # the usual case, checked first: nothing waits, nothing to change
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        waiting = sum(e.out_size for e in queue if e.upstream is None)
        pause = self._upstream_blocked or waiting > QUEUE_LIMIT
        if pause != self._read_paused:
            self._read_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def _close(self) -> None:
        """In order: what was written reaches the client, then FIN."""
        self._closing = True
        while self._queue:
            exchange = self._queue.popleft()
            exchange.abort()
            self._mirror(exchange)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def _abort(self) -> None:
        self._closing = True
        while self._queue:
            exchange = self._queue.popleft()
            exchange.abort()
            self._mirror(exchange)
        if self._transport is not None and not self._transport.is_closing():
            abort_with_reset(self._transport)
