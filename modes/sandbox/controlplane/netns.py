"""The network namespace a real-control-plane sandbox keeps its pods and ClusterIPs in.

``ip netns add`` makes a named namespace (a file under /run/netns that outlives no one but
must be removed by whoever made it). Its loopback interface carries the pod and Service ranges
as local routes, so any address of them can be bound inside, exactly as 127.0.0.0/8 is on the
host. On the host the same ranges get ``unreachable`` routes for as long as any sandbox
namespace exists: a dial from this machine's own namespace to a pod address (a bug, since
everything that reaches pods does so from inside) then fails at once instead of leaving the
machine by the default route.

Namespaces are named ``kubetunnel-<pid>``; one whose sandbox process is gone (killed outright)
is removed by the next sandbox that starts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
from pathlib import Path

from kubetunnel.errors import KubetunnelError
from kubetunnel.logging import get_logger

log = get_logger(__name__)
NETNS_DIR = Path("/run/netns")
PREFIX = "kubetunnel-"


async def _ip(*args: str, check: bool = True) -> str:
    try:
        process = await asyncio.create_subprocess_exec(
            "ip", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError:
        raise KubetunnelError(
            "the real control plane needs the 'ip' command (iproute2) for its pod network"
        ) from None
    out, err = await process.communicate()
    if check and process.returncode != 0:
        raise KubetunnelError(f"ip {' '.join(args)}: {err.decode().strip()}")
    return out.decode()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PodNamespace:
    """``await create()`` / ``await remove()``: the namespace, its routes and the host guard."""

    def __init__(self, ranges: tuple[str, ...], name: str | None = None) -> None:
        self.name = name or f"{PREFIX}{os.getpid()}"
        self.ranges = tuple(str(ipaddress.ip_network(r)) for r in ranges)
        self.path = str(NETNS_DIR / self.name)
        self._created = False

    async def create(self) -> None:
        if os.geteuid() != 0:
            raise KubetunnelError(
                "the real control plane's pod network needs root (it creates a network "
                "namespace); run as root or use --control-plane builtin")
        await collect_stale()
        await _ip("netns", "add", self.name)
        self._created = True
        await _ip("-n", self.name, "link", "set", "lo", "up")
        for network in self.ranges:
            await _ip("-n", self.name, "route", "add", "local", network, "dev", "lo")
            # Another sandbox may have added the guard already; that one is as good.
            await _ip("route", "replace", "unreachable", network, "proto", "static",
                      "metric", "4242")
        log.info("netns.created", name=self.name, ranges=list(self.ranges))

    async def remove(self) -> None:
        if not self._created:
            return
        self._created = False
        await _ip("netns", "delete", self.name, check=False)
        if not _live_namespaces():
            for network in self.ranges:
                await _ip("route", "delete", "unreachable", network, "metric", "4242",
                          check=False)
        log.info("netns.removed", name=self.name)


def _live_namespaces() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return [p.name for p in NETNS_DIR.iterdir() if p.name.startswith(PREFIX)]


async def collect_stale() -> None:
    """Remove the namespaces of sandboxes that were killed before they could."""
    for name in _live_namespaces():
        match = re.fullmatch(rf"{PREFIX}(\d+)", name)
        if match and not _alive(int(match.group(1))):
            await _ip("netns", "delete", name, check=False)
            log.info("netns.collected", name=name)
