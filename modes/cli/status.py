"""``kubetunnel cli status`` and ``disconnect``: tunnels as the cluster records them."""

from __future__ import annotations

import contextlib
import getpass
import json
import socket
from datetime import datetime
from typing import Any

import click
import yaml

from kubetunnel.console import cli_options, run_async
from kubetunnel.errors import NotFound, UsageError
from kubetunnel.intercepts import Intercepts, Mode
from kubetunnel.records import TunnelRecord, check_dns_label, format_time, now
from modes.cli.options import KubeOptions, kube_options
from modes.cli.records import open_store, store_option


def client_identity() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"  # as cli connect writes it


def _age(since: datetime | None) -> str:
    if since is None:
        return "-"
    seconds = int((now() - since).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _row(record: TunnelRecord) -> dict[str, Any]:
    return {
        "namespace": record.namespace,
        "name": record.name,
        "service": record.service,
        "client": record.client,
        "mode": record.mode.value,
        "filter": record.filter.to_dict() if record.shared else None,
        "requests": record.status.requests,
        "mirrorDropped": record.status.mirror_dropped,
        "connected": record.status.connected,
        "phase": record.status.phase,
        "since": format_time(record.status.connected_since)
        if record.status.connected_since else None,
        "ports": [p.to_dict() for p in record.ports],
    }


def _requests(record: TunnelRecord) -> str:
    if not record.shared:
        return "-"
    if record.mode is Mode.MIRROR:
        return f"{record.status.requests} ({record.status.mirror_dropped} dropped)"
    return str(record.status.requests)


def render_table(records: list[TunnelRecord]) -> str:
    header = ("NAMESPACE", "SERVICE", "CLIENT", "MODE", "CONNECTED", "SINCE", "REQUESTS",
              "PORTS", "FILTER")
    rows = [header] + [
        (r.namespace, r.service, r.client, r.mode.value, "yes" if r.status.connected else "no",
         _age(r.status.connected_since) if r.status.connected else "-", _requests(r),
         ",".join(f"{p.local_port}:{p.service_port}" for p in r.ports),
         r.filter.describe() if r.shared else "-")
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "   ".join([*(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)), row[-1]])
        for row in rows
    )


@click.command()
@click.option("-A", "--all-namespaces", is_flag=True, help="Tunnels of every namespace.")
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table",
              show_default=True, help="Output format; json and yaml add the phase.")
@store_option
@kube_options
@cli_options
def status(kube: KubeOptions, all_namespaces: bool, output: str, store: str) -> None:
    """List tunnels: namespace, service, client, connected, since, ports."""
    records = run_async(_list(kube, store, all_namespaces))
    if output == "json":
        click.echo(json.dumps([_row(r) for r in records], indent=2))
    elif output == "yaml":
        click.echo(yaml.safe_dump([_row(r) for r in records], sort_keys=False), nl=False)
    elif records:
        click.echo(render_table(records))
        for warning in overlaps(records):
            click.echo(f"warning: {warning}", err=True)
    else:
        click.echo("No tunnels." if all_namespaces else "No tunnels in this namespace.")


def overlaps(records: list[TunnelRecord]) -> list[str]:
    """Filtered intercepts on one Service that one request could both match: the older wins."""
    warnings = []
    services = sorted({(r.namespace, r.service) for r in records})
    for namespace, service in services:
        mine = Intercepts(r.intercept() for r in records
                          if (r.namespace, r.service) == (namespace, service))
        for later in mine:
            for earlier in mine.overlapping(later):
                if earlier.order < later.order:
                    warnings.append(
                        f"on {namespace}/{service} the filters of {earlier.describe()} and "
                        f"{later.describe()} overlap: a request both match goes to "
                        f"{earlier.holder or earlier.id} (first made wins)")
    return warnings


async def _list(kube: KubeOptions, store_name: str, all_namespaces: bool) -> list[TunnelRecord]:
    access = await kube.load()
    async with open_store(store_name, access) as store:
        return await store.list(None if all_namespaces else access.namespace)


@click.command()
@click.argument("service")
@store_option
@kube_options
@cli_options
def disconnect(kube: KubeOptions, service: str, store: str) -> None:
    """End the tunnel of SERVICE, from any terminal (the connect session then exits)."""
    try:
        check_dns_label(service, "Service name")
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint="'SERVICE'") from exc
    run_async(_disconnect(kube, store, service))


async def _disconnect(kube: KubeOptions, store_name: str, service: str) -> None:
    access = await kube.load()
    async with open_store(store_name, access) as store:
        record = await store.get(access.namespace, service)
        if record is None:
            # Filtered and mirrored intercepts are named <service>-<hex>: end this client's.
            me = client_identity()
            mine = [r for r in await store.list(access.namespace)
                    if r.service == service and r.client == me and r.shared]
            if not mine:
                raise UsageError(f"no tunnel for Service {access.namespace}/{service}")
            for intercept in mine:
                with contextlib.suppress(NotFound):
                    await store.delete(access.namespace, intercept.name)
                click.echo(f"intercept {access.namespace}/{intercept.name} "
                           f"({intercept.mode.value}: {intercept.filter.describe()}) ended")
            return
        await store.delete(access.namespace, service)
    click.echo(f"tunnel {access.namespace}/{service} ({record.client}) ended; "
               "the operator restores the Service's selector")
