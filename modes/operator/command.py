"""``kubetunnel operator``: runs in the cluster (service account) or outside it (kubeconfig).

Heavy imports (aiohttp, prometheus_client, the kubernetes configuration) happen only when the
command runs, so ``kubetunnel operator --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from typing import Any

import click

from kubetunnel.console import PluginChoice, common_options, run_async
from kubetunnel.logging import get_logger

log = get_logger(__name__)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class Duration(click.ParamType):  # type: ignore[type-arg]
    """``60s``, ``1m``, ``500ms`` or a bare number of seconds."""

    name = "duration"

    def __init__(self, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> float:
        if isinstance(value, int | float):
            return float(value)
        match = _DURATION.match(str(value))
        if not match or (float(match.group(1)) <= 0 and not self.allow_zero):
            self.fail(f"{value!r} is not a positive duration like 60s, 2m or 500ms", param, ctx)
        return float(match.group(1)) * _UNITS[match.group(2)]


def _namespaces(value: str) -> tuple[str, ...] | None:
    if value.strip().lower() in ("", "all", "*"):
        return None
    return tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))


def _default_image() -> str:
    from kubetunnel import __version__

    return f"ghcr.io/we-dcode/kubetunnel:{__version__}"


@click.command()
@click.option("--namespace", default="kubetunnel", show_default=True,
              envvar=["KUBETUNNEL_OPERATOR_NAMESPACE", "POD_NAMESPACE"],
              help="The operator's namespace: its Service (the agents' URL) and leader Lease.")
@click.option("--watch-namespaces", default="all", show_default=True,
              help="Comma-separated namespaces whose tunnels to serve, or 'all'.")
@click.option("--store", "store_name", type=PluginChoice("store"), default="crd",
              show_default=True, help="Where tunnel records live.")
@click.option("--api-port", type=click.IntRange(0, 65535), default=8083, show_default=True,
              help="Port of the agents' REST API and /metrics.")
@click.option("--health-port", type=click.IntRange(0, 65535), default=8081, show_default=True,
              help="Port of /healthz and /readyz.")
@click.option("--lease-ttl", type=Duration(), default="60s", show_default=True,
              help="Clean up a tunnel whose client has not renewed its lease for this long "
                   "(a record may ask for less).")
@click.option("--agent-image", default=None, envvar="KUBETUNNEL_AGENT_IMAGE",
              help="Image of the tunnel pods (default: this version's KubeTunnel image).")
@click.option("--operator-url", default=None,
              help="URL the agents report to (default: http://<operator Service ClusterIP>:80).")
@click.option("--resync", type=Duration(), default="30s", show_default=True,
              help="Look at every tunnel and tunneled Service again this often.")
@click.option("--agent-grace", type=Duration(allow_zero=True), default="0s", show_default=True,
              help="How long a tunnel pod may be gone or unready before its Service is restored "
                   "(0: at once).")
@click.option("--leader-election/--no-leader-election", default=True, show_default=True,
              help="Elect a leader through a Lease (keep on unless exactly one replica runs).")
@click.option("--manage-network-policies", is_flag=True, default=False,
              envvar="KUBETUNNEL_MANAGE_NETWORK_POLICIES",
              help="Create each tunnel namespace's egress policy and the operator's ingress "
                   "policy while tunnels exist (docs/network.md).")
@click.option("--kubeconfig", default=None, envvar="KUBECONFIG",
              help="Kubeconfig to use; without it, the pod's service account in a cluster, "
                   "else the default kubeconfig.")
@click.option("--context", default=None, help="Kubeconfig context.")
@common_options
def operator(namespace: str, watch_namespaces: str, store_name: str, api_port: int,
             health_port: int, lease_ttl: float, agent_image: str | None,
             operator_url: str | None, resync: float, agent_grace: float,
             leader_election: bool, manage_network_policies: bool, kubeconfig: str | None,
             context: str | None) -> None:
    """Run the operator (inside the cluster)."""
    from kubetunnel.kube import KubeAccess
    from modes.operator.settings import OperatorSettings

    if kubeconfig and os.pathsep in kubeconfig:
        kubeconfig = kubeconfig.split(os.pathsep)[0]  # the official loader takes one file
    access = KubeAccess.load(kubeconfig, context)
    settings = OperatorSettings(
        namespace=namespace, watch_namespaces=_namespaces(watch_namespaces),
        lease_ttl=lease_ttl, agent_image=agent_image or _default_image(),
        operator_url=operator_url, resync=resync, agent_grace=agent_grace,
        leader_election=leader_election, manage_network_policies=manage_network_policies,
    )
    host = os.environ.get("KUBETUNNEL_BIND_ADDRESS") or "0.0.0.0"
    run_async(_serve(access, settings, store_name, host, api_port, health_port))


async def _serve(access: Any, settings: Any, store_name: str, host: str, api_port: int,
                 health_port: int) -> None:
    from kubetunnel.kube import KubeClient
    from kubetunnel.plugins import StoreSettings
    from kubetunnel.registry import get_registry
    from modes.operator.runtime import Operator

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with KubeClient(access) as client:
        store = get_registry().create("store", store_name, StoreSettings(kube=client))
        op = Operator(settings, client, store)
        try:
            await op.start(host, api_port, health_port)
            ended = asyncio.ensure_future(op.wait())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({ended, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if ended.done():
                ended.result()  # an unexpected error: exit non-zero with its message
            log.info("operator.stopping", identity=op.identity)
        finally:
            await op.aclose()
            await store.aclose()
