"""The ``loopback`` transport: an in-process byte-stream pair, for tests and embedding.

A listener registers a handler under an address on a hub; ``connect`` to that address hands
the handler one end of a fresh pipe pair and returns the other. The pipes keep the same
guarantees as TCP (order, half-close, back-pressure), so code tested on them behaves the same
on real sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from kubetunnel.errors import KubetunnelError
from kubetunnel.plugins import ByteStream, TransportSettings, TunnelTarget

Handler = Callable[[ByteStream], Coroutine[Any, Any, None]]

DEFAULT_BUFFER = 256 * 1024


class _Pipe:
    """One direction: a bounded buffer, an EOF flag, and wake-ups for both sides."""

    def __init__(self, limit: int) -> None:
        self.buffer = bytearray()
        self.limit = limit
        self.eof = False
        self.broken = False
        self.changed = asyncio.Condition()


class PipeStream:
    """One end of an in-process connection; satisfies :class:`kubetunnel.plugins.ByteStream`."""

    def __init__(self, incoming: _Pipe, outgoing: _Pipe) -> None:
        self._in = incoming
        self._out = outgoing
        self._closed = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        pipe = self._in
        async with pipe.changed:
            await pipe.changed.wait_for(lambda: bool(pipe.buffer) or pipe.eof or pipe.broken)
            if pipe.broken and not pipe.buffer:
                raise ConnectionResetError("loopback stream closed")
            data = bytes(pipe.buffer[:max_bytes])
            del pipe.buffer[:max_bytes]
            pipe.changed.notify_all()
            return data

    async def send(self, data: bytes) -> None:
        pipe = self._out
        view = memoryview(data)
        while view:
            async with pipe.changed:
                await pipe.changed.wait_for(
                    lambda: len(pipe.buffer) < pipe.limit or pipe.broken or pipe.eof
                )
                if pipe.broken or pipe.eof:
                    raise ConnectionResetError("loopback stream is closed for writing")
                room = pipe.limit - len(pipe.buffer)
                pipe.buffer += view[:room]
                view = view[room:]
                pipe.changed.notify_all()

    async def send_eof(self) -> None:
        async with self._out.changed:
            self._out.eof = True
            self._out.changed.notify_all()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for pipe in (self._in, self._out):
            async with pipe.changed:
                if pipe is self._out:
                    pipe.eof = True
                else:
                    pipe.broken = True
                pipe.changed.notify_all()


def pipe_pair(limit: int = DEFAULT_BUFFER) -> tuple[PipeStream, PipeStream]:
    """Two connected ends: what one sends, the other receives."""
    a_to_b, b_to_a = _Pipe(limit), _Pipe(limit)
    return PipeStream(b_to_a, a_to_b), PipeStream(a_to_b, b_to_a)


class LoopbackHub:
    """Addresses -> handlers, for one process. Tests make their own hub or reset the default."""

    def __init__(self) -> None:
        self._listeners: dict[str, Handler] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def listen(self, address: str, handler: Handler) -> None:
        if address in self._listeners:
            raise KubetunnelError(f"loopback address {address!r} is already in use")
        self._listeners[address] = handler

    def unlisten(self, address: str) -> None:
        self._listeners.pop(address, None)

    async def connect(self, address: str, limit: int = DEFAULT_BUFFER) -> PipeStream:
        handler = self._listeners.get(address)
        if handler is None:
            raise KubetunnelError(f"loopback connection to {address!r} refused: nothing listens")
        ours, theirs = pipe_pair(limit)
        task = asyncio.create_task(handler(theirs), name=f"loopback:{address}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return ours

    async def aclose(self) -> None:
        """Stop accepting and wait for the handlers that are still running."""
        self._listeners.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


default_hub = LoopbackHub()


class LoopbackTransport:
    """Transport plugin ``loopback``: ``target.address`` names a listener on the hub.

    ``settings.options["buffer"]`` sets the per-direction buffer in bytes (default 256 KiB).
    """

    def __init__(self, settings: TransportSettings, hub: LoopbackHub | None = None) -> None:
        self._hub = hub if hub is not None else default_hub
        try:
            self._limit = int(settings.options.get("buffer", DEFAULT_BUFFER))
        except ValueError as exc:
            raise KubetunnelError(f"loopback buffer must be a number of bytes: {exc}") from exc
        if self._limit < 1:
            raise KubetunnelError("loopback buffer must be at least 1 byte")

    async def connect(self, target: TunnelTarget) -> ByteStream:
        address = target.address or f"{target.namespace}/{target.pod}:{target.port}"
        return await self._hub.connect(address, self._limit)

    async def aclose(self) -> None:
        return None
