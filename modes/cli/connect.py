"""``kubetunnel cli connect``: the whole loop a developer sits in.

Steps, each shown with its time: the record is written, the operator starts the tunnel pod,
the tunnel comes up, the local process answers, the operator switches the Service. Then one
live line until Ctrl-C or SIGTERM, after which the record is deleted and we wait until the
operator has restored the selector and removed the tunnel objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import click

from kubetunnel.console import PluginChoice, cli_options, event_loop_option, run_async
from kubetunnel.errors import AlreadyExists, KubetunnelError, NotFound, UsageError
from kubetunnel.filters import Filter, make_filter
from kubetunnel.intercepts import Mode
from kubetunnel.logging import get_logger
from kubetunnel.plugins import Store, TransportSettings, TunnelTarget
from kubetunnel.records import TunnelRecord, check_dns_label, now
from kubetunnel.registry import get_registry
from modes.cli import cluster
from modes.cli.draining import DEFAULT_DRAIN_TIMEOUT, drain
from modes.cli.intercepting import (
    check_intercepts,
    intercept_counts,
    intercept_name,
    non_http_ports,
)
from modes.cli.launching import CommandAfterDashes, LocalSession, command_after_dashes
from modes.cli.liveline import Observed, RecordFollower, Switches, describe, route
from modes.cli.localenv import LocalOptions, local_options
from modes.cli.options import KubeOptions, kube_options
from modes.cli.ports import PortMappingType, PortRequest, resolve_ports
from modes.cli.progress import Progress
from modes.cli.records import open_store, store_option

log = get_logger(__name__)


def client_identity() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


@dataclass
class Settings:
    service: str
    ports: tuple[PortRequest, ...]
    local_host: str
    transport: str
    store: str
    operator_namespace: str
    lease_ttl: int
    wait_local: bool
    forward: bool
    hosts_file: str | None
    pod_timeout: float
    tls_ca: str | None = None
    address: str | None = None
    no_hosts: bool = False
    identity: str = field(default_factory=client_identity)
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    mode: Mode = Mode.EXCLUSIVE
    filter: Filter = field(default_factory=Filter)


@click.command(cls=CommandAfterDashes)
@click.argument("service")
@click.option("-p", "--port", "ports", type=PortMappingType(), multiple=True, required=True,
              help="LOCAL:REMOTE; REMOTE is a Service port number or name. Repeatable.")
@click.option("--local-host", default="127.0.0.1", show_default=True,
              help="Where the local process listens.")
@click.option("--transport", type=PluginChoice("transport"), default="portforward",
              show_default=True, help="How to reach the tunnel pod.")
@click.option("--address", default=None,
              help="host:port of the agent's tunnel port (for the direct transport).")
@click.option("--tls-ca", default=None, type=click.Path(dir_okay=False),
              help="CA bundle for the direct transport's TLS.")
@click.option("--forward/--no-forward", default=True, show_default=True,
              help="Also forward the namespace's Services to this machine.")
@click.option("--hosts-file", default=None, type=click.Path(dir_okay=False),
              help="Hosts file for --forward names (default: /etc/hosts).")
@click.option("--no-hosts", is_flag=True, help="With --forward, write no hosts entries.")
@click.option("--wait-local/--no-wait-local", default=True, show_default=True,
              help="Wait for the local process instead of failing when it is not up.")
@click.option("--lease-ttl", type=click.IntRange(5, 3600), default=60, show_default=True,
              help="Seconds after which the operator cleans up if this CLI dies.")
@click.option("--operator-namespace", default="kubetunnel", show_default=True,
              help="Namespace the operator was installed in (cli install -n).")
@click.option("--timeout", "pod_timeout", type=click.FloatRange(min=1), default=120,
              show_default=True, help="Seconds to wait for the tunnel pod.")
@click.option("--start-timeout", type=click.FloatRange(min=1), default=60, show_default=True,
              help="Seconds for the -- COMMAND to listen on its ports.")
@click.option("--drain-timeout", type=click.FloatRange(min=0), default=DEFAULT_DRAIN_TIMEOUT,
              show_default=True,
              help="On Ctrl-C or disconnect: seconds that requests in flight get to finish, "
                   "after the Service is restored and before the tunnel closes.")
@click.option("--header", "headers", multiple=True, metavar="NAME=VALUE|NAME~REGEX",
              help="Only HTTP requests with this header value (or whose value the regular "
                   "expression matches whole) come here; the rest go to the cluster. "
                   "Repeatable: all must match.")
@click.option("--path-prefix", default=None, metavar="PREFIX",
              help="Only HTTP requests whose path starts with PREFIX come here.")
@click.option("--mirror", is_flag=True,
              help="The cluster keeps answering every request; a copy of each (matching) "
                   "request comes here and its answer is discarded.")
@local_options
@event_loop_option
@store_option
@kube_options
@cli_options
def connect(kube: KubeOptions, service: str, ports: tuple[PortRequest, ...], local_host: str,
            transport: str, address: str | None, tls_ca: str | None, forward: bool,
            hosts_file: str | None, no_hosts: bool, wait_local: bool, lease_ttl: int,
            operator_namespace: str, pod_timeout: float, drain_timeout: float, store: str,
            local: LocalOptions, start_timeout: float, headers: tuple[str, ...],
            path_prefix: str | None, mirror: bool) -> None:
    """Send the cluster's traffic for SERVICE to a process on this machine.

    After '--', the local process to run with the environment (and, with --mount, the config
    files) of the Service's pods: the Service is switched once it listens, and the tunnel ends
    when it exits, with its exit code.
    """
    try:
        check_dns_label(service, "Service name")
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint="'SERVICE'") from exc
    if transport == "direct" and not address:
        raise click.UsageError("--transport direct needs --address HOST:PORT")
    if hosts_file and no_hosts:
        raise click.UsageError("--hosts-file and --no-hosts exclude each other")
    try:
        wanted = make_filter(headers, path_prefix)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc
    mode = Mode.MIRROR if mirror else Mode.FILTERED if not wanted.empty else Mode.EXCLUSIVE
    settings = Settings(service, ports, local_host, transport, store, operator_namespace,
                        lease_ttl, wait_local, forward, hosts_file, pod_timeout, tls_ca, address,
                        no_hosts, drain_timeout=drain_timeout, mode=mode, filter=wanted)
    command = command_after_dashes()
    settings.wait_local = wait_local or bool(command)  # the process may take its time to listen
    connection = Connection(kube, settings)
    if command or local.wanted:
        connection.local = LocalSession(local, command, start_timeout=start_timeout,
                                        note=connection.progress.note)
    run_async(connection.run())
    if connection.local is not None and connection.local.exit_code is not None:
        sys.exit(connection.local.exit_code)


class Connection:
    def __init__(self, kube: KubeOptions, settings: Settings) -> None:
        self.kube = kube
        self.s = settings
        self.progress = Progress()
        self.stop = asyncio.Event()
        self.forced = asyncio.Event()  # a second Ctrl-C: stop draining
        self.stop_reason = ""
        self._trouble: str | None = None  # the operator's reconcile error last shown
        self.local: LocalSession | None = None  # the -- COMMAND, --env-file, --mount
        self.intercept: dict[str, Any] | None = None  # told to a shared agent in the HELLO

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            access = await self.kube.load()
            from kubetunnel.kube import KubeClient

            async with KubeClient(access) as client, open_store(self.s.store, access) as store:
                await self._run(access, client, store)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        # While the -- COMMAND runs, a signal is its to handle; its exit then ends the tunnel.
        if self.local is None or not self.local.relay(sig):
            self._request_stop(f"received {sig.name}")

    def _request_stop(self, reason: str) -> None:
        if self.stop.is_set():
            self.forced.set()
            return
        self.stop_reason = reason
        self.stop.set()

    async def _run(self, access: Any, client: Any, store: Store) -> None:
        ns = access.namespace
        service = await cluster.get_service(client, ns, self.s.service)
        mappings = resolve_ports(service, self.s.ports)
        await cluster.require_operator(client, self.s.operator_namespace)
        await check_intercepts(store, ns, self.s, self.progress.note)
        if self.s.mode is not Mode.EXCLUSIVE:
            for warning in non_http_ports(service, mappings):
                self.progress.note(f"warning: {warning}")
        if not self.s.wait_local:
            await self._require_local(mappings)
        if self.local is not None:  # a missing ConfigMap or Secret stops us before any change
            await self.local.prepare(client, service)
        record = await self._create_record(store, ns, mappings)
        self.progress.step(f"record {ns}/{record.name} written (client {self.s.identity})")
        renewer = asyncio.create_task(self._renew(store, record), name="connect:renew")
        tunnel = None
        transport = None
        forwarder = None
        try:
            pod = await self._wait_pod(client, store, record)
            self.intercept = record.intercept().to_dict() if record.shared else None
            self.progress.step(f"tunnel pod {pod['metadata']['name']} ready")
            token = await cluster.tunnel_token(client, ns, record)
            transport = get_registry().create("transport", self.s.transport, TransportSettings(
                kube=access, tls_ca=self.s.tls_ca))
            tunnel = await self._open_tunnel(transport, pod, token, mappings)
            if self.s.forward:
                forwarder = await self._start_forward(client, access, tunnel)
            if self.local is not None:
                addresses = {f.service: f.address for f in forwarder.forwarded
                             if f.namespace == ns} if forwarder is not None else None
                await self.local.start(addresses, self.s.local_host,
                                       [m.local_port for m in mappings], self._request_stop,
                                       self.stop)
            await self._serve(store, record, tunnel)
            await drain(tunnel, store, record, self.s.drain_timeout, self.progress, self.forced,
                        f"the CLI is disconnecting ({self.stop_reason or 'stopped'})")
        finally:
            if self.local is not None:
                await self.local.aclose()
            if forwarder is not None:
                await forwarder.aclose()
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            if tunnel is not None:
                await tunnel.aclose(grace=1.0)
            if transport is not None:
                await transport.aclose()
            await self._cleanup(client, store, record)

    async def _require_local(self, mappings: Any) -> None:
        """--no-wait-local: fail before the cluster is touched, not after a tunnel pod exists."""
        down = []
        for port in dict.fromkeys(m.local_port for m in mappings):
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.s.local_host, port), 5)
            except (OSError, TimeoutError):
                down.append(f"{self.s.local_host}:{port}")
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if down:
            raise KubetunnelError(f"nothing answers on {', '.join(down)} (start your process "
                                  "first, or drop --no-wait-local to wait for it)")

    async def _create_record(self, store: Store, ns: str, mappings: Any) -> TunnelRecord:
        shared = self.s.mode is not Mode.EXCLUSIVE
        record = TunnelRecord(
            namespace=ns, name=intercept_name(self.s.service) if shared else self.s.service,
            service=self.s.service, ports=mappings, client=self.s.identity,
            lease_ttl_seconds=self.s.lease_ttl, renewed_at=now(), mode=self.s.mode,
            filter=self.s.filter,
        )
        try:
            return await store.create(record)
        except AlreadyExists:
            existing = await store.get(ns, self.s.service)
            holder = existing.client if existing else "someone"
            raise UsageError(
                f"Service {ns}/{self.s.service} is already tunneled by {holder}; "
                f"ask them to disconnect, or run 'kubetunnel cli disconnect {self.s.service}'"
            ) from None

    async def _renew(self, store: Store, record: TunnelRecord) -> None:
        """Renew the lease at a third of its TTL; a killed CLI simply stops renewing."""
        interval = max(1.0, record.lease_ttl_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                current = await store.get(record.namespace, record.name)
                if current is None or current.deleting:
                    self._request_stop("the tunnel record was deleted (disconnect from elsewhere)")
                    return
                await store.replace(current.replace(renewed_at=now()))
            except KubetunnelError as exc:
                log.warning("lease.renew_failed", error=str(exc))

    def _show_trouble(self, current: TunnelRecord | None) -> None:
        """Say once, while it lasts, why the operator cannot do its part (an RBAC denial)."""
        if current is None:
            return  # the record is gone: the caller says so
        trouble = current.status.trouble()
        if trouble is not None and trouble != self._trouble:
            self.progress.note(f"operator: {trouble}")
        elif trouble is None and self._trouble is not None:
            self.progress.note("operator: working again")
        self._trouble = trouble

    async def _wait_pod(self, client: Any, store: Store, record: TunnelRecord) -> Any:
        deadline = time.monotonic() + self.s.pod_timeout
        while not self.stop.is_set():
            current = await store.get(record.namespace, record.name)
            self._show_trouble(current)
            if current is not None and current.status.phase == "Failed":
                message = next((c.message for c in current.status.conditions
                                if c.status == "False" and c.message), "the operator refused")
                raise KubetunnelError(f"tunnel failed: {message}")
            pod, why = await cluster.agent_pod(client, record)  # the shared one, if filtered
            if pod is not None:
                return pod
            if time.monotonic() > deadline:
                raise KubetunnelError(
                    f"the tunnel pod was not Ready after {self.s.pod_timeout:.0f}s ({why}); see "
                    f"'kubectl -n {record.namespace} describe deployment "
                    f"kubetunnel-{record.service}'"
                )
            self.progress.live(
                f"  waiting for the tunnel pod: {why} ({self.progress.elapsed():.0f}s)"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.25)
        raise KubetunnelError(f"stopped while waiting for the tunnel pod: {self.stop_reason}")

    async def _open_tunnel(self, transport: Any, pod: Any, token: str, mappings: Any) -> Any:
        from kubetunnel.tunnel.client import ClientOptions, Route, TunnelClient

        ports = cluster.agent_ports(pod, mappings)
        cluster.refuse_shared_agent_ports(ports, mappings)
        routes = [Route(agent_port=ports[m.service_port], local_port=m.local_port,
                        local_host=self.s.local_host) for m in mappings]
        target = TunnelTarget(pod["metadata"]["namespace"], pod=pod["metadata"]["name"],
                              port=ports["tunnel"], address=self.s.address)
        tunnel = TunnelClient(transport, target, token, routes, client_id=self.s.identity,
                              options=ClientOptions(probe_interval=0.2, probe_timeout=0.5),
                              intercept=self.intercept)
        tunnel.start()
        try:
            await tunnel.wait_connected(timeout=30)
        except TimeoutError:
            await tunnel.aclose()
            raise KubetunnelError(f"the tunnel did not come up within 30s via {self.s.transport}"
                                  ) from None
        except KubetunnelError:
            await tunnel.aclose()
            raise
        self.progress.step(f"tunnel up via {self.s.transport}")
        return tunnel

    async def _start_forward(self, client: Any, access: Any, tunnel: Any) -> Any:
        from modes.cli.forward import Forwarder, address_table, hosts_for

        ns = access.namespace
        session = f"connect-{self.s.service}-{os.getpid()}"
        hosts = hosts_for(self.s.hosts_file, self.s.no_hosts, session)
        forwarder = Forwarder(client, access, [ns], hosts,
                              tunnel_for=lambda n: tunnel if n == ns else None,
                              exclude=frozenset({(ns, self.s.service)}))
        try:
            forwarded = await forwarder.start()
        except BaseException:
            await forwarder.aclose()
            raise
        where = f"names in {hosts.path}" if hosts else "no hosts entries"
        self.progress.step(f"forwarding {len(forwarded)} Services of {ns} ({where})")
        labels = {"we-dcode-app": "kubetunnel", cluster.TUNNEL_LABEL: self.s.service}
        warning = await cluster.namespace_egress_warning(client, ns, labels)
        if warning:
            self.progress.note(f"warning: {warning}")
        if hosts is None:
            for line in address_table(forwarded).splitlines():
                self.progress.note(line)
        return forwarder

    async def _serve(self, store: Store, record: TunnelRecord, tunnel: Any) -> None:
        local = ", ".join(f"{self.s.local_host}:{m.local_port}" for m in record.ports)
        announced_wait = False
        while tunnel.local_answering is not True and not self.stop.is_set():
            if not self.s.wait_local and tunnel.local_answering is False:
                raise KubetunnelError(f"nothing answers on {local} (start your process "
                                      "first, or drop --no-wait-local to wait for it)")
            if tunnel.local_answering is False and not announced_wait:
                self.progress.note(f"waiting for your local process on {local} ...")
                announced_wait = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.1)
        if self.stop.is_set():
            return
        self.progress.step(f"local process answering on {local}")
        follower = RecordFollower(store, record)
        follower.start()
        try:
            await self._follow(record, tunnel, follower, local)
        finally:
            await follower.aclose()
        self.progress.done()

    async def _follow(self, record: TunnelRecord, tunnel: Any, follower: RecordFollower,
                      local: str) -> None:
        """The live line, until stopped: every 100 ms, and at once when the record changes."""
        switched = False
        answering = True
        switches = Switches()
        up_since: float | None = None
        while not self.stop.is_set():
            current = follower.current
            if follower.gone or current is None or current.deleting:
                self._request_stop("the tunnel was ended from elsewhere")
                break
            self._show_trouble(current)
            if current.status.phase == "Failed":  # e.g. lost a race to a conflicting connect
                message = next((c.message for c in current.status.conditions
                                if c.status == "False" and c.message), "the operator refused")
                raise KubetunnelError(f"tunnel failed: {message}")
            if current.status.connected and not switched:
                self.progress.step(f"traffic switched: Service {record.namespace}/"
                                   f"{record.service} -> {local}")
            switched = current.status.connected
            if tunnel.local_answering is not None and tunnel.local_answering != answering:
                answering = tunnel.local_answering
                if answering:
                    self.progress.note("local process is back: traffic returns to it")
                else:
                    self.progress.note(f"local process stopped ({tunnel.local_reason}): "
                                       "traffic goes back to the cluster")
            failure = tunnel.failure
            if failure is not None:
                raise failure
            wants_up = bool(tunnel.connected and tunnel.local_answering)
            up_since = (up_since or time.monotonic()) if wants_up else None
            seen = Observed(
                tunnel_up=tunnel.connected, answering=tunnel.local_answering,
                draining=tunnel.draining is not None, switched=switched,
                agent_ready=_condition(current, "AgentReady"),
                agent_reported_up=_condition(current, "AgentConnected") is True,
                up_for=time.monotonic() - up_since if up_since is not None else 0.0)
            where = route(seen)
            change = switches.update(where)
            if change is not None:
                self.progress.note(change)
            session = tunnel.session
            streams = len(session.streams) if session is not None else 0
            to_local = _size(session.bytes_received) if session is not None else "0 B"
            from_local = _size(session.bytes_sent) if session is not None else "0 B"
            self.progress.live(
                f"  traffic -> {describe(*where)} | tunnel "
                f"{'up' if tunnel.connected else 'reconnecting'} | streams open {streams}"
                f" | to local {to_local}, from local {from_local}"
                f" | last switch {switches.last_change}"
                + intercept_counts(current)
            )
            follower.changed.clear()
            waiters = {asyncio.ensure_future(self.stop.wait()),
                       asyncio.ensure_future(follower.changed.wait())}
            await asyncio.wait(waiters, timeout=0.1, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    async def _cleanup(self, client: Any, store: Store, record: TunnelRecord) -> None:
        """Delete the record and wait until the operator restored the Service (finalizer)."""
        self.progress.done()
        with contextlib.suppress(NotFound):
            await store.delete(record.namespace, record.name)
        deadline = time.monotonic() + 30
        while await store.get(record.namespace, record.name) is not None:
            if time.monotonic() > deadline:
                raise KubetunnelError(
                    f"the operator did not finish cleaning up {record.namespace}/{record.name} "
                    "within 30s; it will when it runs again (kubetunnel cli status)"
                )
            self.progress.live(f"  restoring Service {record.namespace}/{record.service} ...")
            await asyncio.sleep(0.1)
        self.progress.step(f"disconnected: Service {record.namespace}/{record.service} restored"
                           + (f" ({self.stop_reason})" if self.stop_reason else ""))


def _condition(record: TunnelRecord, kind: str) -> bool | None:
    found = next((c for c in record.status.conditions if c.type == kind), None)
    return None if found is None else found.status == "True"


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
