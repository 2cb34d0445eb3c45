"""Dialling a pod's port for a port-forward, with the failure worded as kubelet words it."""

from __future__ import annotations

import asyncio
import os

from kubetunnel.logging import get_logger
from modes.sandbox.node import network
from modes.sandbox.node.spdy.forwarding import DialError

log = get_logger(__name__)

DIAL_TIMEOUT = 5.0


async def dial_pod(
    pod_ip: str, pod: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``pod_ip:port``; DialError carries the text for the client's error stream."""
    try:
        async with asyncio.timeout(DIAL_TIMEOUT):
            return await network.active().open_connection(pod_ip, port)
    except (OSError, TimeoutError) as exc:
        if isinstance(exc, TimeoutError):
            reason = "i/o timeout"
        else:
            reason = f"connect: {os.strerror(exc.errno).lower()}" if exc.errno else str(exc)
        log.info("portforward.dial_failed", pod=pod, port=port, error=reason)
        # kubelet wraps the dial error of Go's net package.
        raise DialError(
            f"error forwarding port {port} to pod {pod}: failed to connect to "
            f"{pod_ip}:{port}: dial tcp4 {pod_ip}:{port}: {reason}"
        ) from None
