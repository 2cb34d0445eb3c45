"""Copies of requests for a mirror intercept: sent to the developer's local process in the
background, answers read and thrown away. HTTP/1.x copies go over kept-alive connections from the
router's pool; h2c streams (:mod:`modes.agent.h2mirroring`) over one h2c connection per mirror.

A mirror must never slow or change the real path: the router hands over a finished copy with
:meth:`Mirror.offer`, which never waits; copies wait in a bounded queue, and when it is full (a
slow or dead local process) the copy is dropped and counted. One worker per mirror sends them one
at a time over a kept-alive connection; it ends when the queue is empty, so an idle mirror holds
no task.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from kubetunnel.logging import get_logger
from kubetunnel.tunnel.framing import Payload
from modes.agent.h2mirroring import H2Request, H2Sender
from modes.agent.responses import ResponseError, ResponseTracker
from modes.agent.upstreams import Dial, Pool, Upstream

log = get_logger(__name__)

QUEUE = 256
"""Copies waiting per mirror; more are dropped."""
COPY_LIMIT = 1024 * 1024
"""A request larger than this (head and body) is not copied: dropped and counted."""


@dataclass
class MirrorStats:
    mirrored: int = 0  # copies the local process answered (any status)
    dropped: int = 0  # the queue was full, or the request too large to copy
    failed: int = 0  # the local process could not be reached, or did not answer in time


class Mirror:
    """The copy queue of one mirror intercept on one port."""

    def __init__(self, key: str, dial: Dial, pool: Pool,
                 spawn: Callable[[Coroutine[Any, Any, None]], None],
                 queue: int = QUEUE, timeout: float = 10.0) -> None:
        self.key = key
        self.stats = MirrorStats()
        self._dial = dial
        self._pool = pool
        self._spawn = spawn
        self._queue: deque[tuple[bytes, bool] | H2Request] = deque()
        self._limit = queue
        self._timeout = timeout
        self._working = False
        self._h2 = H2Sender(dial, timeout)
        self._closed = False

    def offer(self, request: bytes, head_only: bool) -> None:
        """Queue one complete request (as sent upstream); never waits."""
        self._enqueue((request, head_only))

    def offer_h2(self, request: H2Request) -> None:
        """Queue one complete h2c request stream; never waits."""
        self._enqueue(request)

    def _enqueue(self, copy: tuple[bytes, bool] | H2Request) -> None:
        if len(self._queue) >= self._limit:
            self.stats.dropped += 1
            return
        self._queue.append(copy)
        if not self._working:
            self._working = True
            self._spawn(self._work())

    def drop(self) -> None:
        """A copy the router gave up on (too large)."""
        self.stats.dropped += 1

    @property
    def pending(self) -> int:
        """Copies offered and not yet answered (queued, or the one being sent)."""
        return len(self._queue) + self._working

    def close(self) -> None:
        """The mirror is gone (or the router stops): its h2c connection is closed (its HTTP/1
        connections idle in the router's pool)."""
        self._closed = True
        self._h2.close()

    async def _work(self) -> None:
        try:
            while self._queue:
                copy = self._queue.popleft()
                try:
                    if isinstance(copy, H2Request):
                        await self._h2.send(copy)
                    else:
                        await self._send(*copy)
                    self.stats.mirrored += 1
                except (ConnectionError, OSError, TimeoutError, ResponseError) as exc:
                    self.stats.failed += 1
                    log.debug("mirror.failed", mirror=self.key,
                              error=str(exc) or type(exc).__name__)
        finally:
            self._working = False
            if self._closed:  # copies queued before the close went out on a new connection
                self._h2.close()

    async def _send(self, request: bytes, head_only: bool) -> None:
        upstream = self._pool.take(self.key)
        if upstream is None:
            async with asyncio.timeout(self._timeout):
                upstream = await self._dial()
        reader = _Discard(upstream, head_only)
        upstream.bind(reader)
        upstream.write(request)
        try:
            async with asyncio.timeout(self._timeout):
                keep_alive = await reader.done
        except BaseException:
            upstream.abort()
            raise
        if keep_alive:
            self._pool.give(self.key, upstream)
        else:
            upstream.close()


class _Discard:
    """Reads one response to its end and forgets it."""

    def __init__(self, upstream: Upstream, head_only: bool) -> None:
        self._upstream = upstream
        self._tracker = ResponseTracker()
        self._tracker.expect(head_only)
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def upstream_data(self, data: Payload) -> None:
        if self.done.done():
            return
        try:
            self._tracker.feed(data)
        except ResponseError as exc:
            self.done.set_exception(exc)
            return
        if self._tracker.done:
            self.done.set_result(self._tracker.keep_alive)

    def upstream_eof(self) -> None:
        if not self.done.done():
            if self._tracker.started:  # a body that ends at the close
                self.done.set_result(False)
            else:
                self.done.set_exception(ConnectionResetError("closed without an answer"))
        self._upstream.close()

    def upstream_lost(self, reason: str | None, delivered: bool) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionResetError(reason or "connection closed"))

    def upstream_writable(self, writable: bool) -> None:
        pass
