"""``kubetunnel cli``: the commands a developer runs on the workstation.

Subcommands load lazily, like the modes, so ``kubetunnel cli --help`` stays fast.
"""

from __future__ import annotations

import click

from kubetunnel.console import LazyGroup, cli_options

COMMANDS: dict[str, tuple[str, str]] = {
    "install": ("modes.cli.install:install", "Install or update the operator in the cluster."),
    "uninstall": ("modes.cli.install:uninstall", "Remove the operator and what install created."),
    "connect": ("modes.cli.connect:connect", "Send a Service's cluster traffic to a local port."),
    "forward": ("modes.cli.forward:forward", "Reach the cluster's Services from here by name."),
    "env": ("modes.cli.env:env", "Print the environment a Service's pods run with."),
    "status": ("modes.cli.status:status", "List tunnels and whether they are connected."),
    "disconnect": ("modes.cli.status:disconnect", "End a tunnel from another terminal."),
    "policy": ("modes.cli.policy:policy", "Render or apply the network policies tunnels need."),
}


@click.group(cls=LazyGroup, lazy=COMMANDS)
@cli_options
def cli() -> None:
    """Work with tunnels from this workstation."""
