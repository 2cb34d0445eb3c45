"""One SPDY/3.1 connection, server side: the peer opens streams, we answer and carry bytes.

Behaves as moby/spdystream, which is what every Kubernetes client and kube-apiserver run on
the other end:

- No flow control. spdystream neither sends WINDOW_UPDATE nor waits for one, so honouring the
  draft's 64 KiB windows would stall every stream; WINDOW_UPDATE and SETTINGS are read and
  ignored. Backpressure is the transport's: a stream holds at most ``BUFFER_LIMIT`` unread
  bytes, and past that the session stops reading the connection until its reader catches up.
- The peer's stream ids must be odd and increasing; another id is refused with RST_STREAM.
- PING with an odd id (the client's) is echoed; data for an unknown stream is dropped.
- GOAWAY, end of input or a malformed frame ends the session; a malformed frame is logged
  with its reason and answered with GOAWAY(PROTOCOL_ERROR).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Protocol

from kubetunnel.logging import get_logger
from modes.sandbox.node.spdy import framing
from modes.sandbox.node.spdy.framing import Frame, Headers, SpdyError

log = get_logger(__name__)

BUFFER_LIMIT = 1 << 20
MAX_DATA_FRAME = 1 << 17
GOAWAY_TIMEOUT = 1.0


class ByteChannel(Protocol):
    """An ordered, reliable byte stream: an upgraded HTTP connection or a websocket's binary
    messages. Message boundaries mean nothing to SPDY."""

    async def read(self) -> bytes:
        """Some bytes; b"" once the peer has finished or the channel broke."""

    async def write(self, data: bytes) -> None:
        """Send, waiting while the transport is full; ConnectionError when it is gone."""

    async def close(self) -> None: ...


class StreamReset(ConnectionResetError):
    """Writing to a stream that was reset or that this side already finished."""


class SpdyStream:
    """A stream the peer opened. ``read`` returns b"" once the peer finished it (FIN or RST)."""

    def __init__(self, session: SpdySession, frame: framing.SynStream) -> None:
        self.session = session
        self.id = frame.stream_id
        self.headers: Headers = frame.headers
        self.reset_by_peer = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._discarding = False
        self._changed = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.remote_done = frame.fin
        self.local_done = False

    def header(self, name: str) -> str:
        return framing.first(self.headers, name)

    async def read(self) -> bytes:
        while not self._chunks and not self.remote_done:
            self._changed.clear()
            await self._changed.wait()
        if not self._chunks:
            return b""
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered < BUFFER_LIMIT:
            self._room.set()
        return chunk

    def discard_input(self) -> None:
        """Nobody will read this stream again: drop what arrives so it cannot stall others."""
        self._discarding = True
        self._chunks.clear()
        self._buffered = 0
        self._room.set()

    async def reply(self) -> None:
        await self.session.send(framing.SynReply(self.id))

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(view), MAX_DATA_FRAME):
            if self.local_done:
                raise StreamReset(f"stream {self.id} is finished")
            chunk = bytes(view[start : start + MAX_DATA_FRAME])
            await self.session.send(framing.Data(self.id, chunk))

    async def close(self) -> None:
        """Finish our half (FIN); the peer may go on sending."""
        if not self.local_done:
            self.local_done = True
            await self.session.send(framing.Data(self.id, b"", fin=True))
            self.session.forget_if_done(self)

    async def reset(self, status: int = framing.CANCEL) -> None:
        if self.local_done and self.remote_done:
            return
        self.local_done = True
        self._end(reset=False)
        self.discard_input()
        await self.session.send(framing.RstStream(self.id, status))
        self.session.forget_if_done(self)

    def _receive(self, data: bytes, fin: bool) -> None:
        if data and not self._discarding and not self.remote_done:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered >= BUFFER_LIMIT:
                self._room.clear()
        if fin:
            self._end(reset=False)
        self._changed.set()

    def _end(self, *, reset: bool) -> None:
        self.remote_done = True
        self.reset_by_peer = self.reset_by_peer or reset
        self._room.set()
        self._changed.set()


class SpdySession:
    """``run()`` reads the connection until it ends; ``accept()`` hands out the peer's streams."""

    def __init__(self, channel: ByteChannel) -> None:
        self.channel = channel
        self._encoder = framing.FrameEncoder()
        self._decoder = framing.FrameDecoder()
        self._write_lock = asyncio.Lock()
        self._streams: dict[int, SpdyStream] = {}
        self._incoming: asyncio.Queue[SpdyStream | None] = asyncio.Queue()
        self._last_id = 0
        self.error: str | None = None
        self.closed = False

    async def accept(self) -> SpdyStream | None:
        """The next stream the peer opened; None once the session has ended."""
        if self.closed and self._incoming.empty():
            return None
        return await self._incoming.get()

    async def send(self, frame: Frame) -> None:
        # Encoding happens under the lock: header compression is one context in wire order.
        async with self._write_lock:
            if self.closed:
                raise StreamReset("the SPDY session has ended")
            await self.channel.write(self._encoder.encode(frame))

    def forget_if_done(self, stream: SpdyStream) -> None:
        if stream.local_done and stream.remote_done:
            self._streams.pop(stream.id, None)

    async def run(self) -> None:
        try:
            while True:
                data = await self.channel.read()
                if not data:
                    return
                for frame in self._decoder.feed(data):
                    if not await self._handle(frame):
                        return
        except SpdyError as exc:
            self.error = str(exc)
            log.warning("spdy.protocol_error", error=self.error)
            with contextlib.suppress(ConnectionError):
                await self.send(framing.GoAway(self._last_id, framing.GOAWAY_PROTOCOL_ERROR))
        except ConnectionError as exc:
            log.debug("spdy.connection_lost", error=str(exc))
        finally:
            self._finish()

    def _finish(self) -> None:
        self.closed = True
        for stream in self._streams.values():
            stream._end(reset=True)
        self._streams.clear()
        self._incoming.put_nowait(None)

    async def close(self) -> None:
        """Say GOAWAY (best effort, as spdystream's Close) and close the channel."""
        if not self.closed:
            # Bounded: a peer that stopped reading must not hold up a stopping node.
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(GOAWAY_TIMEOUT):
                    await self.send(framing.GoAway(self._last_id))
        self._finish()
        with contextlib.suppress(ConnectionError):
            await self.channel.close()

    async def _handle(self, frame: Frame) -> bool:
        """Apply one frame; False when the session should end."""
        match frame:
            case framing.Data(stream_id, data, fin):
                stream = self._streams.get(stream_id)
                if stream is not None:
                    stream._receive(data, fin)
                    self.forget_if_done(stream)
                    await stream._room.wait()
            case framing.SynStream(stream_id):
                if stream_id % 2 == 0 or stream_id <= self._last_id:
                    log.info("spdy.stream_refused", stream=stream_id, last=self._last_id)
                    await self.send(framing.RstStream(stream_id, framing.PROTOCOL_ERROR))
                    return True
                self._last_id = stream_id
                stream = SpdyStream(self, frame)
                self._streams[stream_id] = stream
                self._incoming.put_nowait(stream)
            case framing.RstStream(stream_id):
                stream = self._streams.pop(stream_id, None)
                if stream is not None:
                    stream.local_done = True
                    stream._end(reset=True)
            case framing.HeadersFrame(stream_id, _, fin) | framing.SynReply(stream_id, _, fin):
                stream = self._streams.get(stream_id)
                if stream is not None and fin:
                    stream._receive(b"", True)
                    self.forget_if_done(stream)
            case framing.Ping(ping_id):
                if ping_id % 2 == 1:  # the client's; even ids would answer our own pings
                    await self.send(frame)
            case framing.GoAway():
                return False
            case framing.Settings() | framing.WindowUpdate():
                pass
        return True
