"""The end of ``cli connect`` without cutting a request: the Service is restored first, then the
connections in flight through the tunnel get time to finish, then the tunnel closes.

Order matters. The agent is told at once that the CLI is going ("not answering"), so every new
connection goes to the cluster's pods through the agent's own path, whether or not the operator
is there to restore the selector; the agent's "disconnected" report makes the operator restore
it. Only once the Service selects its own pods again (or the time is up) and no stream is open
does the tunnel close: a stream cut then would be a request lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from kubetunnel.errors import KubetunnelError
from kubetunnel.logging import get_logger
from kubetunnel.plugins import Store
from kubetunnel.records import TunnelRecord
from modes.cli.progress import Progress

log = get_logger(__name__)

DEFAULT_DRAIN_TIMEOUT = 10.0


async def drain(tunnel: Any, store: Store, record: TunnelRecord, timeout: float,
                progress: Progress, forced: asyncio.Event, reason: str) -> None:
    """Until the Service is restored and no stream is open, ``timeout`` at most; ``forced`` (a
    second Ctrl-C) ends the wait at once."""
    tunnel.drain(reason)
    started = time.monotonic()
    restored = False
    while True:
        if not restored:
            restored = await _restored(store, record)
        streams = tunnel.inbound_streams() if tunnel.connected else 0
        waited = time.monotonic() - started
        if restored and streams == 0:
            log.info("connect.drained", seconds=round(waited, 3))
            return
        if waited >= timeout or forced.is_set():
            log.warning("connect.drain_cut", streams=streams, restored=restored,
                        seconds=round(waited, 3))
            if streams:
                progress.note(f"drain ended after {waited:.1f}s: {streams} connection(s) still "
                              "open are cut")
            return
        what = "Service restored" if restored else "restoring the Service"
        progress.live(f"  draining: {what}, {streams} connection(s) in flight "
                      f"({waited:.1f}s of {timeout:.0f}s; Ctrl-C again to stop now)")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(forced.wait(), 0.05)


async def _restored(store: Store, record: TunnelRecord) -> bool:
    try:
        current = await store.get(record.namespace, record.name)
    except KubetunnelError as exc:
        log.warning("connect.drain_read_failed", error=str(exc))
        return False
    return current is None or not current.status.connected


