"""One HTTP/1.x request and its response on the way through the router: the request's bytes
going to its upstream, the response's bytes coming back to the client.

The request head is written anew from what llhttp parsed (method, target, version, the header
lines as they came) and a chunked body is chunked anew, since llhttp does not tell where in the
stream a message ends; the response is passed on byte for byte (:mod:`modes.agent.responses`).
"""

from __future__ import annotations

from typing import Protocol

from kubetunnel.logging import get_logger
from kubetunnel.tunnel.framing import Payload
from modes.agent.mirroring import Mirror
from modes.agent.responses import ResponseError, ResponseTracker
from modes.agent.routing import Router, Target
from modes.agent.upstreams import Upstream

log = get_logger(__name__)

REPLAY_LIMIT = 1024 * 1024
"""Request bytes kept until the response starts, to send the request again elsewhere when its
upstream provably never got it (or a kept-alive connection closed under it)."""
QUEUE_LIMIT = 256 * 1024
"""Request bytes that may wait for an upstream connection before the client is not read."""
_IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))


_UNSENT = ResponseTracker()  # the tracker of an exchange not yet sent: never fed, never done


class Client(Protocol):
    """What an exchange needs from the client connection (:class:`modes.agent.h1.H1Connection`)."""

    router: Router

    def client_write(self, data: Payload) -> None: ...

    def client_write_eof(self) -> None: ...

    def exchange_done(self, exchange: Exchange, keep_alive: bool) -> None:
        """Both messages ended; ``keep_alive``: the client connection may carry another."""
        ...

    def exchange_failed(self, exchange: Exchange, reason: str) -> None: ...

    def upstream_writable(self, writable: bool) -> None: ...

    def attached(self) -> None:
        """The exchange got its upstream connection: its waiting bytes went out."""
        ...

    @property
    def client_paused(self) -> bool: ...


class Exchange:
    """Created when a request's head is parsed; :meth:`activate` once every earlier exchange on
    the connection has finished (responses go back in request order)."""

    def __init__(self, client: Client, method: bytes, head: bytes, target: Target | None,
                 keep_alive: bool, upgrade: bool) -> None:
        self.client = client
        self.method = method
        self.target = target
        self.keep_alive = keep_alive
        self.upgrade = upgrade  # Upgrade or CONNECT: raw bytes both ways once sent
        # Lists of chunks, not one growing buffer: most requests are one chunk, never copied.
        self.out = [head]  # request bytes not yet written upstream
        self.out_size = len(head)
        self.replay: list[bytes] | None = None  # bytes written upstream, while replayable
        self._replay_size = 0
        self.request_done = False
        self.response_done = False
        self.upstream: Upstream | None = None
        self.reused = False
        self.retried = False
        self.tracker = _UNSENT
        self.active = False
        self._eof_pending = False  # the client half-closed mid-request
        self._raw_client_eof = self._raw_upstream_eof = False  # upgraded: each side's FIN
        # A finished request's copy for mirrors, sent once its response has gone to the client.
        self.copy: tuple[bytes, tuple[Mirror, ...]] | None = None

    # --- the request side -------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is None:
            self.out.append(data)
            self.out_size += len(data)
            return
        upstream.write(data)
        if self.replay is not None:
            self._replay_size += len(data)
            if self._replay_size > REPLAY_LIMIT:
                self.replay = None
            else:
                self.replay.append(data)

    def client_eof(self) -> None:
        """The client half-closed before this request ended (or, for an upgrade, at all)."""
        if self.upstream is not None:
            self.upstream.write_eof()
        else:
            self._eof_pending = True
        if self.upgrade:
            self._raw_client_eof = True
            self._raw_ended()

    def _raw_ended(self) -> None:
        if self._raw_client_eof and self._raw_upstream_eof:
            self.request_done = self.response_done = True
            self.keep_alive = False
            self._maybe_done()

    def activate(self) -> None:
        self.active = True
        target = self.target
        if target is None:
            self.client.exchange_failed(self, "no origin to send the request to")
            return
        upstream = None if self.upgrade else self.client.router.pool.take(target.key)
        if upstream is not None:
            self.reused = True
            self._attach(upstream)
        else:
            self.client.router.spawn(self._dial(target))

    async def _dial(self, target: Target) -> None:
        router = self.client.router
        try:
            upstream = await target.dial()
        except (ConnectionError, OSError, TimeoutError) as exc:
            if target.fallback is None:
                self.client.exchange_failed(self, f"cannot reach {target.key}: {exc!r}")
                return
            router.counters.fell_back(target.intercept)
            log.debug("router.failed_back", target=target.key, error=str(exc))
            self.target = target.fallback
            await self._dial(target.fallback)
            return
        if not self.active:  # the client went away meanwhile: keep the fresh connection
            router.pool.give(target.key, upstream)
            return
        self._attach(upstream)

    def _attach(self, upstream: Upstream) -> None:
        self.upstream = upstream
        upstream.bind(self)
        tracker = upstream.state
        if not isinstance(tracker, ResponseTracker):
            tracker = upstream.state = ResponseTracker()
        tracker.expect(self.method == b"HEAD")
        self.tracker = tracker
        out, size = self.out, self.out_size
        self.out, self.out_size = [], 0
        data = out[0] if len(out) == 1 else b"".join(out)
        self.replay, self._replay_size = ([data], size) if size <= REPLAY_LIMIT else (None, 0)
        upstream.write(data)
        if self._eof_pending:
            upstream.write_eof()
        if self.client.client_paused:
            upstream.pause_reading()
        if size > QUEUE_LIMIT:  # the client may have been paused for these bytes
            self.client.attached()

    def _replay_to(self, target: Target | None) -> bool:
        """Send the request again on a new connection (to ``target``), if it can be."""
        if target is None or self.replay is None or self.tracker.started:
            return False
        self.out = self.replay + self.out
        self.out_size += self._replay_size
        self.replay = None
        self.target = target
        old, self.upstream = self.upstream, None
        if old is not None:
            old.bind(None)
            old.abort()
        self.client.router.spawn(self._dial(target))
        return True

    # --- the response side (UpstreamSink) ------------------------------------------------------

    def upstream_data(self, data: Payload) -> None:
        if self.upgrade:
            self.client.client_write(data)
            return
        try:
            used = self.tracker.feed(data)
        except ResponseError as exc:
            self.client.exchange_failed(self, str(exc))
            return
        self.replay = None
        self.client.client_write(data if used == len(data) else memoryview(data)[:used])
        if self.tracker.done:
            self.response_done = True
            self._maybe_done()

    def upstream_eof(self) -> None:
        if self.upgrade:
            self._raw_upstream_eof = True
            self.client.client_write_eof()
            self._raw_ended()
            return
        if self.response_done:
            return  # the upstream closes after the response: it is not reused
        if not self.tracker.started:
            self._lost_early("closed before answering", True)
            return
        # A body that ends at the close (or a response cut short): the client sees the same.
        self.response_done = True
        self.keep_alive = False
        self._maybe_done()

    def upstream_lost(self, reason: str | None, delivered: bool) -> None:
        if self.response_done and (self.request_done or self.upgrade):
            return
        if self.upgrade and reason is None:
            self.response_done = self.request_done = True
            self.keep_alive = False
            self._maybe_done()
            return
        if not self.tracker.started and not self.upgrade:
            self._lost_early(reason or "connection closed", delivered)
            return
        self.client.exchange_failed(self, f"upstream {self._key} lost: {reason}")

    def upstream_writable(self, writable: bool) -> None:
        self.client.upstream_writable(writable)

    def _lost_early(self, reason: str, delivered: bool) -> None:
        router = self.client.router
        target = self.target
        assert target is not None
        if not delivered and self._replay_to(target.fallback):
            router.counters.fell_back(target.intercept)
            router.counters.handed_over += 1
            log.info("router.handed_over", target=target.key, reason=reason)
            return
        # A kept-alive connection the upstream closed just as the request left (the usual race
        # of HTTP keep-alive): a request that is safe to repeat goes again on a new connection.
        if delivered and self.reused and not self.retried and self.method in _IDEMPOTENT \
                and self._replay_to(target):
            self.retried = True
            self.reused = False
            router.counters.retried += 1
            return
        self.client.exchange_failed(self, f"upstream {target.key}: {reason}")

    @property
    def _key(self) -> str:
        return self.target.key if self.target is not None else "-"

    def _maybe_done(self) -> None:
        if not (self.request_done and self.response_done):
            return
        upstream, self.upstream = self.upstream, None
        keep_alive = self.keep_alive and self.tracker.keep_alive and not self.upgrade
        if upstream is not None:
            if keep_alive and not upstream.closed and self.target is not None:
                self.client.router.pool.give(self.target.key, upstream)
            else:
                upstream.bind(None)
                upstream.close()
        self.client.exchange_done(self, keep_alive)

    def request_complete(self) -> None:
        self.request_done = True
        self._maybe_done()

    def abort(self) -> None:
        """The client connection is gone."""
        self.active = False
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.bind(None)
            if self.request_done and self.response_done:
                upstream.close()
            else:
                upstream.abort()

