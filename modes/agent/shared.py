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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

from kubetunnel.errors import UsageError
from kubetunnel.intercepts import Intercept, Intercepts, Mode
from kubetunnel.logging import get_logger
from kubetunnel.plugins import ByteStream
from kubetunnel.tunnel.framing import OPEN_INBOUND
from kubetunnel.tunnel.handshake import Hello
from kubetunnel.tunnel.session import Session
from kubetunnel.tunnel.streams import Stream
from modes.agent.base import AgentBase, AgentConfig, ProtocolFactory
from modes.agent.h1 import H1Connection
from modes.agent.routing import Router
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


class SharedAgent(AgentBase):
    """The shared agent; takes the configuration of :class:`modes.agent.server.Agent`."""

    _listening_fields: ClassVar[dict[str, object]] = {"shared": True}

    def __init__(self, config: AgentConfig, on_report: ReportCallback | None = None,
                 report_interval: float = 1.0) -> None:
        super().__init__(config)
        self._on_report = on_report
        self._interval = report_interval
        self.members: dict[str, Member] = {}
        self._claimed: set[str] = set()
        self.routers: dict[int, Router] = {}  # bound port -> its router
        self._open: set[asyncio.BaseTransport] = set()
        self._reported = _Reported()

    @property
    def attached(self) -> bool:
        return bool(self.members)

    def _sessions(self) -> list[Session]:
        return [member.session for member in self.members.values()]

    # --- lifecycle ------------------------------------------------------------------------------

    def _port_protocol(self, port: int, origin: tuple[str, int] | None) -> ProtocolFactory:
        router = Router(origin, dial_timeout=self.config.dial_timeout, counters=self.counters)
        self.routers[port] = router
        return partial(_Counted, router, port, self._open)

    def _begin_drain(self, grace: float) -> None:
        # Every dial fails from now on (requests go to the origin) and the CLIs are told to go;
        # open client connections and streams get the grace to end.
        for session in self._sessions():
            session.goaway("the agent is stopping")

    async def _report_final(self) -> None:
        await self._report_now()

    async def _abort_open(self) -> None:
        for transport in list(self._open):
            if isinstance(transport, asyncio.Transport):
                transport.abort()
        for router in self.routers.values():
            await router.aclose()

    def open_connections(self) -> int:
        """Client connections on the Service ports not yet closed (what a drain waits for)."""
        for transport in [t for t in self._open if t.is_closing()]:
            self._open.discard(transport)
        return len(self._open)

    def _idle(self) -> bool:
        return super()._idle() and self.open_connections() == 0

    # --- tunnels --------------------------------------------------------------------------------

    async def handle_tunnel(self, stream: ByteStream) -> None:
        """Serve one CLI's tunnel from handshake to end; never raises."""
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

        def release() -> None:
            for intercept in claimed:
                self._claimed.discard(intercept.id)

        accepted = await self._handshake(stream, admit, release)
        if accepted is None:
            return
        hello, opened = accepted
        intercept = claimed[0]
        member: Member | None = None

        def on_status(answering: bool, reason: str) -> None:
            if member is not None:
                member.answering, member.reason = answering, reason
                for router in self.routers.values():
                    router.set_answering(member.intercept.id, answering)
                self._changed.set()

        session = self._session(stream, opened, on_status, f"agent:{intercept.id}")
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
