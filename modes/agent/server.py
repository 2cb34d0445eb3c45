"""The agent: accepts one CLI's tunnel, listens on the Service's target ports, and turns each
connection on them into a stream to the CLI (and each outbound stream from the CLI into a
connection from inside the cluster).

While no CLI is attached (or its local process does not answer, or it is disconnecting), a
connection to a service port goes to the Service's own pods through the origin Service
(:mod:`modes.agent.fronting`); without an origin address it is reset at once, so a client in the
cluster retries instead of hanging on a dead tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kubetunnel.logging import get_logger
from kubetunnel.plugins import ByteStream
from kubetunnel.tunnel.bridging import dial
from kubetunnel.tunnel.framing import (
    OPEN_INBOUND,
    OPEN_OUTBOUND,
    ErrorCode,
    ProtocolError,
    check_target,
)
from kubetunnel.tunnel.handshake import Hello, TunnelRefused, server_handshake
from kubetunnel.tunnel.session import Session, SessionOptions
from kubetunnel.tunnel.sockets import SocketStream
from kubetunnel.tunnel.streams import Stream
from modes.agent.fronting import Counters, Front, FrontConnection

log = get_logger(__name__)

LINGER = 2.0
"""Seconds a stopping agent (with an origin) keeps accepting connections for the origin."""

StatusCallback = Callable[[bool, str], Awaitable[None]]
"""The operator seam: awaited with (up, reason) whenever "tunnel up AND local process answering"
changes. Calls are serialised and coalesced: a slow callback sees only the latest state."""


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent is told by its flags (or, in tests, directly). Port 0 binds any
    free port; :attr:`Agent.ports` and :attr:`Agent.tunnel_address` then say which."""

    token: bytes
    ports: tuple[int, ...]
    tunnel_port: int = 7000
    health_port: int | None = 8080
    bind_address: str = "0.0.0.0"
    operator_url: str | None = None
    session: SessionOptions = field(default_factory=SessionOptions)
    handshake_timeout: float = 10.0
    dial_timeout: float = 10.0
    origin_address: str | None = None
    """ClusterIP of the origin Service (the Service's own pods); None: reset instead."""
    drain_timeout: float = 10.0
    """On SIGTERM, how long open connections may take to finish."""

    def __repr__(self) -> str:  # the token must never reach a log line
        return (f"AgentConfig(ports={self.ports}, tunnel_port={self.tunnel_port}, "
                f"bind_address={self.bind_address!r}, operator_url={self.operator_url!r}, "
                f"origin_address={self.origin_address!r})")


class _TunnelConnection(SocketStream):
    """A tunnel-port connection: hands itself to the agent once the socket is up."""

    def __init__(self, agent: Agent) -> None:
        super().__init__()
        self._agent = agent

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._agent.spawn(self._agent.handle_tunnel(self), "agent:tunnel")


class Agent:
    """Start with :meth:`start`, stop with :meth:`aclose`. ``handle_tunnel`` also serves
    tunnels arriving over other transports (the loopback hub in tests)."""

    def __init__(self, config: AgentConfig, on_status: StatusCallback | None = None) -> None:
        self.config = config
        self._on_status = on_status
        self.session: Session | None = None
        self.client = ""
        self._claimed = False
        self.local_answering = False
        self.local_reason = "no CLI attached"
        self._tasks: set[asyncio.Task[None]] = set()
        self._servers: list[asyncio.Server] = []
        self.ports: list[int] = []  # bound service ports, in configured order
        self.tunnel_address: tuple[str, int] | None = None
        self.ready = False
        self._state_changed = asyncio.Event()
        self.reported: tuple[bool, str] | None = None
        self._hostname = socket.gethostname()
        self.counters = Counters()
        self._fronts: list[Front] = []
        self.draining = False  # stopping: new connections go to the origin, open ones finish
        # Stopping but still accepting (they go to the origin): readiness stays true, so the
        # pod is a serving terminating endpoint that kube-proxy uses while no other is ready.
        self.lingering = False

    @property
    def attached(self) -> bool:
        return self.session is not None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every port (all or none: a failure closes what was bound) and start serving."""
        try:
            await self._listen()
        except OSError:
            for server in self._servers:
                server.close()
                await server.wait_closed()
            self._servers.clear()
            raise
        self.spawn(self._report_loop(), "agent:report")
        self._state_changed.set()  # the operator hears the initial (down) state too
        self.ready = True
        assert self.tunnel_address is not None
        log.info("agent.listening", ports=sorted(self.ports), tunnel_port=self.tunnel_address[1],
                 bind_address=self.config.bind_address)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        host = self.config.bind_address
        for port in self.config.ports:
            # Bound first, so the stream carries the real port even when configured as 0.
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.create_server((host, port), family=family, backlog=4096)
            sock.setblocking(False)
            bound = int(sock.getsockname()[1])
            origin = self.config.origin_address
            front = Front(self._open_inbound, (origin, bound) if origin else None,
                          lambda task: self.spawn(task, "agent:origin"), self.counters,
                          self.config.dial_timeout)
            self._fronts.append(front)
            server = await loop.create_server(
                lambda front=front, bound=bound: FrontConnection(front, bound),  # type: ignore[misc]
                sock=sock,
            )
            self._servers.append(server)
            self.ports.append(bound)
        server = await loop.create_server(
            lambda: _TunnelConnection(self), host, self.config.tunnel_port, reuse_address=True
        )
        self._servers.append(server)
        self.tunnel_address = server.sockets[0].getsockname()[:2]

    async def aclose(self, grace: float = 0.0) -> None:
        """Stop; with ``grace`` > 0 drain first: new connections go to the origin (when there is
        one) while the CLI's open streams and the origin relays get ``grace`` seconds to end."""
        self.ready = False
        self.draining = True
        self._state_changed.set()  # the operator hears "down" now, not at the end of the drain
        if self.config.origin_address is None or grace <= 0:
            for server in self._servers:
                server.close()
        session = self.session
        if session is not None and grace > 0:
            session.goaway("the agent is stopping")
        if grace > 0:
            # Connections keep arriving for a moment after SIGTERM (endpoint updates take time
            # to reach every node): with an origin to send them to, keep accepting a while.
            linger = min(LINGER, grace) if self.config.origin_address is not None else 0.0
            self.lingering = linger > 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(time.monotonic() + linger), grace)
        self.lingering = False
        for server in self._servers:
            server.close()
        if session is not None:
            await session.aclose("the agent is stopping")
        # Let the tunnel handler finish closing its connection before cancelling what is left
        # (cancelling it mid-close would leak the socket).
        tunnels = [t for t in self._tasks if t.get_name() == "agent:tunnel"]
        if tunnels:
            await asyncio.wait(tunnels, timeout=self.config.session.flush_timeout + 1)
        # The operator must hear "down" from a stopping agent, not wait for a lease to expire.
        reporters = [t for t in self._tasks if t.get_name() == "agent:report"]
        if reporters and self.reported is not None and self.reported[0]:
            self._state_changed.set()
            for _ in range(100):
                if not self.reported[0] or reporters[0].done():
                    break
                await asyncio.sleep(0.02)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for front in self._fronts:
            front.abort_all()
        for server in self._servers:
            await server.wait_closed()

    async def _drained(self, not_before: float) -> None:
        while True:
            session = self.session
            if (session is None or session.closed or not session.streams) \
                    and self.counters.open_origin <= 0 and time.monotonic() >= not_before:
                return
            await asyncio.sleep(0.05)

    def spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the tunnel -----------------------------------------------------------------------------

    async def handle_tunnel(self, stream: ByteStream) -> None:
        """Serve one tunnel connection from handshake to end; never raises."""
        cfg = self.config
        claimed = False

        def admit(hello: Hello) -> str | None:
            # Claimed at admission, not once the session runs: two CLIs racing through their
            # handshakes must not both get in.
            nonlocal claimed
            if self._claimed:
                return (f"another CLI ({self.client or 'unknown'}) holds this tunnel; "
                        "disconnect it first")
            self._claimed = claimed = True
            self.client = hello.client
            return None

        try:
            hello, opened = await server_handshake(
                stream, cfg.token, admit, cfg.session.window, cfg.handshake_timeout,
                agent=self._hostname,
            )
        except (TunnelRefused, ProtocolError, ConnectionError, OSError, TimeoutError) as exc:
            if claimed:
                self._claimed = False
            if isinstance(exc, TunnelRefused):
                log.warning("tunnel.refused", code=exc.code, reason=exc.reason)
            else:
                log.warning("tunnel.handshake_failed", error=str(exc) or type(exc).__name__)
            await _quiet_close(stream)
            return
        session = Session(
            stream, initiator=False, peer_window=opened.peer_window, options=cfg.session,
            on_open=self._on_open, on_status=self._on_local_status, leftover=opened.leftover,
            name="agent",
        )
        self.session, self.client = session, hello.client
        log.info("tunnel.attached", client=hello.client, version=opened.version)
        self._state_changed.set()
        try:
            reason = await session.run()
        finally:
            self.session, self._claimed = None, False
            self.local_answering, self.local_reason = False, "no CLI attached"
            self._state_changed.set()
        log.info("tunnel.detached", client=hello.client, reason=reason)

    def _open_inbound(self, port: int) -> Stream | None:
        """A stream to the laptop, or None: this connection goes to the origin (or is reset)."""
        session = self.session
        if session is None or session.closed or self.draining:
            return None
        if not self.local_answering and self.config.origin_address is not None:
            return None
        try:
            return session.open_stream(OPEN_INBOUND, port)
        except ConnectionError:
            return None

    def _on_open(self, stream: Stream) -> None:
        if stream.kind != OPEN_OUTBOUND or not isinstance(stream.destination, str):
            stream.reset(ErrorCode.REFUSED, "the agent accepts only outbound streams")
            return
        host, port = check_target(stream.destination)
        self.spawn(self._dial(stream, host, port), f"agent:dial:{stream.id}")

    async def _dial(self, stream: Stream, host: str, port: int) -> None:
        await dial(stream, host, port, self.config.dial_timeout)  # a failure resets the stream

    # --- the operator seam ----------------------------------------------------------------------

    def _on_local_status(self, answering: bool, reason: str) -> None:
        self.local_answering, self.local_reason = answering, reason
        self._state_changed.set()

    def state(self) -> tuple[bool, str]:
        """(up, reason): up means a CLI is attached AND its local process answers."""
        if self.session is None:
            return False, "no CLI attached"
        if self.draining:
            return False, "the agent is stopping"
        if not self.local_answering:
            return False, self.local_reason
        return True, f"tunnel up ({self.client or 'CLI'}); {self.local_reason}"

    async def _report_loop(self) -> None:
        while True:
            await self._state_changed.wait()
            self._state_changed.clear()
            state = self.state()
            if self.reported is not None and state[0] == self.reported[0]:
                continue
            self.reported = state
            log.info("agent.state", up=state[0], reason=state[1])
            if self._on_status is not None:
                try:
                    await self._on_status(*state)
                except Exception:
                    log.exception("agent.status_callback_failed")


async def _quiet_close(stream: ByteStream) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        await stream.aclose()
