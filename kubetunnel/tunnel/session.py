"""The multiplexed tunnel connection: many streams over one ByteStream, after the handshake.

Reading: a socket transport pushes each read to the session (no task in between); any other
transport is read by one task. Either way a whole read's worth of frames is dispatched in one
loop. Writing is :mod:`kubetunnel.tunnel.writing`. Keepalive is one task per session.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass

from kubetunnel.logging import get_logger
from kubetunnel.plugins import ByteStream
from kubetunnel.tunnel import framing
from kubetunnel.tunnel.framing import (
    FLAG_ACK,
    FLAG_FIN,
    OPEN_INBOUND,
    ErrorCode,
    FrameDecoder,
    FrameType,
    ProtocolError,
)
from kubetunnel.tunnel.streams import Stream
from kubetunnel.tunnel.writing import FrameWriter

log = get_logger(__name__)

_DATA = FrameType.DATA


@dataclass(frozen=True)
class SessionOptions:
    """Tunables; the defaults come from the measurements in docs/protocol.md."""

    window: int = 256 * 1024  # credit we grant per stream
    frame_size: int = 64 * 1024  # largest DATA payload we send
    read_size: int = 256 * 1024  # bytes asked of the transport per read
    high_water: int = 512 * 1024  # queued bytes above which streams wait (fairness, memory)
    max_streams: int = 8192  # streams the peer may have open at once
    ping_interval: float = 5.0
    ping_timeout: float = 15.0  # no frame at all for this long ends the session
    flush_timeout: float = 2.0  # how long a closing session may take to send its last frames
    # Queued bytes at which the peer counts as no longer reading at all (it ends the session).
    # Data cannot get near it (credit and high_water stop streams first); control frames that
    # answer a flood of pings could.
    max_backlog: int = 32 * 1024 * 1024


OpenHandler = Callable[[Stream], None]
StatusHandler = Callable[[bool, str], None]


class Session:
    """One side of a tunnel connection. ``initiator`` is the CLI (odd stream ids).

    Run it with ``await session.run()``, which returns the reason it ended; ``aclose`` or
    ``goaway`` from anywhere end it. Streams of an ended session are reset (SESSION_CLOSED).
    """

    def __init__(
        self, transport: ByteStream, *, initiator: bool, peer_window: int,
        options: SessionOptions | None = None, on_open: OpenHandler | None = None,
        on_status: StatusHandler | None = None, leftover: bytes = b"", name: str = "session",
    ) -> None:
        self.options = options or SessionOptions()
        self._transport = transport
        self._initiator = initiator
        self._peer_window = peer_window
        self._on_open = on_open
        self._on_status = on_status
        self._leftover = leftover
        self.name = name
        self.streams: dict[int, Stream] = {}
        # Payload bytes carried each way, for status displays (one add per frame).
        self.bytes_sent = 0
        self.bytes_received = 0
        self._ids = itertools.count(1 if initiator else 2, 2)
        self._last_local_id = 0
        self._last_peer_id = 0
        self._blocked: dict[Stream, None] = {}  # ordered set: first blocked, first woken
        self._closed = asyncio.Event()
        self.close_reason = ""
        self.close_error = False
        self.goaway_sent = False
        self.goaway_received = False
        self._loop = asyncio.get_running_loop()
        self._last_recv = self._loop.time()
        self._pings: dict[bytes, asyncio.Future[float]] = {}
        self._ping_ids = itertools.count(1)
        self._decoder = FrameDecoder()
        self._writer = FrameWriter(transport, self.options.high_water, self._lost_writing)
        self._push = self._writer.push  # sockets: the push path, no reader task

    # --- public -------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def writable(self) -> bool:
        return self._writer.writable and not self._closed.is_set()

    def open_stream(self, kind: int, destination: int | str) -> Stream:
        """Open a stream at once (its data may follow before the peer has seen the OPEN)."""
        if self._closed.is_set():
            raise ConnectionResetError(f"the tunnel is closed: {self.close_reason}")
        if self.goaway_sent or self.goaway_received:
            raise ConnectionRefusedError("the tunnel is shutting down (GOAWAY)")
        stream_id = next(self._ids)
        self._last_local_id = stream_id
        stream = Stream(self, stream_id, self._peer_window, self.options.window, kind, destination)
        self.streams[stream_id] = stream
        if kind == OPEN_INBOUND:
            assert isinstance(destination, int)
            self._queue(framing.encode_open_inbound(stream_id, destination))
        else:
            self._queue(framing.encode_open_outbound(stream_id, str(destination)))
        return stream

    def send_status(self, answering: bool, reason: str) -> None:
        """CLI -> agent: whether the local process answers on its ports."""
        if not self._closed.is_set():
            self._queue(framing.encode_status(answering, reason))

    async def ping(self) -> float:
        """Round-trip time of one PING, in seconds."""
        opaque = next(self._ping_ids).to_bytes(8, "big")
        waiter: asyncio.Future[float] = self._loop.create_future()
        self._pings[opaque] = waiter
        self._queue(framing.encode(FrameType.PING, 0, 0, opaque))
        started = self._loop.time()
        try:
            await waiter
        finally:
            self._pings.pop(opaque, None)
        return self._loop.time() - started

    def goaway(self, reason: str = "shutting down") -> None:
        """Open no more streams and refuse the peer's new ones; end once open streams finish."""
        if self.goaway_sent or self._closed.is_set():
            return
        self.goaway_sent = True
        self._queue(framing.encode_goaway(self._last_peer_id, ErrorCode.NO_ERROR, reason))
        log.info("session.goaway", session=self.name, reason=reason, streams=len(self.streams))
        if not self.streams:
            self._close(reason)

    async def aclose(self, reason: str = "closed") -> None:
        """End now; the peer is told why (GOAWAY) and open streams are reset."""
        if not self._closed.is_set():
            self._queue(framing.encode_goaway(self._last_peer_id, ErrorCode.NO_ERROR, reason))
        self._close(reason)

    async def wait_closed(self) -> str:
        await self._closed.wait()
        return self.close_reason

    async def run(self) -> str:
        """Carry frames until the session ends; return why. Cleans up everything it started."""
        tasks = [asyncio.create_task(self._keepalive(), name=f"{self.name}:keepalive")]
        writer = None
        if self._push is not None:
            self._push.on_drained = self._wake_blocked
            if self._leftover:
                self._on_chunk(self._leftover)
            self._push.set_receiver(self._on_chunk, self._on_end)
        else:
            self._writer.on_flushed = self._wake_blocked
            tasks.append(asyncio.create_task(self._read_loop(), name=f"{self.name}:read"))
            writer = asyncio.create_task(self._writer.run(), name=f"{self.name}:write")
        try:
            await self._closed.wait()
        finally:
            self._close("cancelled")
            for task in tasks:
                task.cancel()
            if writer is not None:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(writer), self.options.flush_timeout)
                writer.cancel()
                tasks.append(writer)
            with contextlib.suppress(ConnectionError, OSError):
                await self._transport.aclose()
            await asyncio.gather(*tasks, return_exceptions=True)
        return self.close_reason

    # --- used by streams ----------------------------------------------------------------------

    def _queue(self, frame: bytes) -> None:
        self._writer.queue(frame)
        if self._writer.backlog > self.options.max_backlog:
            self._close("the peer stopped reading from the tunnel", error=True)

    def _send_data(self, stream_id: int, data: framing.Payload) -> None:
        self.bytes_sent += len(data)
        self._writer.queue_data(stream_id, data, self.options.frame_size)

    def _lost_writing(self, reason: str) -> None:
        self._close(reason, error=True)

    def _send_fin(self, stream_id: int) -> None:
        self._queue(framing.header(_DATA, FLAG_FIN, stream_id, 0))

    def _send_reset(self, stream_id: int, code: int, reason: str) -> None:
        if not self._closed.is_set():
            self._queue(framing.encode_reset(stream_id, code, reason))

    def _send_window(self, stream_id: int, increment: int) -> None:
        if not self._closed.is_set():
            self._queue(framing.encode_window(stream_id, increment))

    def _want_writable(self, stream: Stream) -> None:
        self._blocked[stream] = None

    def _forget(self, stream: Stream) -> None:
        self.streams.pop(stream.id, None)
        self._blocked.pop(stream, None)
        if not self.streams and (self.goaway_sent or self.goaway_received):
            self._close("shut down gracefully (GOAWAY)")

    # --- the loops ----------------------------------------------------------------------------

    def _on_chunk(self, chunk: bytes) -> None:
        """Push mode: one read's worth of frames, dispatched with writes corked so that every
        frame they cause (window updates, pongs) leaves in one write."""
        self._last_recv = self._loop.time()
        self._writer.corked = True
        try:
            self._feed(chunk)
        finally:
            self._writer.uncork()

    def _on_end(self, exc: BaseException | None) -> None:
        if exc is None:
            self._close("the peer closed the tunnel connection", error=True)
        else:
            self._close(f"tunnel connection lost: {exc}", error=True)

    def _feed(self, chunk: bytes) -> None:
        try:
            self._dispatch(self._decoder.feed(chunk))
        except ProtocolError as exc:
            log.warning("session.protocol_error", session=self.name, error=str(exc))
            self._queue(framing.encode_goaway(self._last_peer_id, exc.code, str(exc)))
            self._close(f"protocol error: {exc}", error=True)
        except Exception as exc:  # a bug must end the session visibly, never hang it
            log.exception("session.internal_error", session=self.name)
            self._close(f"internal error: {type(exc).__name__}: {exc}", error=True)

    def _wake_blocked(self) -> None:
        blocked, self._blocked = self._blocked, {}
        for stream in blocked:
            if not stream.finished:
                stream._notify_writable()

    async def _read_loop(self) -> None:
        receive = self._transport.receive
        read_size = self.options.read_size
        if self._leftover:
            self._feed(self._leftover)
        while not self._closed.is_set():
            try:
                chunk = await receive(read_size)
            except (ConnectionError, OSError) as exc:
                self._close(f"tunnel connection lost: {exc or type(exc).__name__}", error=True)
                return
            if not chunk:
                self._close("the peer closed the tunnel connection", error=True)
                return
            self._last_recv = self._loop.time()
            self._feed(chunk)

    def _dispatch(self, frames: list[framing.Frame]) -> None:
        streams = self.streams
        for ftype, flags, stream_id, payload in frames:
            if ftype == _DATA:
                self.bytes_received += len(payload)
                stream = streams.get(stream_id)
                if stream is not None:
                    stream._on_data(payload, bool(flags & FLAG_FIN))
                else:
                    self._check_stale(stream_id, "DATA")
            elif ftype == FrameType.WINDOW:
                increment = framing.parse_window(payload)
                stream = streams.get(stream_id)
                if stream is not None:
                    stream._on_window(increment)
                else:
                    self._check_stale(stream_id, "WINDOW")
            elif ftype == FrameType.OPEN:
                self._on_open_frame(stream_id, payload)
            elif ftype == FrameType.RESET:
                code, reason = framing.parse_reset(payload)
                stream = streams.get(stream_id)
                if stream is not None:
                    stream._on_reset(code, reason)
                else:
                    self._check_stale(stream_id, "RESET")
            elif ftype == FrameType.PING:
                self._on_ping(flags, payload)
            elif ftype == FrameType.GOAWAY:
                self._on_goaway(payload)
                if self._closed.is_set():
                    return
            elif ftype == FrameType.STATUS:
                answering, reason = framing.parse_status(payload)
                if self._initiator or self._on_status is None:
                    raise ProtocolError("STATUS frames go from the CLI to the agent only")
                self._on_status(answering, reason)
            else:
                raise ProtocolError(f"frame type {FrameType(ftype).name} after the handshake")

    def _check_stale(self, stream_id: int, what: str) -> None:
        # Frames for a stream that ended are normal (they crossed our RESET on the wire); frames
        # for a stream that never existed are a broken peer.
        ours = (stream_id & 1) == (1 if self._initiator else 0)
        last = self._last_local_id if ours else self._last_peer_id
        if stream_id == 0 or stream_id > last:
            raise ProtocolError(f"{what} for stream {stream_id}, which was never opened")

    def _on_open_frame(self, stream_id: int, payload: framing.Payload) -> None:
        kind, destination = framing.parse_open(payload)
        peer_parity = 0 if self._initiator else 1
        if stream_id & 1 != peer_parity or stream_id <= self._last_peer_id:
            raise ProtocolError(f"OPEN with invalid stream id {stream_id}")
        self._last_peer_id = stream_id
        refuse = ""
        if self.goaway_sent or self._closed.is_set():
            refuse = "the tunnel is shutting down"
        elif len(self.streams) >= self.options.max_streams:
            refuse = f"too many streams (limit {self.options.max_streams})"
        elif self._on_open is None:
            refuse = "this side accepts no streams"
        if refuse:
            self._queue(framing.encode_reset(stream_id, ErrorCode.REFUSED, refuse))
            return
        stream = Stream(self, stream_id, self._peer_window, self.options.window, kind, destination)
        self.streams[stream_id] = stream
        assert self._on_open is not None
        self._on_open(stream)

    def _on_ping(self, flags: int, payload: framing.Payload) -> None:
        if len(payload) != 8:
            raise ProtocolError("PING payload must be 8 bytes")
        if flags & FLAG_ACK:
            waiter = self._pings.get(bytes(payload))
            if waiter is not None and not waiter.done():
                waiter.set_result(0.0)
        else:
            self._queue(framing.encode(FrameType.PING, FLAG_ACK, 0, bytes(payload)))

    def _on_goaway(self, payload: framing.Payload) -> None:
        last, code, reason = framing.parse_goaway(payload)
        self.goaway_received = True
        log.info("session.goaway_received", session=self.name, code=code, reason=reason)
        if code != ErrorCode.NO_ERROR:
            self._close(f"the peer ended the session: {reason}", error=True)
            return
        for stream in list(self.streams.values()):
            ours = (stream.id & 1) == (1 if self._initiator else 0)
            if ours and stream.id > last:
                stream._on_reset(ErrorCode.REFUSED, "the peer is shutting down")
        if not self.streams:
            self._close(f"the peer shut down: {reason}")

    async def _keepalive(self) -> None:
        interval, timeout = self.options.ping_interval, self.options.ping_timeout
        while not self._closed.is_set():
            await asyncio.sleep(min(interval, timeout / 2))
            idle = self._loop.time() - self._last_recv
            if idle >= timeout:
                self._close(f"keepalive timeout: nothing from the peer for {idle:.1f}s", error=True)
                return
            if idle >= interval:
                self._queue(framing.encode(FrameType.PING, 0, 0, b"\0" * 8))

    def _close(self, reason: str, error: bool = False) -> None:
        if self._closed.is_set():
            return
        self.close_reason, self.close_error = reason, error
        self._closed.set()
        if error:
            log.warning("session.closed", session=self.name, reason=reason)
        else:
            log.info("session.closed", session=self.name, reason=reason)
        for stream in list(self.streams.values()):
            stream._on_reset(ErrorCode.SESSION_CLOSED, reason)
        self.streams.clear()
        self._blocked.clear()
        for waiter in self._pings.values():
            if not waiter.done():
                waiter.set_exception(ConnectionResetError(reason))
        self._writer.stop()
