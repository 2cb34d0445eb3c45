"""``kubetunnel cli status`` and ``disconnect``: tunnels as the cluster records them."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click
import yaml

from kubetunnel.console import cli_options, run_async
from kubetunnel.errors import UsageError
from kubetunnel.records import TunnelRecord, check_dns_label, format_time, now
from modes.cli.options import KubeOptions, kube_options
from modes.cli.records import open_store, store_option


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
        "service": record.service,
        "client": record.client,
        "connected": record.status.connected,
        "phase": record.status.phase,
        "since": format_time(record.status.connected_since)
        if record.status.connected_since else None,
        "ports": [p.to_dict() for p in record.ports],
    }


def render_table(records: list[TunnelRecord]) -> str:
    header = ("NAMESPACE", "SERVICE", "CLIENT", "CONNECTED", "SINCE", "PORTS")
    rows = [header] + [
        (r.namespace, r.service, r.client, "yes" if r.status.connected else "no",
         _age(r.status.connected_since) if r.status.connected else "-",
         ",".join(f"{p.local_port}:{p.service_port}" for p in r.ports))
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
    else:
        click.echo("No tunnels." if all_namespaces else "No tunnels in this namespace.")


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
            raise UsageError(f"no tunnel for Service {access.namespace}/{service}")
        await store.delete(access.namespace, service)
    click.echo(f"tunnel {access.namespace}/{service} ({record.client}) ended; "
               "the operator restores the Service's selector")
