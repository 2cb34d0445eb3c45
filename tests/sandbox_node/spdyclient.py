"""A SPDY client for tests: an in-memory byte channel and a recorder of what the server sent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from modes.sandbox.node.spdy import framing
from modes.sandbox.node.spdy.framing import FrameDecoder, FrameEncoder


class MemoryChannel:
    """One end of an in-memory byte pipe; b"" in the inbox is the peer's end."""

    def __init__(self, inbox: asyncio.Queue[bytes], outbox: asyncio.Queue[bytes]) -> None:
        self.inbox = inbox
        self.outbox = outbox
        self.closed = False
        self.reads = 0
        self._read = asyncio.Condition()

    async def read(self) -> bytes:
        data = await self.inbox.get()
        async with self._read:
            self.reads += 1
            self._read.notify_all()
        return data

    async def wait_reads(self, count: int, timeout: float = 10.0) -> None:
        """Until ``count`` reads have returned; the timeout only bounds a hang."""
        async with asyncio.timeout(timeout), self._read:
            await self._read.wait_for(lambda: self.reads >= count)

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("channel closed")
        self.outbox.put_nowait(data)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(b"")


def channel_pair() -> tuple[MemoryChannel, MemoryChannel]:
    a: asyncio.Queue[bytes] = asyncio.Queue()
    b: asyncio.Queue[bytes] = asyncio.Queue()
    return MemoryChannel(a, b), MemoryChannel(b, a)


@dataclass
class Seen:
    """Everything the server sent on one stream."""

    replied: bool = False
    data: bytearray = field(default_factory=bytearray)
    fin: bool = False
    reset: int | None = None


class SpdyClient:
    """Sends frames, and records the server's frames per stream as they arrive."""

    def __init__(self, channel: MemoryChannel) -> None:
        self.channel = channel
        self.encoder = FrameEncoder()
        self.decoder = FrameDecoder()
        self.streams: dict[int, Seen] = {}
        self.others: list[framing.Frame] = []
        self.ended = False
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._read(), name="test-spdy-client")

    async def _read(self) -> None:
        while data := await self.channel.read():
            for frame in self.decoder.feed(data):
                seen = self.streams.setdefault(getattr(frame, "stream_id", 0), Seen())
                match frame:
                    case framing.SynReply():
                        seen.replied = True
                    case framing.Data(_, payload, fin):
                        seen.data += payload
                        seen.fin = seen.fin or fin
                    case framing.RstStream(_, status):
                        seen.reset = status
                    case _:
                        self.others.append(frame)
                async with self._changed:
                    self._changed.notify_all()
        self.ended = True
        async with self._changed:
            self._changed.notify_all()

    async def wait(self, check: Callable[[], object], timeout: float = 10.0) -> None:
        """Until ``check()`` holds; the timeout only bounds a hang."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(check)

    def seen(self, stream_id: int) -> Seen:
        return self.streams.setdefault(stream_id, Seen())

    async def send(self, *frames: framing.Frame) -> None:
        for frame in frames:
            await self.channel.write(self.encoder.encode(frame))

    async def open(self, stream_id: int, kind: str, port: int = 8080,
                   request: str | None = "0", fin: bool = False) -> None:
        headers = {"streamtype": [kind], "port": [str(port)]}
        if request is not None:
            headers["requestid"] = [request]
        await self.send(framing.SynStream(stream_id, headers, fin=fin))

    async def aclose(self) -> None:
        await self.channel.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
