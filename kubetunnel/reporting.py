"""The agent's side of the operator REST API: tell the operator whether the tunnel is connected.

Why a background sender instead of one POST per call: the operator may be unreachable for a
while (a leader hand-over, a rolling update), and what matters is that the operator ends up
knowing the *latest* state, not that every intermediate state arrives. So :meth:`report` only
records the wanted state and wakes the sender, which POSTs the latest state until the operator
accepts it, backing off exponentially in between, and repeats it every
``resend_interval`` so a restarted operator or a re-created record hears it again. The back-off
is capped at one second: a new leader (after a hand-over or a crash) must hear the current state
at once, and one small POST a second from each agent while there is none costs nothing.

Usage in the agent::

    reporter = StatusReporter(operator_url, namespace, name, token)
    reporter.start()
    await reporter(True, "tunnel up, local process answering")   # fits StatusCallback
    ...
    await reporter.aclose()
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass

import aiohttp

from kubetunnel.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Report:
    connected: bool
    reason: str
    counts: tuple[tuple[str, int], ...] = ()
    """A shared agent's per-intercept counters (``requests``, ``mirrorDropped``)."""


class StatusReporter:
    """POSTs ``{"connected", "reason"}`` to ``/v1/namespaces/{ns}/tunnels/{name}/status``."""

    def __init__(
        self,
        operator_url: str,
        namespace: str,
        name: str,
        token: bytes | str,
        *,
        backoff_start: float = 0.1,
        backoff_cap: float = 1.0,
        resend_interval: float = 30.0,
        timeout: float = 5.0,
    ) -> None:
        self.url = f"{operator_url.rstrip('/')}/v1/namespaces/{namespace}/tunnels/{name}/status"
        token_text = token.decode() if isinstance(token, bytes) else token
        self._headers = {"Authorization": f"Bearer {token_text.strip()}"}
        self._backoff = (backoff_start, backoff_cap)
        self._resend = resend_interval
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._wanted: Report | None = None
        self._delivered: Report | None = None
        self._changed = asyncio.Event()
        self._delivered_event = asyncio.Event()
        self._delivered_event.set()  # nothing reported yet: nothing pending
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # the token never reaches a log line
        return f"StatusReporter(url={self.url!r})"

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="kubetunnel:reporter")

    async def __call__(self, connected: bool, reason: str,
                       counts: dict[str, int] | None = None) -> None:
        """Record the latest state; returns at once (the sender delivers it)."""
        self.start()
        report = Report(connected, reason, tuple(sorted((counts or {}).items())))
        if report != self._wanted:
            self._wanted = report
            self._delivered_event.clear()
            self._changed.set()

    report = __call__

    async def wait_delivered(self) -> None:
        """Until the operator has accepted the latest reported state (tests, shutdown)."""
        await self._delivered_event.wait()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        delay = self._backoff[0]
        while True:
            if self._wanted is None or self._wanted == self._delivered:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), self._resend)
                if self._wanted is None:
                    continue
                self._changed.clear()
            report = self._wanted
            if await self._send(report):
                self._delivered = report
                if report == self._wanted:
                    self._delivered_event.set()
                delay = self._backoff[0]
                # An unchanged state is re-sent after the resend interval (see module doc).
                continue
            self._delivered = None
            with contextlib.suppress(TimeoutError):
                # A newer state cuts the back-off short: it is worth trying at once.
                await asyncio.wait_for(self._changed.wait(), delay * (0.5 + random.random()))  # noqa: S311
            delay = min(delay * 2, self._backoff[1])

    async def _send(self, report: Report) -> bool:
        assert self._session is not None
        body: dict[str, object] = {"connected": report.connected, "reason": report.reason}
        if report.counts:
            body["counts"] = dict(report.counts)
        try:
            async with self._session.post(self.url, json=body, headers=self._headers) as resp:
                if resp.status < 300:
                    log.info("agent.reported", connected=report.connected, reason=report.reason)
                    return True
                text = (await resp.text())[:200]
                log.warning("agent.report_refused", status=resp.status, body=text,
                            connected=report.connected)
                return False
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("agent.report_failed", error=f"{type(exc).__name__}: {exc}",
                        connected=report.connected)
            return False
