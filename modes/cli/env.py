"""``kubetunnel cli env``: the environment a Service's pods run with, for a process here."""

from __future__ import annotations

import click

from kubetunnel.console import cli_options, run_async
from kubetunnel.errors import UsageError
from kubetunnel.records import check_dns_label
from modes.cli import cluster
from modes.cli.localenv import LocalOptions, local_options, prepare, write_mount
from modes.cli.localfiles import FORMATS, render, write_private
from modes.cli.options import KubeOptions, kube_options


@click.command()
@click.argument("service")
@click.option("-o", "--output", "fmt", type=click.Choice(FORMATS), default="dotenv",
              show_default=True, help="How to print the variables.")
@local_options
@kube_options
@cli_options
def env(kube: KubeOptions, local: LocalOptions, service: str, fmt: str) -> None:
    """Print the environment the pods behind SERVICE run with, resolved as the kubelet does.

    With --mount DIR the container's ConfigMap, Secret and downward-API volumes are written
    under DIR and left there (this command ends at once; remove DIR when done).
    """
    try:
        check_dns_label(service, "Service name")
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint="'SERVICE'") from exc
    run_async(_env(kube, local, service, fmt))


async def _env(kube: KubeOptions, local: LocalOptions, service_name: str, fmt: str) -> None:
    from kubetunnel.kube import KubeClient

    access = await kube.load()
    async with KubeClient(access) as client:
        service = await cluster.get_service(client, access.namespace, service_name)
        prepared = await prepare(client, service, local)
    resolved = prepared.environment()
    warnings = list(resolved.warnings)
    click.echo(f"# {prepared.choice.describe()}", err=True)
    if local.mount is not None:
        tree, more = write_mount(prepared, resolved.env)
        warnings += more
        click.echo(f"# {len(tree.files)} files written under {tree.root}", err=True)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    text = render(resolved.env, fmt)
    if local.env_file is not None:
        write_private(local.env_file, text.encode())
        click.echo(f"# {len(resolved.env)} variables written to {local.env_file}", err=True)
    else:
        click.echo(text, nl=False)
