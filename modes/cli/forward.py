"""``kubetunnel cli forward``: every Service of some namespaces on its own 127.77.x.y address.

Each connection is routed when it arrives: through the tunnel agent (an outbound stream that
the agent dials from inside the cluster) while a ``connect`` session of this process is up for
that namespace, else through the API server's port-forward to a Ready pod of the Service,
chosen from the Service's endpoints at that moment, so a replaced pod is simply not chosen.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import signal
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from kubetunnel.console import cli_options, event_loop_option, run_async
from kubetunnel.errors import KubetunnelError, UsageError
from kubetunnel.logging import get_logger
from kubetunnel.plugins import TransportSettings, TunnelTarget
from kubetunnel.records import check_dns_label
from kubetunnel.splicing import splice
from modes.cli.cluster import require_namespace
from modes.cli.hosts import HostEntry, HostsFile, service_names
from modes.cli.options import KubeOptions, kube_options

log = get_logger(__name__)

FORWARD_CIDR = ipaddress.ip_network("127.77.0.0/16")
DEFAULT_HOSTS = "/etc/hosts"


@dataclass
class Forwarded:
    namespace: str
    service: str
    cluster_ip: str
    address: str
    ports: tuple[tuple[int, int | str, str | None], ...]  # (port, targetPort, name)


TunnelLookup = Callable[[str], Any]  # namespace -> a connected TunnelClient or None


class Forwarder:
    def __init__(self, client: Any, access: Any, namespaces: Sequence[str],
                 hosts: HostsFile | None, tunnel_for: TunnelLookup | None = None,
                 exclude: frozenset[tuple[str, str]] = frozenset()) -> None:
        self.client = client
        self.access = access
        self.namespaces = list(namespaces)
        self.hosts = hosts
        self.tunnel_for = tunnel_for or (lambda _ns: None)
        self.exclude = exclude  # (namespace, service): connect's own Service points back here
        self.forwarded: list[Forwarded] = []
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._portforward: Any = None

    async def start(self) -> list[Forwarded]:
        from kubetunnel.registry import get_registry

        self._portforward = get_registry().create(
            "transport", "portforward", TransportSettings(kube=self.access))
        used = await asyncio.to_thread(self.hosts.used_addresses) if self.hosts else set()
        addresses = (str(a) for a in FORWARD_CIDR.hosts() if str(a) not in used
                     and not str(a).endswith((".0", ".255")))
        for namespace in self.namespaces:
            listing = await self.client.get(f"/api/v1/namespaces/{namespace}/services")
            if not listing.get("items"):
                await require_namespace(self.client, namespace)
            for svc in listing.get("items", []):
                spec = svc.get("spec", {})
                if spec.get("type") == "ExternalName" or not spec.get("ports"):
                    continue
                if (namespace, svc["metadata"]["name"]) in self.exclude:
                    continue
                labels = svc["metadata"].get("labels") or {}
                if labels.get("we-dcode-app") == "kubetunnel":
                    continue  # a tunnel's origin Service: KubeTunnel's plumbing, not the app's
                entry = Forwarded(
                    namespace, svc["metadata"]["name"], spec.get("clusterIP", ""), "",
                    tuple((p["port"], p.get("targetPort", p["port"]), p.get("name"))
                          for p in spec["ports"] if p.get("protocol", "TCP") == "TCP"),
                )
                if not entry.ports:
                    continue  # UDP only: nothing to listen on
                await self._listen(entry, addresses)
                self.forwarded.append(entry)
        if self.hosts is not None:
            entries = [HostEntry(f.address, service_names(f.service, f.namespace))
                       for f in self.forwarded]
            stale = await asyncio.to_thread(self.hosts.write, entries)
            if stale:
                log.warning("hosts.repaired", stale_sessions=stale)
        return self.forwarded

    async def _listen(self, entry: Forwarded, addresses: Iterator[str]) -> None:
        """Listen on every port of the entry at the first address where all of them are free.

        The hosts file only tells which addresses this file's sessions use; a session with
        another hosts file (or --no-hosts) may hold the next one, so a busy address is skipped.
        """
        for address in addresses:
            servers: list[asyncio.Server] = []
            try:
                for port, target, name in entry.ports:
                    servers.append(await asyncio.start_server(
                        self._handler(entry, port, target, name), address, port))
            except OSError as exc:
                for server in servers:
                    server.close()
                    await server.wait_closed()
                if exc.errno == errno.EADDRINUSE:
                    continue
                where = f"{address}:{port} for {entry.service}.{entry.namespace}"
                if isinstance(exc, PermissionError):
                    raise KubetunnelError(f"cannot listen on {where}: ports below 1024 need "
                                          f"root ({exc.strerror})") from exc
                raise KubetunnelError(f"cannot listen on {where}: {exc.strerror}") from exc
            entry.address = address
            self._servers += servers
            return
        raise KubetunnelError(f"no free address left in {FORWARD_CIDR} for "
                              f"{entry.service}.{entry.namespace}")

    def _handler(self, entry: Forwarded, port: int, target: int | str,
                 name: str | None) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                               Coroutine[Any, Any, None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._connections.add(task)
            try:
                await self._route(entry, port, target, name, reader, writer)
            except asyncio.CancelledError:
                # Only aclose cancels a relay: shutdown, where ending it is the point. The task
                # must still end normally: start_server's done-callback calls .exception() on
                # it, which for a cancelled task raises and is logged as an error (3.11).
                writer.transport.abort()
            finally:
                self._connections.discard(task)

        return handle

    async def _route(self, entry: Forwarded, port: int, target: int | str, name: str | None,
                     reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tunnel = self.tunnel_for(entry.namespace)
        try:
            if tunnel is not None and tunnel.connected and entry.cluster_ip not in ("", "None"):
                stream = await tunnel.open_stream(f"{entry.cluster_ip}:{port}")
                via = "tunnel"
            else:
                pod, pod_port = await self._pick_pod(entry, port, target, name)
                stream = await self._portforward.connect(
                    TunnelTarget(entry.namespace, pod=pod, port=pod_port))
                via = f"port-forward to {pod}:{pod_port}"
        except (KubetunnelError, ConnectionError, OSError) as exc:
            log.warning("forward.failed", service=entry.service, namespace=entry.namespace,
                        port=port, error=str(exc))
            writer.close()
            return
        log.debug("forward.open", service=entry.service, namespace=entry.namespace, via=via)
        with contextlib.suppress(ConnectionError, OSError):
            await splice(reader, writer, stream)

    async def _pick_pod(self, entry: Forwarded, port: int, target: int | str,
                        name: str | None) -> tuple[str, int]:
        endpoints = await self.client.get(
            f"/api/v1/namespaces/{entry.namespace}/endpoints/{entry.service}")
        for subset in endpoints.get("subsets") or []:
            ports = subset.get("ports") or []
            match = next((p for p in ports if (name and p.get("name") == name)
                          or len(ports) == 1), None)
            for address in subset.get("addresses") or []:
                ref = address.get("targetRef") or {}
                if ref.get("kind") == "Pod" and match is not None:
                    return ref["name"], int(match["port"])
        raise KubetunnelError(f"Service {entry.namespace}/{entry.service} has no Ready pod")

    async def aclose(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        if self._portforward is not None:
            await self._portforward.aclose()
        if self.hosts is not None:
            await asyncio.to_thread(self.hosts.remove)


def address_table(forwarded: Sequence[Forwarded]) -> str:
    rows = [("ADDRESS", "SERVICE", "PORTS")] + [
        (f.address, f"{f.service}.{f.namespace}", ",".join(str(p) for p, _, _ in f.ports))
        for f in forwarded
    ]
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"{r[0].ljust(width[0])}   {r[1].ljust(width[1])}   {r[2]}" for r in rows)


def hosts_for(hosts_file: str | None, no_hosts: bool, session: str) -> HostsFile | None:
    if no_hosts:
        return None
    return HostsFile(Path(hosts_file or DEFAULT_HOSTS), session)


@click.command()
@click.option("--hosts-file", default=None, type=click.Path(dir_okay=False),
              help=f"Hosts file to write the names to (default: {DEFAULT_HOSTS}).")
@click.option("--no-hosts", is_flag=True, help="Write no hosts entries; print the addresses.")
@click.option("-N", "--forward-namespace", "namespaces", multiple=True,
              help="Forward this namespace's Services too (repeatable; default: -n's).")
@event_loop_option
@kube_options
@cli_options
def forward(kube: KubeOptions, hosts_file: str | None, no_hosts: bool,
            namespaces: tuple[str, ...]) -> None:
    """Reach the cluster's Services from this machine by name, each on its own address."""
    if hosts_file and no_hosts:
        raise click.UsageError("--hosts-file and --no-hosts exclude each other")
    for ns in namespaces:
        try:
            check_dns_label(ns, "namespace")
        except UsageError as exc:
            raise click.BadParameter(str(exc), param_hint="'-N'") from exc
    run_async(_forward(kube, hosts_file, no_hosts, namespaces))


async def _forward(kube: KubeOptions, hosts_file: str | None, no_hosts: bool,
                   namespaces: tuple[str, ...]) -> None:
    from kubetunnel.kube import KubeClient

    access = await kube.load()
    session = f"forward-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    hosts = hosts_for(hosts_file, no_hosts, session)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with KubeClient(access) as client:
            forwarder = Forwarder(client, access, namespaces or (access.namespace,), hosts)
            try:
                forwarded = await forwarder.start()
                if not forwarded:
                    listed = ", ".join(forwarder.namespaces)
                    raise KubetunnelError(
                        f"nothing to forward: no Service with a TCP port in namespace {listed} "
                        f"(kubectl -n {forwarder.namespaces[0]} get services)")
                click.echo(address_table(forwarded))
                where = f" (names in {hosts.path})" if hosts else ""
                click.echo(f"forwarding {len(forwarded)} Services{where}; Ctrl-C to stop")
                await stop.wait()
            finally:
                await forwarder.aclose()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
