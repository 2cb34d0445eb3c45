"""What the exclusive agent (:mod:`modes.agent.server`) and the shared one
(:mod:`modes.agent.shared`) do alike: bind the Service and tunnel ports, run the CLIs' handshakes,
dial the outbound streams the CLIs open, and stop with a drain.

They differ in whom they admit, what serves a Service port, and how they report; those are the
hooks a subclass fills in.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar

from kubetunnel.logging import get_logger
from kubetunnel.plugins import ByteStream
from kubetunnel.tunnel.bridging import dial
from kubetunnel.tunnel.framing import OPEN_OUTBOUND, ErrorCode, ProtocolError, check_target
from kubetunnel.tunnel.handshake import Admit, Hello, Opened, TunnelRefused, server_handshake
from kubetunnel.tunnel.session import Session, SessionOptions
from kubetunnel.tunnel.sockets import SocketStream
from kubetunnel.tunnel.streams import Stream
from modes.agent.fronting import Counters

log = get_logger(__name__)

LINGER = 2.0
"""Seconds a stopping agent (with an origin) keeps accepting connections for the origin."""

ProtocolFactory = Callable[[], asyncio.Protocol]


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent is told by its flags (or, in tests, directly). Port 0 binds any
    free port; :attr:`AgentBase.ports` and :attr:`AgentBase.tunnel_address` then say which."""

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

    def __init__(self, agent: AgentBase) -> None:
        super().__init__()
        self._agent = agent

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._agent.spawn(self._agent.handle_tunnel(self), "agent:tunnel")


class AgentBase(ABC):
    """Start with :meth:`start`, stop with :meth:`aclose`. ``handle_tunnel`` also serves
    tunnels arriving over other transports (the loopback hub in tests)."""

    _listening_fields: ClassVar[dict[str, object]] = {}
    """Extra fields of the ``agent.listening`` event."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.counters = Counters()
        self.ports: list[int] = []  # bound service ports, in configured order
        self.tunnel_address: tuple[str, int] | None = None
        self.ready = False
        self.draining = False  # stopping: new connections go to the origin, open ones finish
        # Stopping but still accepting (they go to the origin): readiness stays true, so the
        # pod is a serving terminating endpoint that kube-proxy uses while no other is ready.
        self.lingering = False
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()  # wakes the report loop
        self._hostname = socket.gethostname()

    # --- what a subclass says -------------------------------------------------------------------

    @property
    @abstractmethod
    def attached(self) -> bool:
        """Whether some CLI's tunnel is up."""

    @abstractmethod
    def state(self) -> tuple[bool, str]:
        """(up, reason), as /readyz shows it."""

    @abstractmethod
    async def handle_tunnel(self, stream: ByteStream) -> None:
        """Serve one tunnel connection from handshake to end; never raises."""

    @abstractmethod
    def _port_protocol(self, port: int, origin: tuple[str, int] | None) -> ProtocolFactory:
        """What serves the connections to Service port ``port`` (bound; ``origin`` is where
        the Service's own pods answer on it, if anywhere)."""

    @abstractmethod
    def _sessions(self) -> list[Session]:
        """The attached CLIs' sessions."""

    @abstractmethod
    def _begin_drain(self, grace: float) -> None:
        """The first step of a stop, once new connections no longer reach a CLI."""

    @abstractmethod
    async def _report_loop(self) -> None: ...

    @abstractmethod
    async def _report_final(self) -> None:
        """Tell the operator the last state before the report loop is cancelled."""

    @abstractmethod
    async def _abort_open(self) -> None:
        """At the very end of a stop: cut whatever client connection is still open."""

    def _idle(self) -> bool:
        """Whether a drain may end: no stream to a CLI and no relay to the origin is open."""
        streams = sum(len(session.streams) for session in self._sessions() if not session.closed)
        return streams == 0 and self.counters.open_origin <= 0

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
        self._changed.set()  # the operator hears the initial (down) state too
        self.ready = True
        assert self.tunnel_address is not None
        log.info("agent.listening", ports=sorted(self.ports), **self._listening_fields,
                 tunnel_port=self.tunnel_address[1], bind_address=self.config.bind_address)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        host = self.config.bind_address
        origin = self.config.origin_address
        for port in self.config.ports:
            # Bound first, so the stream carries the real port even when configured as 0.
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.create_server((host, port), family=family, backlog=4096)
            sock.setblocking(False)
            bound = int(sock.getsockname()[1])
            factory = self._port_protocol(bound, (origin, bound) if origin else None)
            self._servers.append(await loop.create_server(factory, sock=sock))
            self.ports.append(bound)
        server = await loop.create_server(
            lambda: _TunnelConnection(self), host, self.config.tunnel_port, reuse_address=True
        )
        self._servers.append(server)
        self.tunnel_address = server.sockets[0].getsockname()[:2]

    async def aclose(self, grace: float = 0.0) -> None:
        """Stop; with ``grace`` > 0 drain first: new connections go to the origin (when there is
        one) while the CLIs' open streams and the origin relays get ``grace`` seconds to end."""
        self.ready = False
        self.draining = True
        self._changed.set()  # the operator hears "down" now, not at the end of the drain
        self._begin_drain(grace)
        if grace > 0:
            # Connections keep arriving for a moment after SIGTERM (endpoint updates take time
            # to reach every node): with an origin to send them to, keep accepting a while.
            linger = min(LINGER, grace) if self.config.origin_address is not None else 0.0
            self.lingering = linger > 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(time.monotonic() + linger), grace)
        self.lingering = False
        self._close_servers()
        for session in self._sessions():
            await session.aclose("the agent is stopping")
        # Let the tunnel handlers finish closing their connections before cancelling what is
        # left (cancelling one mid-close would leak the socket).
        tunnels = [t for t in self._tasks if t.get_name() == "agent:tunnel"]
        if tunnels:
            await asyncio.wait(tunnels, timeout=self.config.session.flush_timeout + 1)
        await self._report_final()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._abort_open()
        for server in self._servers:
            await server.wait_closed()

    def _close_servers(self) -> None:
        for server in self._servers:
            server.close()

    async def _drained(self, not_before: float) -> None:
        while True:
            if self._idle() and time.monotonic() >= not_before:
                return
            await asyncio.sleep(0.05)

    def spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- tunnels --------------------------------------------------------------------------------

    async def _handshake(self, stream: ByteStream, admit: Admit,
                         release: Callable[[], None]) -> tuple[Hello, Opened] | None:
        """Hello and handshake outcome; None when refused or failed (``release`` has then
        undone what ``admit`` claimed, and the stream is closed)."""
        cfg = self.config
        try:
            return await server_handshake(
                stream, cfg.token, admit, cfg.session.window, cfg.handshake_timeout,
                agent=self._hostname,
            )
        except (TunnelRefused, ProtocolError, ConnectionError, OSError, TimeoutError) as exc:
            release()
            if isinstance(exc, TunnelRefused):
                log.warning("tunnel.refused", code=exc.code, reason=exc.reason)
            else:
                log.warning("tunnel.handshake_failed", error=str(exc) or type(exc).__name__)
            with contextlib.suppress(ConnectionError, OSError):
                await stream.aclose()
            return None

    def _session(self, stream: ByteStream, opened: Opened,
                 on_status: Callable[[bool, str], None], name: str) -> Session:
        return Session(
            stream, initiator=False, peer_window=opened.peer_window, options=self.config.session,
            on_open=self._on_open, on_status=on_status, leftover=opened.leftover, name=name,
        )

    def _on_open(self, stream: Stream) -> None:
        if stream.kind != OPEN_OUTBOUND or not isinstance(stream.destination, str):
            stream.reset(ErrorCode.REFUSED, "the agent accepts only outbound streams")
            return
        host, port = check_target(stream.destination)
        self.spawn(self._dial(stream, host, port), f"agent:dial:{stream.id}")

    async def _dial(self, stream: Stream, host: str, port: int) -> None:
        await dial(stream, host, port, self.config.dial_timeout)  # a failure resets the stream
