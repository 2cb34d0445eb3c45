"""``kubetunnel cli``: the commands a developer runs on the workstation.

Subcommands load lazily, like the modes, so ``kubetunnel cli --help`` stays fast.
"""

from __future__ import annotations

import click

from kubetunnel.console import LazyGroup, common_options

COMMANDS: dict[str, tuple[str, str]] = {
    "policy": ("modes.cli.policy:policy", "Render or apply the network policies tunnels need."),
}


@click.group(cls=LazyGroup, lazy=COMMANDS)
@common_options
def cli() -> None:
    """Work with tunnels from this workstation."""
