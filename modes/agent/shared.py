"""The shared agent: one per Service with filtered or mirrored intercepts, one tunnel per
intercept, every request routed by :class:`modes.agent.routing.Router`.

Each CLI's HELLO says which intercept it serves (id = its record's name, mode, filter, created,
holder; docs/protocol.md). The agent builds :class:`kubetunnel.intercepts.Intercepts` from the
attached sessions and hands each port's router a dial per intercept. A dial returns no stream
while that CLI's local process does not answer (or the agent drains), so that developer's
requests go to the origin at once: the failback of :mod:`modes.agent.fronting`, per developer.
Requests no filter matches always go to the origin.

It reports per intercept, to that record's status URL, with the shared token: up while its CLI
is attached and its local process answers, plus the requests routed (or copies made) and copies
dropped, so ``cli status`` can show them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from kubetunnel.errors import UsageError
from kubetunnel.intercepts import Intercept, Intercepts, Mode
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
from kubetunnel.tunnel.session import Session
from kubetunnel.tunnel.sockets import SocketStream
from kubetunnel.tunnel.streams import Stream
from modes.agent.fronting import Counters
from modes.agent.h1 import H1Connection
from modes.agent.routing import Router
from modes.agent.server import LINGER, AgentConfig
from modes.agent.upstreams import tunnel_dial

log = get_logger(__name__)

ReportCallback = Callable[[str, bool, str, dict[str, int]], Awaitable[None]]
"""Awaited with (intercept id, up, reason, counts) whenever one of them changes."""


@dataclass
class Member:
    """One attached CLI: its intercept and session, and its local process's state."""

    intercept: Intercept
    session: Session
    answering: bool = False
    reason: str = "waiting for the local process"


@dataclass
class _Reported:
    sent: dict[str, tuple[bool, str, dict[str, int]]] = field(default_factory=dict)


class _Counted(H1Connection):
    """Remembers its transport, which outlives a hand-over to h2c or a raw relay: draining
    waits until every client connection has closed."""

    def __init__(self, router: Router, port: int, open_: set[asyncio.BaseTransport]) -> None:
        super().__init__(router, port)
        self._open = open_

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._open.add(transport)
        super().connection_made(transport)


class _TunnelConnection(SocketStream):
    def __init__(self, agent: SharedAgent) -> None:
        super().__init__()
        self._agent = agent

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._agent.spawn(self._agent.handle_tunnel(self), "agent:tunnel")


class SharedAgent:
    """Start with :meth:`start`, stop with :meth:`aclose`, like :class:`modes.agent.server.
    Agent`, whose configuration it takes."""

    def __init__(self, config: AgentConfig, on_report: ReportCallback | None = None,
                 report_interval: float = 1.0) -> None:
        self.config = config
        self._on_report = on_report
        self._interval = report_interval
        self.members: dict[str, Member] = {}
        self._claimed: set[str] = set()
        self.routers: dict[int, Router] = {}  # bound port -> its router
        self.counters = Counters()
        self.ports: list[int] = []
        self.tunnel_address: tuple[str, int] | None = None
        self.ready = False
        self.draining = False
        self.lingering = False  # stopping but accepting: stays ready (see Agent.lingering)
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._open: set[asyncio.BaseTransport] = set()
        self._changed = asyncio.Event()
        self._reported = _Reported()
        self._hostname = socket.gethostname()

    @property
    def attached(self) -> bool:
        return bool(self.members)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        host = self.config.bind_address
        try:
            for port in self.config.ports:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                sock = socket.create_server((host, port), family=family, backlog=4096)
                sock.setblocking(False)
                bound = int(sock.getsockname()[1])
                origin = self.config.origin_address
                router = Router((origin, bound) if origin else None,
                                dial_timeout=self.config.dial_timeout, counters=self.counters)
                self.routers[bound] = router
                server = await loop.create_server(
                    partial(_Counted, router, bound, self._open), sock=sock)
                self._servers.append(server)
                self.ports.append(bound)
            server = await loop.create_server(lambda: _TunnelConnection(self), host,
                                              self.config.tunnel_port, reuse_address=True)
        except OSError:
            for server in self._servers:
                server.close()
            self._servers.clear()
            raise
        self._servers.append(server)
        self.tunnel_address = server.sockets[0].getsockname()[:2]
        self.spawn(self._report_loop(), "agent:report")
        self.ready = True
        log.info("agent.listening", ports=sorted(self.ports), shared=True,
                 tunnel_port=self.tunnel_address[1], bind_address=host)

    async def aclose(self, grace: float = 0.0) -> None:
        """With ``grace``: every dial fails from now on (requests go to the origin), the CLIs are
        told to go, and open client connections and streams get ``grace`` seconds to end."""
        self.ready = False
        self.draining = True
        self._changed.set()
        for member in list(self.members.values()):
            member.session.goaway("the agent is stopping")
        if grace > 0:
            linger = min(LINGER, grace) if self.config.origin_address is not None else 0.0
            self.lingering = linger > 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(time.monotonic() + linger), grace)
        self.lingering = False
        for server in self._servers:
            server.close()
        for member in list(self.members.values()):
            await member.session.aclose("the agent is stopping")
        tunnels = [t for t in self._tasks if t.get_name() == "agent:tunnel"]
        if tunnels:
            await asyncio.wait(tunnels, timeout=self.config.session.flush_timeout + 1)
        await self._report_now()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for transport in list(self._open):
            if isinstance(transport, asyncio.Transport):
                transport.abort()
        for router in self.routers.values():
            await router.aclose()
        for server in self._servers:
            await server.wait_closed()

    def open_connections(self) -> int:
        """Client connections on the Service ports not yet closed (what a drain waits for)."""
        for transport in [t for t in self._open if t.is_closing()]:
            self._open.discard(transport)
        return len(self._open)

    async def _drained(self, not_before: float) -> None:
        while True:
            streams = sum(len(m.session.streams) for m in self.members.values()
                          if not m.session.closed)
            if streams == 0 and self.open_connections() == 0 \
                    and self.counters.open_origin <= 0 and time.monotonic() >= not_before:
                return
            await asyncio.sleep(0.05)

    def spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- tunnels --------------------------------------------------------------------------------

    async def handle_tunnel(self, stream: ByteStream) -> None:
        """Serve one CLI's tunnel from handshake to end; never raises."""
        cfg = self.config
        claimed: list[Intercept] = []

        def admit(hello: Hello) -> str | None:
            if hello.intercept is None:
                return ("this Service has filtered or mirrored intercepts; a plain connect "
                        "cannot share it (connect with --header, --path-prefix or --mirror)")
            try:
                intercept = Intercept.from_dict(hello.intercept)
            except UsageError as exc:
                return f"bad intercept in HELLO: {exc}"
            if intercept.mode is Mode.EXCLUSIVE:
                return "a shared agent serves only filtered and mirrored intercepts"
            if intercept.id in self._claimed:
                return f"intercept {intercept.id} already has a CLI attached"
            if self.draining:
                return "the agent is stopping"
            self._claimed.add(intercept.id)
            claimed.append(intercept)
            return None

        try:
            hello, opened = await server_handshake(
                stream, cfg.token, admit, cfg.session.window, cfg.handshake_timeout,
                agent=self._hostname)
        except (TunnelRefused, ProtocolError, ConnectionError, OSError, TimeoutError) as exc:
            for intercept in claimed:
                self._claimed.discard(intercept.id)
            log.warning("tunnel.refused" if isinstance(exc, TunnelRefused)
                        else "tunnel.handshake_failed", error=str(exc) or type(exc).__name__)
            with contextlib.suppress(ConnectionError, OSError):
                await stream.aclose()
            return
        intercept = claimed[0]
        member: Member | None = None

        def on_status(answering: bool, reason: str) -> None:
            if member is not None:
                member.answering, member.reason = answering, reason
                for router in self.routers.values():
                    router.set_answering(member.intercept.id, answering)
                self._changed.set()

        session = Session(stream, initiator=False, peer_window=opened.peer_window,
                          options=cfg.session, on_open=self._on_open, on_status=on_status,
                          leftover=opened.leftover, name=f"agent:{intercept.id}")
        member = Member(intercept, session)
        self.members[intercept.id] = member
        self._rebuild()
        log.info("tunnel.attached", client=hello.client, intercept=intercept.id,
                 mode=intercept.mode.value, filter=intercept.filter.describe())
        try:
            reason = await session.run()
        finally:
            self.members.pop(intercept.id, None)
            self._claimed.discard(intercept.id)
            self._rebuild()
        log.info("tunnel.detached", client=hello.client, intercept=intercept.id, reason=reason)

    def _rebuild(self) -> None:
        """New routing tables for every port: the attached intercepts, oldest first."""
        intercepts = Intercepts(m.intercept for m in self.members.values())
        for port, router in self.routers.items():
            router.update(intercepts, {
                i.id: tunnel_dial(partial(self._open_for, i.id, port)) for i in intercepts})
        self._changed.set()

    def _open_for(self, intercept_id: str, port: int) -> Stream | None:
        member = self.members.get(intercept_id)
        if member is None or not member.answering or self.draining or member.session.closed:
            return None
        try:
            return member.session.open_stream(OPEN_INBOUND, port)
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

    # --- reports --------------------------------------------------------------------------------

    def counts(self, intercept_id: str) -> dict[str, int]:
        routed = sum(r.counters.per_intercept.get(intercept_id, 0) for r in self.routers.values())
        mirrored = dropped = 0
        for router in self.routers.values():
            stats = router.mirror_stats().get(intercept_id)
            if stats is not None:
                mirrored += stats.mirrored + stats.failed
                dropped += stats.dropped
        return {"requests": routed + mirrored, "mirrorDropped": dropped}

    def state(self) -> tuple[bool, str]:
        """For /readyz: up while some CLI's local process answers."""
        answering = sum(1 for m in self.members.values() if m.answering)
        return (answering > 0 and not self.draining,
                f"shared agent: {len(self.members)} intercept(s) attached, {answering} answering")

    def _wanted(self) -> dict[str, tuple[bool, str, dict[str, int]]]:
        wanted = {}
        for intercept_id, member in self.members.items():
            up = member.answering and not self.draining and not member.session.closed
            reason = (f"tunnel up ({member.intercept.holder}); {member.reason}" if up
                      else member.reason)
            wanted[intercept_id] = (up, reason, self.counts(intercept_id))
        for intercept_id in self._reported.sent:
            if intercept_id not in wanted:  # detached: say so once, then forget it
                wanted[intercept_id] = (False, "no CLI attached", self.counts(intercept_id))
        return wanted

    async def _report_now(self) -> None:
        wanted = self._wanted()
        for intercept_id, state in wanted.items():
            if self._reported.sent.get(intercept_id) == state:
                continue
            if self._on_report is not None:
                try:
                    await self._on_report(intercept_id, *state)
                except Exception:
                    log.exception("agent.status_callback_failed", intercept=intercept_id)
            self._reported.sent[intercept_id] = state
        for intercept_id in [i for i in self._reported.sent if i not in self.members]:
            if not self._reported.sent[intercept_id][0]:
                del self._reported.sent[intercept_id]

    async def _report_loop(self) -> None:
        # State changes are reported at once; counters at most every interval.
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives as
            # the event is set (aclose does both), and aclose then waits for this task forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._changed.wait()
            self._changed.clear()
            await self._report_now()
