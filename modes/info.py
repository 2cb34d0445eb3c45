"""``kubetunnel version``, ``plugins`` and ``completion``: facts about this build."""

from __future__ import annotations

import json
import platform
import sys

import click

from kubetunnel import __version__
from kubetunnel.console import common_options, handles_errors
from kubetunnel.registry import KINDS, get_registry, parse_kind


@click.command()
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Output format.")
@common_options
def version(output: str) -> None:
    """Print the version of this build."""
    facts = {
        "version": __version__,
        "python": platform.python_version(),
        "platform": f"{sys.platform}/{platform.machine()}",
    }
    if output == "json":
        click.echo(json.dumps(facts))
    else:
        click.echo(f"kubetunnel {facts['version']} (python {facts['python']}, {facts['platform']})")


@click.group(invoke_without_command=True)
@click.option(
    "--kind", type=click.Choice(KINDS), default=None, help="Only plugins of this kind."
)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
@common_options
@click.pass_context
@handles_errors
def plugins(ctx: click.Context, kind: str | None, output: str) -> None:
    """List installed plugins: kind, name, provider distribution, module.

    Plugins are found through entry points; this does not import them.
    """
    if ctx.invoked_subcommand is not None:
        return
    rows = get_registry().list(parse_kind(kind) if kind else None)
    if output == "json":
        click.echo(json.dumps([
            {"kind": p.kind, "name": p.name, "distribution": p.distribution, "module": p.module}
            for p in rows
        ]))
        return
    table = [("KIND", "NAME", "DISTRIBUTION", "MODULE")]
    table += [(p.kind, p.name, p.distribution, p.module) for p in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("   ".join([*cells, row[3]]))


@plugins.command("show")
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("name")
@common_options
@handles_errors
def show(kind: str, name: str) -> None:
    """Load one plugin and describe it (fails if it cannot be imported)."""
    registry = get_registry()
    info = registry.info(parse_kind(kind), name)
    factory = registry.load(info.kind, name)
    doc = (getattr(factory, "__doc__", None) or "").strip().splitlines()
    click.echo(f"{info.kind} {info.name}")
    click.echo(f"  distribution: {info.distribution}")
    click.echo(f"  entry point:  {info.value}")
    if doc:
        click.echo(f"  summary:      {doc[0]}")


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the completion script for SHELL; e.g. eval "$(kubetunnel completion bash)"."""
    from click.shell_completion import get_completion_class

    from modes.main import root

    cls = get_completion_class(shell)
    if cls is None:  # click knows all three; kept for a click that drops one
        raise click.UsageError(f"unsupported shell {shell!r}")
    comp = cls(root, {}, "kubetunnel", "_KUBETUNNEL_COMPLETE")
    click.echo(comp.source())
