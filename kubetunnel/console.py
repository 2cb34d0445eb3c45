"""What every command shares: the logging options, one-line errors, plugin-name options.

Lives in the core so that each mode builds its commands the same way without importing another.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from kubetunnel import logging as kt_logging
from kubetunnel.errors import KubetunnelError
from kubetunnel.loops import CHOICES as EVENT_LOOPS
from kubetunnel.registry import Kind

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _set_logging(ctx: click.Context, param: click.Parameter, value: Any, *,
                 default_level: str) -> Any:
    # ctx.meta is shared by the whole context tree, so an option given on the root group holds
    # for the subcommand too, and one given on the subcommand wins. The innermost command's
    # default wins as well: its callbacks run last.
    if value is not None:
        ctx.meta[f"kubetunnel.{param.name}"] = value
    ctx.meta["kubetunnel.default_log_level"] = default_level
    kt_logging.configure(
        ctx.meta.get("kubetunnel.log_level", default_level), ctx.meta.get("kubetunnel.log_format")
    )
    return value


def log_options(default_level: str = "info") -> Callable[[F], F]:
    """``--log-level`` and ``--log-format`` with the given default level, which the help states.

    The workstation CLI prints its own progress, so its commands default to warning; the
    long-running modes (agent, operator, sandbox) default to info.
    """
    callback = functools.partial(_set_logging, default_level=default_level)

    def decorate(f: F) -> F:
        f = click.option(
            "--log-format",
            type=click.Choice(["console", "json"]),
            default=None,
            expose_value=False,
            callback=callback,
            help="Log output on stderr: console (default on a terminal) or json (otherwise).",
        )(f)
        return click.option(
            "--log-level",
            type=click.Choice(kt_logging.LEVELS, case_sensitive=False),
            default=None,
            expose_value=False,
            callback=callback,
            help=f"Minimum level of log events (default: {default_level}). debug also shows "
            "tracebacks.",
        )(f)

    return decorate


def common_options(f: F) -> F:
    """``--log-level`` (default info) and ``--log-format``, accepted on every command."""
    return log_options()(f)


def cli_options(f: F) -> F:
    """``--log-level`` (default warning) and ``--log-format`` for the workstation commands."""
    return log_options("warning")(f)


def _set_event_loop(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from kubetunnel.loops import install_event_loop

    try:
        loop = install_event_loop(value)
    except ImportError:
        raise click.BadParameter("uvloop is not installed (use auto or asyncio)") from None
    kt_logging.get_logger(__name__).debug("event_loop", loop=loop)
    return loop


def event_loop_option(f: F) -> F:
    """``--event-loop`` for the commands that relay bytes (agent, ``cli connect``, ``cli
    forward``): uvloop by default when installed, as measured in docs/performance.md."""
    return click.option(
        "--event-loop",
        type=click.Choice(EVENT_LOOPS),
        default="auto",
        show_default=True,
        envvar="KUBETUNNEL_EVENT_LOOP",
        expose_value=False,
        callback=_set_event_loop,
        help="auto: uvloop if installed (faster relaying), else asyncio's own loop.",
    )(f)


class PluginChoice(click.ParamType):  # type: ignore[type-arg]
    """A plugin name of one kind, checked against the registry without importing the plugin."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.name = f"{kind}"

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return "NAME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from kubetunnel.registry import get_registry

        names = get_registry().names(self.kind)
        if value not in names:
            self.fail(
                f"unknown {self.kind} plugin {value!r} (installed: {', '.join(names) or 'none'})",
                param,
                ctx,
            )
        return str(value)


def fail(message: str, exit_code: int = 1) -> None:
    """Print one line to stderr and exit: the single way a command reports a user-facing error."""
    click.echo(f"kubetunnel: error: {message}", err=True)
    sys.exit(exit_code)


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; KubetunnelError becomes a one-line error with its exit code."""
    import asyncio  # not at the top: `kubetunnel --help` never needs an event loop

    try:
        return asyncio.run(main)
    except KubetunnelError as exc:
        fail(str(exc), exc.exit_code)
        raise AssertionError("unreachable") from exc


def handles_errors(f: F) -> F:
    """Decorator for synchronous command bodies: KubetunnelError -> one line + exit code."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except KubetunnelError as exc:
            fail(str(exc), exc.exit_code)

    return wrapper  # type: ignore[return-value]


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when invoked (click's documented pattern)."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = {name: spec for name, spec in lazy.items() if _exists(spec[0])}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module_name, _, attr = self.lazy[cmd_name][0].partition(":")
            command = getattr(importlib.import_module(module_name), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{module_name}:{attr} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table above, so --help lists every mode without importing one.
        rows = [(name, self.lazy[name][1]) for name in sorted(self.lazy)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _exists(spec: str) -> bool:
    # A mode whose module is absent from this build is not offered; find_spec imports only the
    # parent package, which is cheap.
    try:
        return importlib.util.find_spec(spec.partition(":")[0]) is not None
    except ModuleNotFoundError:
        return False
