"""What ``cli connect``'s live line says: where new connections to the Service go right now, why,
and every change of that with its time.

There are three places a connection can go:

- ``local``: the Service selects the tunnel pod, and the agent sends it through the tunnel;
- ``cluster via agent``: the Service still selects the tunnel pod, but the agent sends the
  connection to the Service's own pods (local process down, tunnel reconnecting, disconnecting);
- ``cluster via selector``: the Service selects its own pods.

The agent's choice follows from what this CLI tells it (tunnel up, local process answering, not
disconnecting), so it is known here without asking; the selector comes from the record's status
(followed by a watch, so a change shows within the tick of the line).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from kubetunnel.errors import KubetunnelError
from kubetunnel.logging import get_logger
from kubetunnel.plugins import Store
from kubetunnel.records import TunnelRecord

log = get_logger(__name__)

LOCAL = "local"
VIA_AGENT = "cluster via agent"
VIA_SELECTOR = "cluster via selector"
POLL_INTERVAL = 1.0
"""Seconds between reads of the record besides its watch."""
UNACKNOWLEDGED_AFTER = 1.0
"""Seconds the agent's "up" may go unrecorded before the operator counts as unreachable."""


@dataclass(frozen=True)
class Observed:
    """Everything the route depends on, at one moment."""

    tunnel_up: bool
    answering: bool | None
    draining: bool
    switched: bool  # the Service selects the tunnel pod (record status)
    agent_ready: bool | None  # the operator's AgentReady condition; None: not known yet
    agent_reported_up: bool  # the operator recorded the agent's "up" (AgentConnected)
    up_for: float  # seconds the agent has had a reason to report "up"


def route(seen: Observed) -> tuple[str, str]:
    """(where new connections go, why); why is empty when they go where the user wants."""
    if seen.agent_ready is False and not seen.tunnel_up:
        down = "tunnel pod not Ready"
    elif not seen.tunnel_up:
        down = "tunnel reconnecting"
    elif seen.draining:
        down = "disconnecting"
    elif not seen.answering:
        down = "local process down"
    else:
        down = ""
    if seen.switched:
        if down == "tunnel pod not Ready":
            # Nothing answers until the operator points the Service back at its own pods.
            return VIA_SELECTOR, "tunnel pod not Ready; the operator is restoring the Service"
        return (VIA_AGENT, down) if down else (LOCAL, "")
    if down:
        return VIA_SELECTOR, down
    if seen.agent_ready is False:
        return VIA_SELECTOR, "tunnel pod not Ready"
    if not seen.agent_reported_up and seen.up_for > UNACKNOWLEDGED_AFTER:
        return VIA_SELECTOR, "operator unreachable (the agent's report is not recorded)"
    return VIA_SELECTOR, "waiting for the operator to switch the Service"


def describe(where: str, why: str) -> str:
    return f"{where} ({why})" if why else where


class Switches:
    """The history of routes: each change is said once, with its time."""

    def __init__(self) -> None:
        self.current: tuple[str, str] | None = None
        self.last_change = "-"

    def update(self, now_route: tuple[str, str]) -> str | None:
        """The line to print if the route changed, else None."""
        if now_route == self.current:
            return None
        first = self.current is None
        self.current = now_route
        if first and now_route[0] == VIA_SELECTOR:
            return None  # where every tunnel starts: nothing has switched yet
        stamp = time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
        self.last_change = stamp
        return f"{stamp} traffic -> {describe(*now_route)}"


class RecordFollower:
    """The latest version of one record, kept by a watch (a poll while the watch fails)."""

    def __init__(self, store: Store, record: TunnelRecord) -> None:
        self.store, self.namespace, self.name = store, record.namespace, record.name
        self.current: TunnelRecord | None = record
        self.gone = False
        self.changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name="connect:record-watch"),
                       asyncio.create_task(self._poll(), name="connect:record-poll")]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _poll(self) -> None:
        # A watch that cannot start (no RBAC "watch" on records) retries quietly inside the
        # store: a slow read keeps the line true regardless.
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            await self.refresh()

    async def _run(self) -> None:
        while True:
            try:
                async for event in self.store.watch(self.namespace):
                    if event.record.name != self.name:
                        continue
                    gone = event.type == "DELETED"
                    self._set(None if gone else event.record, gone)
            except KubetunnelError as exc:
                log.warning("connect.record_watch_failed", error=str(exc))
            await self.refresh()
            await asyncio.sleep(0.25)

    async def refresh(self) -> None:
        """Read the record once (the watch's safety net)."""
        try:
            current = await self.store.get(self.namespace, self.name)
        except KubetunnelError as exc:
            log.warning("connect.record_read_failed", error=str(exc))
            return
        self._set(current, current is None)

    def _set(self, record: TunnelRecord | None, gone: bool) -> None:
        self.current, self.gone = record, gone
        self.changed.set()
