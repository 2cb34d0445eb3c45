"""The root ``kubetunnel`` command. Modes load lazily: ``kubetunnel --help`` imports none of them,
and so neither aiohttp nor the kubernetes client.
"""

from __future__ import annotations

import sys
import traceback

import click

from kubetunnel import logging as kt_logging
from kubetunnel.console import LazyGroup, common_options
from kubetunnel.errors import KubetunnelError

# name -> ("module:attribute", one-line help shown without importing the module)
MODES: dict[str, tuple[str, str]] = {
    "cli": ("modes.cli.command:cli", "Connect a Service to a local process, forward, install."),
    "agent": ("modes.agent.command:agent", "Run the tunnel agent (inside the tunnel pod)."),
    "operator": ("modes.operator.command:operator", "Run the operator (inside the cluster)."),
    "sandbox": ("modes.sandbox.command:sandbox", "Run a local Kubernetes-compatible sandbox."),
    "demo": ("modes.demo:demo", "Show the whole idea working on a local sandbox."),
    "version": ("modes.info:version", "Print the version."),
    "plugins": ("modes.info:plugins", "List installed plugins (transports, stores, policies)."),
    "completion": ("modes.info:completion", "Print a shell completion script."),
}


@click.group(
    cls=LazyGroup,
    lazy=MODES,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@common_options
def root() -> None:
    """KubeTunnel: develop one service locally while the rest of the application runs in
    Kubernetes."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every error is one line on stderr; exit 2 for usage, 1 at run time."""
    try:
        root.main(args=argv, prog_name="kubetunnel", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("kubetunnel: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        click.echo(f"kubetunnel: error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except KubetunnelError as exc:
        click.echo(f"kubetunnel: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the last line of defence: no traceback unless asked for
        if kt_logging.debug_enabled():
            traceback.print_exc()
        click.echo(
            f"kubetunnel: internal error: {type(exc).__name__}: {exc} "
            "(run with --log-level debug for details)",
            err=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
