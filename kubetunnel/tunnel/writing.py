"""The outgoing half of a session: frames from every stream leave in as few writes as possible.

Two ways to write, chosen by what the transport offers:

- a :class:`kubetunnel.tunnel.sockets.PushStream` (a real socket) is written synchronously, at the
  end of whatever callback queued the frames: no task switch and no extra event-loop turn, which
  is most of a relay hop's latency. While a read from the tunnel is being dispatched the writer is
  *corked*, so every frame that read causes (window updates, pongs) leaves in one write;
- any other ByteStream is written by a task that, each time it wakes, sends everything queued
  since the last time in one ``send``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from kubetunnel.plugins import ByteStream
from kubetunnel.tunnel import framing
from kubetunnel.tunnel.sockets import PushStream

_DATA = framing.FrameType.DATA
_EMPTY = b""


class FrameWriter:
    """Queues frames and writes them out; ``on_error`` gets a reason if the transport fails."""

    def __init__(
        self, transport: ByteStream, high_water: int, on_error: Callable[[str], None]
    ) -> None:
        self._transport = transport
        self.push = transport if isinstance(transport, PushStream) else None
        self._high_water = high_water
        self._on_error = on_error
        self._parts: list[framing.Payload] = []
        self._size = 0  # queued, not yet handed to the transport
        self._wake: asyncio.Future[None] | None = None
        self._stopping = False
        self.corked = False
        self.on_flushed: Callable[[], None] | None = None  # the task path made room

    @property
    def writable(self) -> bool:
        """Whether streams may queue more data now (the fairness and memory limit)."""
        if self.push is not None:
            return not self.push.write_blocked
        return self._size < self._high_water

    @property
    def backlog(self) -> int:
        """Bytes written by us and not yet taken by the peer, as far as we can tell."""
        return self._size + (self.push.write_buffer_size if self.push is not None else 0)

    def queue(self, frame: bytes) -> None:
        self._parts.append(frame)
        self._size += len(frame)
        self.kick()

    def queue_data(self, stream_id: int, data: framing.Payload, frame_size: int) -> None:
        size = len(data)
        parts = self._parts
        for start in range(0, size, frame_size):
            chunk = data if size <= frame_size else data[start:start + frame_size]
            parts.append(framing.header(_DATA, 0, stream_id, len(chunk)))
            parts.append(chunk)
            self._size += len(chunk) + framing.HEADER_SIZE
        self.kick()

    def kick(self) -> None:
        if self.push is not None:
            if not self.corked:
                self.flush_now()
            return
        waiter = self._wake
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def uncork(self) -> None:
        self.corked = False
        self.kick()

    def flush_now(self) -> None:
        """Push path: hand everything queued to the socket in one write."""
        parts, push = self._parts, self.push
        if not parts or push is None:
            return
        blob = parts[0] if len(parts) == 1 else _EMPTY.join(parts)
        self._parts = []
        self._size = 0
        try:
            push.write_nowait(blob if isinstance(blob, bytes) else bytes(blob))
        except (ConnectionError, OSError) as exc:
            self._on_error(f"tunnel connection lost while writing: {exc}")

    def stop(self) -> None:
        """Write what is queued, then end :meth:`run` (the session is closing)."""
        self._stopping = True
        self.kick()

    async def run(self) -> None:
        """Task path: write until stopped and empty."""
        send = self._transport.send
        loop = asyncio.get_running_loop()
        while True:
            if not self._parts:
                if self._stopping:
                    return
                self._wake = loop.create_future()
                await self._wake
                continue
            parts, self._parts = self._parts, []
            self._size = 0
            blob = parts[0] if len(parts) == 1 else _EMPTY.join(parts)
            if self.on_flushed is not None:
                self.on_flushed()  # double buffering: streams refill while this one is sent
            try:
                await send(blob if isinstance(blob, bytes) else bytes(blob))
            except (ConnectionError, OSError) as exc:
                self._on_error(f"tunnel connection lost while writing: {exc}")
                return
