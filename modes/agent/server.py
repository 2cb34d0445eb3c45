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
from collections.abc import Awaitable, Callable

from kubetunnel.logging import get_logger
from kubetunnel.plugins import ByteStream
from kubetunnel.tunnel.framing import OPEN_INBOUND
from kubetunnel.tunnel.handshake import Hello
from kubetunnel.tunnel.session import Session
from kubetunnel.tunnel.streams import Stream
from modes.agent.base import LINGER, AgentBase, AgentConfig, ProtocolFactory
from modes.agent.fronting import Front, FrontConnection

__all__ = ["LINGER", "Agent", "AgentConfig", "StatusCallback"]

log = get_logger(__name__)

StatusCallback = Callable[[bool, str], Awaitable[None]]
"""The operator seam: awaited with (up, reason) whenever "tunnel up AND local process answering"
changes. Calls are serialised and coalesced: a slow callback sees only the latest state."""


class Agent(AgentBase):
    """The exclusive agent: one CLI at a time takes every connection to the Service."""

    def __init__(self, config: AgentConfig, on_status: StatusCallback | None = None) -> None:
        super().__init__(config)
        self._on_status = on_status
        self.session: Session | None = None
        self.client = ""
        self._claimed = False
        self.local_answering = False
        self.local_reason = "no CLI attached"
        self.reported: tuple[bool, str] | None = None
        self._fronts: list[Front] = []

    @property
    def attached(self) -> bool:
        return self.session is not None

    def _sessions(self) -> list[Session]:
        return [] if self.session is None else [self.session]

    # --- lifecycle ------------------------------------------------------------------------------

    def _port_protocol(self, port: int, origin: tuple[str, int] | None) -> ProtocolFactory:
        front = Front(self._open_inbound, origin, lambda task: self.spawn(task, "agent:origin"),
                      self.counters, self.config.dial_timeout)
        self._fronts.append(front)
        return lambda: FrontConnection(front, port)

    def _begin_drain(self, grace: float) -> None:
        if self.config.origin_address is None or grace <= 0:
            self._close_servers()
        if self.session is not None and grace > 0:
            self.session.goaway("the agent is stopping")

    async def _report_final(self) -> None:
        # The operator must hear "down" from a stopping agent, not wait for a lease to expire.
        reporters = [t for t in self._tasks if t.get_name() == "agent:report"]
        if reporters and self.reported is not None and self.reported[0]:
            self._changed.set()
            for _ in range(100):
                if not self.reported[0] or reporters[0].done():
                    break
                await asyncio.sleep(0.02)

    async def _abort_open(self) -> None:
        for front in self._fronts:
            front.abort_all()

    # --- the tunnel -----------------------------------------------------------------------------

    async def handle_tunnel(self, stream: ByteStream) -> None:
        """Serve one tunnel connection from handshake to end; never raises."""
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

        def release() -> None:
            if claimed:
                self._claimed = False

        accepted = await self._handshake(stream, admit, release)
        if accepted is None:
            return
        hello, opened = accepted
        session = self._session(stream, opened, self._on_local_status, "agent")
        self.session, self.client = session, hello.client
        log.info("tunnel.attached", client=hello.client, version=opened.version)
        self._changed.set()
        try:
            reason = await session.run()
        finally:
            self.session, self._claimed = None, False
            self.local_answering, self.local_reason = False, "no CLI attached"
            self._changed.set()
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

    # --- the operator seam ----------------------------------------------------------------------

    def _on_local_status(self, answering: bool, reason: str) -> None:
        self.local_answering, self.local_reason = answering, reason
        self._changed.set()

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
            await self._changed.wait()
            self._changed.clear()
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
