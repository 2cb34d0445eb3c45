"""Kubernetes port-forward (``portforward.k8s.io``) over one SPDY session, as kubelet serves it.

For every local connection the client opens two streams with the same ``requestid`` header:
``streamtype: error`` first, then ``streamtype: data``, both with the remote ``port``. Once a
pair is complete the pod's port is dialled and bytes are copied between it and the data
stream. When the pod closes its side, the data and error streams are finished (FIN); a failure
is written to the error stream as text and both streams are reset. A stream with a missing or
bad header is refused with RST_STREAM, as kubelet's stream handler rejects it. A client
without request ids (before Kubernetes 1.4) is paired by stream id, as kubelet does.

Nothing here knows about HTTP: ``serve`` takes a byte channel and a ``dial`` callable, so the
sandbox's API server and a kubelet endpoint can both put it behind their own upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from kubetunnel.logging import get_logger
from modes.sandbox.node.spdy.sessions import ByteChannel, SpdySession, SpdyStream

log = get_logger(__name__)

PROTOCOL = "portforward.k8s.io"
STREAM_CREATION_TIMEOUT = 30.0  # kubelet's default for the second stream of a pair
CHUNK = 128 * 1024

Dial = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


class DialError(Exception):
    """The pod's port could not be reached; the message goes to the client's error stream."""


def check_headers(stream: SpdyStream) -> str | None:
    """Why kubelet would refuse this stream, or None."""
    port = stream.header("port")
    if not port:
        return '"port" header is required'
    if not port.isdigit() or int(port) > 65535:
        return f'unable to parse "{port}" as a port'
    if int(port) < 1:
        return f'port "{port}" must be > 0'
    kind = stream.header("streamtype")
    if not kind:
        return '"streamType" header is required'
    if kind not in ("error", "data"):
        return f'invalid stream type "{kind}"'
    return None


def request_id(stream: SpdyStream) -> str:
    found = stream.header("requestid")
    if found:
        return found
    # Old clients: the error stream is opened just before the data stream.
    return str(stream.id if stream.header("streamtype") == "error" else stream.id - 2)


@dataclass
class _Pair:
    request: str
    error: SpdyStream | None = None
    data: SpdyStream | None = None
    expiry: asyncio.Task[None] | None = None


class PortForwarder:
    """The streams of one session, paired and forwarded."""

    def __init__(self, session: SpdySession, dial: Dial, pod: str) -> None:
        self.session = session
        self.dial = dial
        self.pod = pod
        self.pairs: dict[str, _Pair] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def run(self) -> None:
        while (stream := await self.session.accept()) is not None:
            problem = check_headers(stream)
            if problem is not None:
                log.info(
                    "portforward.stream_refused", pod=self.pod, stream=stream.id, error=problem
                )
                await stream.reset()
                continue
            await stream.reply()
            await self._add(stream)

    async def _add(self, stream: SpdyStream) -> None:
        request = request_id(stream)
        pair = self.pairs.get(request)
        if pair is None:
            pair = self.pairs[request] = _Pair(request)
            pair.expiry = self._spawn(self._expire(pair), f"portforward-expiry-{request}")
        kind = stream.header("streamtype")
        if getattr(pair, kind) is not None:
            message = (
                f"error processing stream for request {request}: "
                f"{kind} stream already assigned"
            )
            log.info("portforward.stream_duplicate", pod=self.pod, request=request, kind=kind)
            await stream.reset()
            if pair.error is not None:
                with contextlib.suppress(ConnectionError):
                    await pair.error.write(message.encode())
            return
        setattr(pair, kind, stream)
        if pair.error is not None:
            pair.error.discard_input()  # clients only ever finish it
        if pair.error is not None and pair.data is not None:
            del self.pairs[request]
            if pair.expiry is not None:
                pair.expiry.cancel()
            self._spawn(self._forward(pair.error, pair.data), f"portforward-{self.pod}-{request}")

    async def _expire(self, pair: _Pair) -> None:
        await asyncio.sleep(STREAM_CREATION_TIMEOUT)
        if self.pairs.get(pair.request) is not pair:
            return
        del self.pairs[pair.request]
        log.info("portforward.pair_timeout", pod=self.pod, request=pair.request)
        with contextlib.suppress(ConnectionError):
            if pair.error is not None:
                message = f"timed out waiting for streams of request {pair.request}"
                await pair.error.write(message.encode())
            for stream in (pair.error, pair.data):
                if stream is not None:
                    await stream.reset()

    async def _forward(self, error: SpdyStream, data: SpdyStream) -> None:
        port = int(data.header("port"))
        try:
            reader, writer = await self.dial(port)
        except DialError as exc:
            with contextlib.suppress(ConnectionError):
                await error.write(str(exc).encode())
                await data.reset()
                await error.reset()
            return
        upstream = asyncio.create_task(self._upstream(data, writer), name=f"portforward-up-{port}")
        try:
            with contextlib.suppress(ConnectionError):
                while chunk := await reader.read(CHUNK):
                    await data.write(chunk)
        finally:
            upstream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await upstream
            writer.close()
            data.discard_input()
            with contextlib.suppress(ConnectionError):
                await data.close()
                await error.close()

    @staticmethod
    async def _upstream(data: SpdyStream, writer: asyncio.StreamWriter) -> None:
        """Client bytes to the pod; the client's FIN half-closes the pod connection, a reset
        closes it (which ends the copy the other way too)."""
        try:
            while chunk := await data.read():
                writer.write(chunk)
                await writer.drain()
            if data.reset_by_peer:
                writer.close()
            elif writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            data.discard_input()  # the pod is gone; its reader sees that and finishes
            writer.close()


async def serve(channel: ByteChannel, dial: Dial, pod: str) -> None:
    """Forward until the client ends the connection; then close every pod connection."""
    session = SpdySession(channel)
    forwarder = PortForwarder(session, dial, pod)
    reading = asyncio.create_task(session.run(), name=f"spdy-{pod}")
    try:
        await forwarder.run()
    finally:
        for task in forwarder.tasks:
            task.cancel()
        await asyncio.gather(*forwarder.tasks, return_exceptions=True)
        await session.close()  # GOAWAY first if it is this side that ends the session
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
