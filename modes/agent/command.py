"""``kubetunnel agent``: the process inside the tunnel pod.

Every flag has a ``KUBETUNNEL_*`` environment fallback because the operator configures the
container through its environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kubetunnel.console import common_options, event_loop_option, run_async
from kubetunnel.errors import KubetunnelError, UsageError
from kubetunnel.logging import get_logger
from modes.agent.base import AgentBase
from modes.agent.server import Agent, AgentConfig

if TYPE_CHECKING:  # aiohttp only when serving (see _serve)
    from kubetunnel.reporting import StatusReporter

log = get_logger(__name__)

PORT = click.IntRange(0, 65535)


def read_token(path: str) -> bytes:
    """The tunnel token from its file (a mounted Secret); surrounding whitespace is ignored."""
    try:
        token = Path(path).read_bytes().strip()
    except OSError as exc:
        raise UsageError(f"cannot read the token file {path}: {exc.strerror or exc}") from exc
    if not token:
        raise UsageError(f"the token file {path} is empty")
    return token


@click.command()
@click.option("--tunnel-port", type=PORT, default=7000, show_default=True,
              envvar="KUBETUNNEL_TUNNEL_PORT", help="Port the CLI's tunnel connects to.")
@click.option("--health-port", type=PORT, default=8080, show_default=True,
              envvar="KUBETUNNEL_HEALTH_PORT", help="Port of /healthz and /readyz.")
@click.option("--port", "-p", "ports", type=click.IntRange(1, 65535), multiple=True,
              envvar="KUBETUNNEL_PORTS",
              help="A Service target port to listen on (repeat; env: space-separated list).")
@click.option("--token-file", type=str, default=None, envvar="KUBETUNNEL_TOKEN_FILE",
              help="File holding the tunnel token the CLI must present.")
@click.option("--token-env", "token_from_env", is_flag=True, default=False,
              envvar="KUBETUNNEL_TOKEN_FROM_ENV",
              help="Take the token from KUBETUNNEL_TOKEN (a secretKeyRef) instead of a file.")
@click.option("--tunnel-namespace", default=None, envvar="KUBETUNNEL_TUNNEL_NAMESPACE",
              help="Namespace of this tunnel's record (for status reports).")
@click.option("--tunnel-name", default=None, envvar="KUBETUNNEL_TUNNEL_NAME",
              help="Name of this tunnel's record (for status reports).")
@click.option("--operator-url", type=str, default=None, envvar="KUBETUNNEL_OPERATOR_URL",
              help="Base URL of the operator's REST API (status reports).")
@click.option("--bind-address", type=str, default="0.0.0.0", show_default=True,
              envvar="KUBETUNNEL_BIND_ADDRESS", help="Address every listener binds.")
@click.option("--origin-address", type=str, default=None, envvar="KUBETUNNEL_ORIGIN_ADDRESS",
              help="ClusterIP of the Service's own pods (the origin Service): connections the "
                   "local process cannot take go there instead of being reset.")
@click.option("--drain-timeout", type=click.FloatRange(min=0), default=10.0, show_default=True,
              envvar="KUBETUNNEL_DRAIN_TIMEOUT",
              help="On SIGTERM, seconds open connections get to finish.")
@click.option("--shared", is_flag=True, default=False, envvar="KUBETUNNEL_SHARED",
              help="Serve the Service's filtered and mirrored intercepts: one tunnel per "
                   "intercept, each HTTP request routed by its filters.")
@event_loop_option
@common_options
def agent(tunnel_port: int, health_port: int, ports: tuple[int, ...], token_file: str | None,
          token_from_env: bool, tunnel_namespace: str | None, tunnel_name: str | None,
          operator_url: str | None, bind_address: str, origin_address: str | None,
          drain_timeout: float, shared: bool) -> None:
    """Run the tunnel agent (inside the tunnel pod)."""
    if not ports:
        raise click.UsageError("give at least one --port (or KUBETUNNEL_PORTS)")
    if operator_url and not (tunnel_namespace and tunnel_name):
        raise click.UsageError("--operator-url needs --tunnel-namespace and --tunnel-name")
    fixed = [p for p in (*ports, tunnel_port, health_port) if p]  # 0: any free port
    if len(set(fixed)) != len(fixed):
        raise click.UsageError("the service, tunnel and health ports must all differ")
    token = _token_from_env() if token_from_env else _token_or_fail(token_file)
    config = AgentConfig(token=token, ports=tuple(ports), tunnel_port=tunnel_port,
                         health_port=health_port, bind_address=bind_address,
                         operator_url=operator_url, origin_address=origin_address or None,
                         drain_timeout=drain_timeout)
    record = (tunnel_namespace, tunnel_name) if tunnel_namespace and tunnel_name else None
    run_async(_serve(config, record, shared))


def _token_from_env() -> bytes:
    # A secretKeyRef env var works wherever a volume cannot be mounted at a fixed path (the
    # sandbox runs pods as processes); the file stays the default.
    token = os.environ.get("KUBETUNNEL_TOKEN", "").strip().encode()
    if not token:
        raise click.UsageError("--token-env: KUBETUNNEL_TOKEN is empty or unset")
    return token


def _token_or_fail(path: str | None) -> bytes:
    if path is None:
        raise click.UsageError("give --token-file (or KUBETUNNEL_TOKEN_FILE) or --token-env")
    try:
        return read_token(path)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc


async def _serve(config: AgentConfig, record: tuple[str, str] | None, shared: bool) -> None:
    # aiohttp only when serving, so that `kubetunnel agent --help` stays light.
    from modes.agent.health import start_health

    reporters: dict[str, StatusReporter] = {}
    server = (_shared_agent(config, record, reporters) if shared
              else _exclusive_agent(config, record, reporters))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as exc:
        raise KubetunnelError(
            f"cannot listen on {config.bind_address}: {exc.strerror or exc}"
        ) from exc
    runner = None
    try:
        if config.health_port is not None:
            runner, _ = await start_health(server, config.bind_address, config.health_port)
        await stop.wait()
        log.info("agent.stopping")
    finally:
        await server.aclose(grace=config.drain_timeout)
        for reporter in reporters.values():
            # The last report ("down") should reach the operator before we go; not forever.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reporter.wait_delivered(), 2.0)
            await reporter.aclose()
        if runner is not None:
            await runner.cleanup()


def _exclusive_agent(config: AgentConfig, record: tuple[str, str] | None,
                     reporters: dict[str, StatusReporter]) -> AgentBase:
    """The exclusive agent: reports go to its record."""
    from kubetunnel.reporting import StatusReporter

    reporter = None
    if config.operator_url and record is not None:
        reporter = reporters[record[1]] = StatusReporter(
            config.operator_url, record[0], record[1], config.token)
        reporter.start()

    async def report(up: bool, reason: str) -> None:
        log.info("agent.report", up=up, reason=reason, operator_url=config.operator_url)
        if reporter is not None:
            await reporter(up, reason)

    return Agent(config, on_status=report)


def _shared_agent(config: AgentConfig, record: tuple[str, str] | None,
                  reporters: dict[str, StatusReporter]) -> AgentBase:
    """The shared agent: reports go to each intercept's own record, with the shared token."""
    from kubetunnel.reporting import StatusReporter
    from modes.agent.shared import SharedAgent

    async def report(intercept: str, up: bool, reason: str, counts: dict[str, int]) -> None:
        log.info("agent.report", intercept=intercept, up=up, reason=reason, **counts)
        if config.operator_url and record is not None:
            reporter = reporters.get(intercept)
            if reporter is None:
                reporter = reporters[intercept] = StatusReporter(
                    config.operator_url, record[0], intercept, config.token)
            await reporter(up, reason, counts)

    return SharedAgent(config, on_report=report)
