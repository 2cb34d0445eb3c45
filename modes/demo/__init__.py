"""``kubetunnel demo``: the whole idea, end to end, on a local sandbox, in well under a minute.

Exit code 0 only if every expectation held. ``scenario`` is the story and its expectations;
``timeline`` prints who answered; ``local`` and ``cluster`` are the two sides; ``processes``
keeps every child process and task accounted for.
"""

from __future__ import annotations

import sys

import click

from kubetunnel.console import common_options, run_async

__all__ = ["demo"]


@click.command()
@click.option("--local-port", type=click.IntRange(1, 65535), default=None,
              help="Use your own process on this port instead of the demo's local server "
                   "(the failback steps are skipped: the demo cannot stop your process).")
@click.option("--keep", is_flag=True,
              help="Leave the sandbox running afterwards, print its kubeconfig, stop on Ctrl-C.")
@common_options
def demo(local_port: int | None, keep: bool) -> None:
    """Show KubeTunnel working on a local sandbox cluster: intercept, fail back, come back,
    disconnect. About 15 seconds; needs no cluster. Exit code 0 only if every expectation held.
    """
    from modes.demo.scenario import Demo

    sys.exit(run_async(Demo(local_port, keep).main()))
