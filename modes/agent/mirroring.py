"""Copies of requests for a mirror intercept: sent to the developer's local process in the
background, answers read and thrown away. HTTP/1.x copies go over kept-alive connections from the
router's pool; h2c streams (:mod:`modes.agent.h2mirroring`) over one h2c connection per mirror.

A mirror must never slow or change the real path: the router hands over a finished copy with
:meth:`Mirror.offer`, which never waits; copies wait in a bounded queue, and when it is full (a
slow or dead local process) the copy is dropped and counted. One worker per mirror sends them over
a kept-alive connection; it ends when the queue is empty, so an idle mirror holds no task.

HTTP/1.x copies that queued while the previous answer was awaited, or within
:data:`MIRROR_LINGER` of the first, go out together, pipelined in one write, and their answers are
read in order (RFC 9112 lets a client pipeline; a server answers
in order). Under load, when copies arrive faster than the laptop answers, that is one tunnel
write and one read per batch instead of per request, which is most of a copy's cost in the agent.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import httptools

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
BATCH = 32
"""HTTP/1.x copies pipelined in one write at most (and no more than COPY_LIMIT bytes)."""
MIRROR_LINGER = 0.010
"""Seconds a copy waits for others to go with it: a copy is a look at traffic, not an answer
anyone waits for, and a few milliseconds make a batch of the next requests under load."""


@dataclass
class MirrorStats:
    mirrored: int = 0  # copies the local process answered (any status)
    dropped: int = 0  # the queue was full, or the request too large to copy
    failed: int = 0  # the local process could not be reached, or did not answer in time


class Mirror:
    """The copy queue of one mirror intercept on one port."""

    def __init__(self, key: str, dial: Dial, pool: Pool,
                 spawn: Callable[[Coroutine[Any, Any, None]], None],
                 queue: int = QUEUE, timeout: float = 10.0,
                 linger: float = MIRROR_LINGER) -> None:
        self.key = key
        self.stats = MirrorStats()
        self._dial = dial
        self._pool = pool
        self._spawn = spawn
        self._queue: deque[tuple[bytes, bool] | H2Request] = deque()
        self._limit = queue
        self._timeout = timeout
        self._linger = linger
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
        queue = self._queue
        try:
            while queue:
                first = queue[0]
                if isinstance(first, H2Request):
                    queue.popleft()
                    try:
                        await self._h2.send(first)
                        self.stats.mirrored += 1
                    except (ConnectionError, OSError, TimeoutError, ResponseError) as exc:
                        self._failed(1, exc)
                    continue
                if self._linger and len(queue) < BATCH:
                    await asyncio.sleep(self._linger)
                batch = self._take_batch()
                reader = _Discard(len(batch), head_only=batch[0][1])
                try:
                    await self._send(batch, reader)
                    self.stats.mirrored += len(batch)
                except (ConnectionError, OSError, TimeoutError, ResponseError) as exc:
                    self.stats.mirrored += reader.answered
                    self._failed(len(batch) - reader.answered, exc)
        finally:
            self._working = False
            if self._closed:  # copies queued before the close went out on a new connection
                self._h2.close()

    def _take_batch(self) -> list[tuple[bytes, bool]]:
        """The HTTP/1 copies at the head of the queue that go out together: up to BATCH and
        COPY_LIMIT bytes; a HEAD copy goes alone (its answer has no body whatever its
        Content-Length says, so it is read by a tracker that knows)."""
        queue = self._queue
        batch: list[tuple[bytes, bool]] = []
        size = 0
        while queue and len(batch) < BATCH:
            head = queue[0]
            if isinstance(head, H2Request):
                break
            request, head_only = head
            if batch and (head_only or batch[0][1] or size + len(request) > COPY_LIMIT):
                break
            batch.append(head)
            size += len(request)
            queue.popleft()
        return batch

    def _failed(self, count: int, exc: BaseException) -> None:
        self.stats.failed += count
        log.debug("mirror.failed", mirror=self.key, copies=count,
                  error=str(exc) or type(exc).__name__)

    async def _send(self, batch: list[tuple[bytes, bool]], reader: _Discard) -> None:
        upstream = self._pool.take(self.key)
        if upstream is None:
            async with asyncio.timeout(self._timeout):
                upstream = await self._dial()
        reader.upstream = upstream
        upstream.bind(reader)
        upstream.write(batch[0][0] if len(batch) == 1 else b"".join(r for r, _ in batch))
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
    """Reads the answers to pipelined copies, in order, to their end and forgets them: one
    response parser over the connection's bytes counts the final answers (a HEAD copy, always
    sent alone, is read by a :class:`ResponseTracker`, which knows it has no body)."""

    def __init__(self, expected: int, head_only: bool) -> None:
        self.upstream: Upstream | None = None
        self.answered = 0
        self._expected = expected
        self._tracker: ResponseTracker | None = None
        self._parser: httptools.HttpResponseParser | None = None
        if head_only:
            self._tracker = ResponseTracker()
            self._tracker.expect(True)
        else:
            self._parser = httptools.HttpResponseParser(self)
        self._in_answer = False
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def upstream_data(self, data: Payload) -> None:
        if self.done.done():
            return
        try:
            if self._tracker is not None:
                self._tracker.feed(data)
                if self._tracker.done:
                    self.answered = 1
                    self.done.set_result(self._tracker.keep_alive)
            else:
                assert self._parser is not None
                self._parser.feed_data(data)
        except ResponseError as exc:
            self.done.set_exception(exc)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if not self.done.done():
                self.done.set_exception(ResponseError(f"malformed response: {exc!r}"))

    # httptools callbacks (pipelined answers, in order)

    def on_message_begin(self) -> None:
        self._in_answer = True

    def on_message_complete(self) -> None:
        self._in_answer = False
        assert self._parser is not None
        if 100 <= self._parser.get_status_code() < 200 or self.done.done():
            return  # an interim answer; the final one follows
        self.answered += 1
        keep_alive = self._parser.should_keep_alive()
        if self.answered == self._expected:
            self.done.set_result(keep_alive)
        elif not keep_alive:
            self.done.set_exception(ConnectionResetError(
                "the local process closed the connection with copies unanswered"))

    def upstream_eof(self) -> None:
        if not self.done.done():
            started = self._tracker.started if self._tracker is not None else self._in_answer
            if started and self.answered == self._expected - 1:
                self.answered += 1  # a body that ends at the close
                self.done.set_result(False)
            else:
                self.done.set_exception(ConnectionResetError("closed without an answer"))
        if self.upstream is not None:
            self.upstream.close()

    def upstream_lost(self, reason: str | None, delivered: bool) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionResetError(reason or "connection closed"))

    def upstream_writable(self, writable: bool) -> None:
        pass
