"""The loopback kube-proxy: one TCP listener per Service ClusterIP:port.

Each accepted connection goes to the next Ready endpoint (round robin) of the endpoint list as
it is at that moment; an endpoint change replaces the list in place, so new connections follow
it at once while connections already open keep their backend until either side closes, as
conntrack keeps established flows through a kube-proxy rule change. With no endpoint the
connection is closed at once, the nearest a user-space proxy gets to kube-proxy's REJECT.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import itertools
import os
from pathlib import Path

from kubetunnel.logging import get_logger
from modes.sandbox.node import network

log = get_logger(__name__)

CHUNK = 256 * 1024
Backend = tuple[str, int]


def unprivileged_port_start() -> int:
    """The lowest port an unprivileged process may bind (Linux sysctl; 1024 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


def privileged_ports_note() -> str | None:
    """One line for ``sandbox up`` when Service ports below 1024 will not bind, else None."""
    if os.geteuid() == 0:
        return None
    start = unprivileged_port_start()
    if start == 0:
        return None
    return (
        f"note: not running as root, so Service ports below {start} cannot be bound on "
        "loopback; such Services get no ClusterIP listener (run the sandbox as root to "
        "serve them)"
    )


@dataclasses.dataclass
class PortProxy:
    """One Service port: its listener and the backends new connections go to."""

    service: str  # namespace/name:port, for logs
    address: Backend
    backends: list[Backend] = dataclasses.field(default_factory=list)
    server: asyncio.Server | None = None
    connections: set[asyncio.Task[None]] = dataclasses.field(default_factory=set)
    _turn: itertools.count[int] = dataclasses.field(default_factory=itertools.count)

    def pick(self) -> Backend | None:
        backends = self.backends
        if not backends:
            return None
        return backends[next(self._turn) % len(backends)]

    async def start(self) -> None:
        sock = await network.active().listen(*self.address)
        self.server = await asyncio.start_server(self._accept, sock=sock)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self.connections.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend = self.pick()
        try:
            if backend is None:
                log.debug("proxy.no_endpoints", service=self.service)
                return
            try:
                up_reader, up_writer = await network.active().open_connection(*backend)
            except OSError as exc:
                log.info("proxy.dial_failed", service=self.service, backend=backend, error=str(exc))
                return
            try:
                await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
            finally:
                await close(up_writer)
        finally:
            await close(writer)

    async def stop(self, *, cut: bool) -> None:
        """Close the listener; with ``cut`` (sandbox shutdown) also every open connection.

        A deleted Service or a changed port leaves open connections alone, as established
        flows outlive a kube-proxy rule change.
        """
        if self.server is not None:
            self.server.close()
        if not cut:
            return
        for task in list(self.connections):
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close, so that request/response protocols finish cleanly."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


class ServiceProxy:
    """Every Service port of the node, keyed by (namespace, name, port name)."""

    def __init__(self) -> None:
        self.ports: dict[tuple[str, str, str], PortProxy] = {}
        # Endpoints may be seen before their Service: kept here and applied on creation.
        self._backends: dict[tuple[str, str], dict[str, list[Backend]]] = {}
        # Listeners closed while connections remained open; their connections end on shutdown.
        self._retired: list[PortProxy] = []

    async def set_service(
        self, namespace: str, name: str, cluster_ip: str | None, ports: dict[str, int]
    ) -> None:
        """The Service's ClusterIP and its ports (port name -> port); listeners follow."""
        wanted = {
            (namespace, name, pname): (cluster_ip, port)
            for pname, port in ports.items()
            if cluster_ip and cluster_ip != "None"
        }
        for key in [k for k in self.ports if k[:2] == (namespace, name) and k not in wanted]:
            await self._retire(self.ports.pop(key))
        for key, (ip, port) in wanted.items():
            current = self.ports.get(key)
            if current is not None and current.address == (ip, port):
                continue
            if current is not None:
                await self._retire(self.ports.pop(key))
            proxy = PortProxy(f"{namespace}/{name}:{port}", (str(ip), port))
            try:
                await proxy.start()
            except OSError as exc:
                hint = " (ports below 1024 need root)" if exc.errno == errno.EACCES else ""
                log.warning(
                    "proxy.bind_failed",
                    service=f"{namespace}/{name}",
                    address=ip,
                    port=port,
                    error=f"{exc.strerror}{hint}",
                )
                continue
            # Read only now: Endpoints that came while binding went to _backends alone (with
            # Ready pods they follow a new Service at once), and no await separates the two.
            proxy.backends = list(self._backends.get((namespace, name), {}).get(key[2], []))
            self.ports[key] = proxy
            log.info("proxy.listening", service=f"{namespace}/{name}", address=ip, port=port)

    def set_endpoints(self, namespace: str, name: str, backends: dict[str, list[Backend]]) -> None:
        """Ready backends per port name; takes effect for the very next connection."""
        self._backends[(namespace, name)] = backends
        for (ns, svc, pname), proxy in self.ports.items():
            if (ns, svc) == (namespace, name):
                proxy.backends = list(backends.get(pname, []))

    async def remove_service(self, namespace: str, name: str) -> None:
        await self.set_service(namespace, name, None, {})

    async def synced(self) -> None:
        """Until every change so far is in effect: at once, in this process (the node's proxy
        process has to wait for its child)."""

    def remove_endpoints(self, namespace: str, name: str) -> None:
        self.set_endpoints(namespace, name, {})
        self._backends.pop((namespace, name), None)

    async def _retire(self, proxy: PortProxy) -> None:
        await proxy.stop(cut=False)
        self._retired = [p for p in self._retired if p.connections]
        if proxy.connections:
            self._retired.append(proxy)

    async def stop(self) -> None:
        ports, self.ports = self.ports, {}
        retired, self._retired = self._retired, []
        await asyncio.gather(*(p.stop(cut=True) for p in [*ports.values(), *retired]))
