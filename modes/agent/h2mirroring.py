"""Mirror copies of h2c streams: taken from the client's connection as they arrive, sent to the
mirror's local process as HTTP/2 requests on an h2c connection the mirror keeps.

Cluster side, :class:`H2Copies` (one per client connection of :mod:`modes.agent.h2c`) gathers a
matching stream's headers, DATA and trailers, and hands the finished request to each mirror
(:meth:`modes.agent.mirroring.Mirror.offer_h2`), which queues it as it queues HTTP/1.x copies;
past :data:`modes.agent.mirroring.COPY_LIMIT` the copy is dropped and counted.

Mirror side, :class:`H2Sender` sends one copy at a time (the mirror's worker awaits each) and
reads its answer to the end, throwing it away but acknowledging every DATA frame at once, so a
local process that answers with large bodies never stalls the connection's windows. The
connection stays open between copies; a failed copy (timeout, reset, protocol error) aborts it,
and the next copy dials again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import h2.events
import h2.exceptions

from kubetunnel.tunnel.framing import Payload
from modes.agent.h2peers import ERRORS, Headers, Peer
from modes.agent.upstreams import Upstream

_REFUSED = 0x7


@dataclass
class H2Request:
    """A whole request stream, as the client sent it."""

    headers: Headers
    body: bytearray = field(default_factory=bytearray)
    trailers: Headers | None = None
    size: int = 0  # header and trailer bytes too: what COPY_LIMIT is checked against


class CopyTaker(Protocol):
    """What :class:`H2Copies` needs of a mirror (:class:`modes.agent.mirroring.Mirror`)."""

    def offer_h2(self, request: H2Request) -> None: ...

    def drop(self) -> None: ...


class H2Copies:
    """The copies being gathered on one client connection, by client stream id."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open: dict[int, tuple[H2Request, tuple[CopyTaker, ...]]] = {}

    def __bool__(self) -> bool:
        return bool(self._open)

    def start(self, sid: int, headers: Headers, mirrors: tuple[CopyTaker, ...]) -> None:
        request = H2Request(headers, size=sum(len(n) + len(v) for n, v in headers))
        self._open[sid] = (request, mirrors)
        self._check(sid, request, mirrors)

    def feed(self, event: h2.events.Event) -> None:
        """Every event of the client's connection: those of a stream being copied are kept."""
        sid = getattr(event, "stream_id", 0)
        entry = self._open.get(sid) if sid else None
        if entry is None:
            return
        request, mirrors = entry
        if isinstance(event, h2.events.DataReceived):
            request.body += event.data or b""
            request.size += len(event.data or b"")
            self._check(sid, request, mirrors)
        elif isinstance(event, h2.events.TrailersReceived):
            request.trailers = list(event.headers or ())
            request.size += sum(len(n) + len(v) for n, v in request.trailers)
            self._check(sid, request, mirrors)
        elif isinstance(event, h2.events.StreamEnded):
            del self._open[sid]
            for mirror in mirrors:
                mirror.offer_h2(request)
        elif isinstance(event, h2.events.StreamReset):
            del self._open[sid]  # the client gave up: nothing was asked, nothing to copy

    def _check(self, sid: int, request: H2Request, mirrors: tuple[CopyTaker, ...]) -> None:
        if request.size > self._limit:
            del self._open[sid]
            for mirror in mirrors:
                mirror.drop()

    def clear(self) -> None:
        self._open.clear()


class H2Sender:
    """The h2c connection of one mirror to its local process (none while idle after a failure)."""

    def __init__(self, dial: Callable[[], Awaitable[Upstream]], timeout: float) -> None:
        self._dial = dial
        self._timeout = timeout
        self._link: _Link | None = None

    async def send(self, request: H2Request) -> None:
        """Returns once the local process answered the copy to its end; raises ConnectionError
        (or TimeoutError, OSError) when it could not."""
        link = self._link
        if link is None or link.closed:
            self._link = None
            async with asyncio.timeout(self._timeout):
                upstream = await self._dial()
            link = self._link = _Link(upstream)
        try:
            async with asyncio.timeout(self._timeout):
                await link.send(request)
        except BaseException:
            self.close()
            raise
        if link.closed:
            self.close()

    def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.abort()


class _Link:
    """One h2c connection (an UpstreamSink) carrying one copy at a time."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.peer = Peer(True, upstream.write)
        self.closed = False
        self._sid = 0
        self._done: asyncio.Future[None] | None = None
        upstream.bind(self)
        self.peer.flush()

    def send(self, request: H2Request) -> asyncio.Future[None]:
        done = self._done = asyncio.get_running_loop().create_future()
        conn, peer = self.peer.conn, self.peer
        try:
            sid = self._sid = conn.get_next_available_stream_id()
            more = bool(request.body) or request.trailers is not None
            conn.send_headers(sid, request.headers, end_stream=not more)
            if request.body:
                peer.send(sid, bytes(request.body), end=request.trailers is None)
            if request.trailers is not None:
                peer.send(sid, request.trailers)
        except h2.exceptions.H2Error as exc:  # e.g. stream ids used up: a new connection
            self.closed = True
            raise ConnectionResetError(f"HTTP/2: {exc!r}") from exc
        peer.flush()
        return done

    def abort(self) -> None:
        self.closed = True
        self.upstream.bind(None)
        self.upstream.abort()

    def _end(self, error: BaseException | None) -> None:
        done = self._done
        if done is not None and not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

    # --- UpstreamSink ---------------------------------------------------------------------

    def upstream_data(self, data: Payload) -> None:
        conn = self.peer.conn
        try:
            events = conn.receive_data(bytes(data))
        except h2.exceptions.ProtocolError as exc:
            self.closed = True
            self._end(ConnectionResetError(f"HTTP/2 error from the local process: {exc}"))
            return
        for event in events:
            sid = getattr(event, "stream_id", 0)
            if isinstance(event, h2.events.DataReceived):
                if event.flow_controlled_length:  # thrown away, so taken at once
                    with contextlib.suppress(*ERRORS):
                        conn.acknowledge_received_data(event.flow_controlled_length, sid)
            elif isinstance(event, h2.events.WindowUpdated):
                self.peer.window_opened(sid or 0)
            elif isinstance(event, h2.events.PushedStreamReceived):
                with contextlib.suppress(*ERRORS):
                    conn.reset_stream(event.pushed_stream_id or 0, _REFUSED)
            elif isinstance(event, h2.events.StreamEnded) and sid == self._sid:
                self._end(None)
            elif isinstance(event, h2.events.StreamReset) and sid == self._sid:
                self._end(ConnectionResetError(f"the local process reset the copy's stream "
                                               f"({event.error_code})"))
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.closed = True  # GOAWAY: no new streams; one it did not take fails now
                if (event.last_stream_id or 0) < self._sid:
                    self._end(ConnectionResetError("the local process sent GOAWAY"))
        self.peer.flush()

    def upstream_eof(self) -> None:
        self.upstream_lost("the local process closed the connection", True)
        self.upstream.close()

    def upstream_lost(self, reason: str | None, delivered: bool) -> None:
        self.closed = True
        self._end(ConnectionResetError(reason or "connection closed"))

    def upstream_writable(self, writable: bool) -> None:
        pass  # HTTP/2 flow control bounds what we write
