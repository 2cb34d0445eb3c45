"""``kubetunnel sandbox echo``: the echo sample workload as a (hidden) command, for demos."""

from __future__ import annotations

import click

from kubetunnel.console import common_options, run_async


@click.command("echo", hidden=True)
@click.option(
    "--host", default=None, help="Address to bind (default: $KUBETUNNEL_BIND_ADDRESS or 0.0.0.0)."
)
@click.option("--port", type=int, default=None, help="Port (default: $PORT or 8080).")
@common_options
def echo(host: str | None, port: int | None) -> None:
    """Answer every HTTP request with status 200 and this pod's name ($POD_NAME or hostname)."""
    from modes.sandbox.node.echo import serve

    run_async(serve(host, port))
