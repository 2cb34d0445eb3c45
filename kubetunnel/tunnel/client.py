"""The CLI end of a tunnel: connect, authenticate, carry streams, and keep doing so.

``cli connect`` builds one :class:`TunnelClient` per tunnel. It owns the reconnect loop (capped
exponential back-off with jitter: a flapping network must not turn into a connection storm
against the API server), serves the agent's inbound streams by dialling the local process, tells
the agent whether that process answers (the signal that makes the operator switch the Service),
and opens outbound streams for the local process's connections into the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubetunnel.errors import KubetunnelError, UsageError
from kubetunnel.logging import get_logger
from kubetunnel.plugins import Transport, TunnelTarget
from kubetunnel.tunnel.bridging import SocketBridge, dial
from kubetunnel.tunnel.framing import (
    OPEN_INBOUND,
    OPEN_OUTBOUND,
    ErrorCode,
    ProtocolError,
    check_target,
)
from kubetunnel.tunnel.handshake import (
    REFUSE_BUSY,
    VERSIONS,
    Hello,
    TunnelRefused,
    client_handshake,
)
from kubetunnel.tunnel.session import Session, SessionOptions
from kubetunnel.tunnel.streams import Stream

log = get_logger(__name__)

_STABLE_SESSION = 5.0  # seconds a session must last for the back-off to start over


@dataclass(frozen=True)
class Route:
    """Inbound streams for ``agent_port`` are carried to ``local_host:local_port``."""

    agent_port: int
    local_port: int
    local_host: str = "127.0.0.1"


@dataclass(frozen=True)
class ClientOptions:
    session: SessionOptions = field(default_factory=SessionOptions)
    handshake_timeout: float = 10.0
    dial_timeout: float = 5.0
    backoff_initial: float = 0.2
    backoff_max: float = 10.0
    probe_interval: float = 1.0
    probe_timeout: float = 1.0


ConnectionListener = Callable[[bool, str], None]
"""Called with (connected, reason) whenever the tunnel comes up or goes down."""


class TunnelClient:
    """One tunnel from this machine to an agent. Use as ``async with TunnelClient(...) as c``.

    The client keeps reconnecting until closed; refusals that retrying cannot fix (wrong token,
    no common version, another CLI holding the tunnel on first contact) end it, and
    :meth:`wait_connected` / :meth:`wait_failed` raise them.
    """

    def __init__(
        self, transport: Transport, target: TunnelTarget, token: str, routes: Sequence[Route],
        *, client_id: str = "", options: ClientOptions | None = None,
        on_connection: ConnectionListener | None = None,
        intercept: dict[str, Any] | None = None,
    ) -> None:
        self._transport = transport
        self._target = target
        self._hello = Hello(VERSIONS, token, client_id, (options or ClientOptions()).session.window,
                            intercept)
        self.routes = {route.agent_port: route for route in routes}
        self.options = options or ClientOptions()
        self._on_connection = on_connection
        self._session: Session | None = None
        self._connected = asyncio.Event()
        self._done = asyncio.Event()
        self.failure: KubetunnelError | None = None
        self._closing = False
        self._ever_connected = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._servers: list[asyncio.Server] = []
        self.local_answering: bool | None = None
        self.local_reason = "not probed yet"
        # Set when a dial to the local process fails: probe now rather than at the next tick,
        # so the agent hears "not answering" (and the cluster takes the traffic back) sooner.
        self._probe_now = asyncio.Event()
        self.connects = 0  # sessions established so far; reconnects are connects - 1
        self._started = False
        # Set when the CLI is disconnecting: the agent is told "not answering" so that it sends
        # new connections to the cluster's pods while the open ones finish.
        self.draining: str | None = None

    async def __aenter__(self) -> TunnelClient:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def connected(self) -> bool:
        return self._session is not None and not self._session.closed

    @property
    def session(self) -> Session | None:
        return self._session

    def start(self) -> None:
        """Begin connecting (in the background); idempotent."""
        if self._started:
            return
        self._started = True
        self._spawn(self._supervise(), "tunnel-client:supervise")
        if self.routes:
            self._spawn(self._probe_loop(), "tunnel-client:probe")

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Until a session is up. Raises the fatal refusal (TunnelRefused) if the client gave up,
        KubetunnelError if it was closed, TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            waiters = [asyncio.ensure_future(self._connected.wait()),
                       asyncio.ensure_future(self._done.wait())]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)
        if self.failure is not None:
            raise self.failure
        if not self._connected.is_set():
            raise KubetunnelError("the tunnel client is closed")

    async def wait_failed(self) -> KubetunnelError | None:
        """Until the client stops for good: the fatal error, or None after ``aclose``."""
        await self._done.wait()
        return self.failure

    async def open_stream(self, target: str, timeout: float | None = 10.0) -> Stream:
        """An outbound stream that the agent connects to ``target`` ("host:port") in-cluster.

        A target the agent cannot reach shows up as a reset stream (CONNECT_FAILED).
        """
        _check_target(target)
        await self.wait_connected(timeout)
        assert self._session is not None
        return self._session.open_stream(OPEN_OUTBOUND, target)

    async def forward(self, target: str, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
        """Listen on ``host:port``; each connection becomes an outbound stream to ``target``.

        While the tunnel is down, connections are reset at once. The server closes with the client.
        """
        _check_target(target)

        def opener() -> Stream | None:
            session = self._session
            if session is None or session.closed:
                return None
            try:
                return session.open_stream(OPEN_OUTBOUND, target)
            except ConnectionError:
                return None

        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: SocketBridge(opener=opener), host, port)
        self._servers.append(server)
        return server

    def drain(self, reason: str) -> None:
        """Tell the agent to send new connections to the cluster; open streams carry on."""
        self.draining = reason
        self._send_status()

    def inbound_streams(self) -> int:
        """Connections from the cluster in flight through this tunnel now."""
        session = self._session
        if session is None:
            return 0
        return sum(1 for s in list(session.streams.values()) if s.kind == OPEN_INBOUND)

    def _send_status(self) -> None:
        session = self._session
        if session is None:
            return
        if self.draining is not None:
            session.send_status(False, self.draining)
        elif self.local_answering is not None:
            session.send_status(self.local_answering, self.local_reason)

    async def aclose(self, grace: float = 0.0) -> None:
        """Stop; with ``grace`` > 0, GOAWAY first and let open streams finish that long."""
        self._closing = True
        for server in self._servers:
            server.close()
        session = self._session
        if session is not None and grace > 0:
            session.goaway("the CLI is disconnecting")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.wait_closed(), grace)
        if session is not None:
            await session.aclose("the CLI is disconnecting")
        # The supervisor closes the dead session's connection on its way out; cancelling it in
        # the middle of that would leak the socket.
        supervisors = [t for t in self._tasks if t.get_name() == "tunnel-client:supervise"]
        if supervisors and session is not None:
            await asyncio.wait(supervisors, timeout=self.options.session.flush_timeout + 1)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._done.set()

    # --- internals ------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _supervise(self) -> None:
        delay = self.options.backoff_initial
        loop = asyncio.get_running_loop()
        try:
            while not self._closing:
                started = loop.time()
                reason = await self._connect_once()
                if self.failure is not None or self._closing:
                    return
                if reason is None:
                    # A session ran. One that lasted starts the back-off afresh; one that died
                    # at once (an agent crash-looping) keeps it growing.
                    if loop.time() - started > _STABLE_SESSION:
                        delay = self.options.backoff_initial
                    reason = "the tunnel dropped"
                # Jitter keeps many CLIs from retrying in lock-step.
                pause = delay * (0.5 + random.random() / 2)  # noqa: S311 -- jitter, not a secret
                log.info("tunnel.retry", reason=reason, retry_in=round(pause, 2))
                await asyncio.sleep(pause)
                delay = min(delay * 2, self.options.backoff_max)
        finally:
            self._done.set()

    async def _connect_once(self) -> str | None:
        """One connection attempt and, if it succeeds, one session: None after a session ran,
        else why the attempt failed."""
        try:
            stream = await self._transport.connect(self._target)
        except (KubetunnelError, OSError, TimeoutError) as exc:
            # Transports should raise KubetunnelError; a raw socket error is retried all the same.
            return str(exc) or type(exc).__name__
        try:
            opened = await client_handshake(stream, self._hello, self.options.handshake_timeout)
        except TunnelRefused as exc:
            await _quiet_close(stream)
            if exc.code != REFUSE_BUSY or not self._ever_connected:
                log.error("tunnel.refused", code=exc.code, reason=exc.reason)
                self.failure = exc
                return str(exc)
            return str(exc)  # our own previous session may still be held: retry
        except (ProtocolError, ConnectionError, OSError, TimeoutError) as exc:
            await _quiet_close(stream)
            return f"handshake failed: {exc or type(exc).__name__}"
        except asyncio.CancelledError:
            await _quiet_close(stream)
            raise
        session = Session(
            stream, initiator=True, peer_window=opened.peer_window, options=self.options.session,
            on_open=self._on_open, leftover=opened.leftover, name="cli",
        )
        self._session = session
        self._ever_connected = True
        self.connects += 1
        self._connected.set()
        log.info("tunnel.connected", target=self._target.address or self._target.pod,
                 version=opened.version)
        self._notify(True, "tunnel connected")
        self._send_status()
        try:
            reason = await session.run()
        finally:
            self._connected.clear()
            self._session = None
        if not self._closing:
            log.warning("tunnel.disconnected", reason=reason)
        self._notify(False, reason)
        return None

    def _notify(self, connected: bool, reason: str) -> None:
        if self._on_connection is not None:
            try:
                self._on_connection(connected, reason)
            except Exception:
                log.exception("tunnel.listener_failed")

    def _on_open(self, stream: Stream) -> None:
        port = stream.destination
        route = self.routes.get(port) if isinstance(port, int) else None
        if route is None:
            stream.reset(ErrorCode.REFUSED, f"the CLI has no local port for {stream.destination}")
            return
        self._spawn(self._dial_local(stream, route), f"tunnel-client:dial:{stream.id}")

    async def _dial_local(self, stream: Stream, route: Route) -> None:
        if not await dial(stream, route.local_host, route.local_port, self.options.dial_timeout):
            self._probe_now.set()

    async def _probe_loop(self) -> None:
        while True:
            self._probe_now.clear()
            answering, reason = await self._probe()
            if answering != self.local_answering or reason != self.local_reason:
                log.info("local.probe", answering=answering, reason=reason)
                self.local_answering, self.local_reason = answering, reason
                self._send_status()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._probe_now.wait(), self.options.probe_interval)

    async def _probe(self) -> tuple[bool, str]:
        """Whether every mapped local port accepts a TCP connection (what kubelet's probe does)."""
        loop = asyncio.get_running_loop()
        for route in self.routes.values():
            where = f"{route.local_host}:{route.local_port}"
            try:
                async with asyncio.timeout(self.options.probe_timeout):
                    transport, _ = await loop.create_connection(
                        asyncio.Protocol, route.local_host, route.local_port
                    )
                transport.close()
            except (OSError, TimeoutError) as exc:
                return False, f"nothing answers on {where}: {exc or 'timed out'}"
        ports = ", ".join(f"{r.local_host}:{r.local_port}" for r in self.routes.values())
        return True, f"local process answers on {ports}"


def _check_target(target: str) -> None:
    try:
        check_target(target)
    except ProtocolError as exc:
        raise UsageError(str(exc)) from exc


async def _quiet_close(stream: object) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(ConnectionError, OSError):
            await aclose()
