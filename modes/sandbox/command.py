"""``kubetunnel sandbox``: run the local Kubernetes-compatible API server.

aiohttp and the server modules are imported inside the command, so ``kubetunnel sandbox --help``
stays as light as the root help.
"""

from __future__ import annotations

import ipaddress
import pathlib

import click

from kubetunnel.console import common_options, run_async


@click.group()
@common_options
def sandbox() -> None:
    """A local stand-in for a Kubernetes cluster (for trying KubeTunnel and for its tests)."""


def _loopback(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        if value == "localhost":
            return "127.0.0.1"
        raise click.BadParameter(f"{value!r} is not an IP address") from None
    if not address.is_loopback:
        raise click.BadParameter(
            f"{value} is not a loopback address; the sandbox has no "
            "authorization beyond its token and must not be reachable from elsewhere"
        )
    return value


@sandbox.command()
@common_options
@click.option(
    "--kubeconfig",
    "kubeconfig",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=pathlib.Path),
    help="Where to write the kubeconfig for this sandbox (written once it serves).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="TCP port of the API server; 0 picks a free one.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    callback=_loopback,
    help="Loopback address to listen on.",
)
@click.option(
    "--watch-history",
    type=click.IntRange(10, 10_000_000),
    default=10_000,
    show_default=True,
    help="Watch events kept for replay; older resourceVersions get 410 Gone.",
)
@click.option(
    "--kubetunnel-image",
    "kubetunnel_images",
    multiple=True,
    help="Image pattern that runs this KubeTunnel build as a pod (repeatable; default: "
    "any image whose repository ends in 'kubetunnel').",
)
@click.option(
    "--node/--no-node",
    default=True,
    show_default=True,
    help="Run the controllers, the process kubelet and the loopback kube-proxy. --no-node "
    "serves the API alone, like a control plane without nodes (tests that play the kubelet).",
)
@click.option("--service-cidr", default="127.10.0.0/16", show_default=True,
              callback=lambda ctx, param, value: _loopback_network(value, param),
              help="Loopback range for Service ClusterIPs.")
@click.option("--pod-cidr", default="127.1.0.0/16", show_default=True,
              callback=lambda ctx, param, value: _loopback_network(value, param),
              help="Loopback range for pod IPs (several sandboxes at once need distinct ranges).")
@click.option("--faults", type=click.Path(dir_okay=False, path_type=pathlib.Path), default=None,
              help="Chaos runs: a JSON file (re-read when it changes) of API errors and watch "
                   "ends to inject for some users; see modes/sandbox/faults.py. Off by default.")
def up(
    kubeconfig: pathlib.Path, port: int, host: str, watch_history: int,
    kubetunnel_images: tuple[str, ...], node: bool, service_cidr: str, pod_cidr: str,
    faults: pathlib.Path | None,
) -> None:
    """Serve the API in the foreground until SIGINT or SIGTERM."""
    from modes.sandbox.running import serve

    if ipaddress.ip_network(service_cidr).overlaps(ipaddress.ip_network(pod_cidr)):
        raise click.UsageError(f"--service-cidr {service_cidr} overlaps --pod-cidr {pod_cidr}")
    run_async(serve(kubeconfig=kubeconfig, host=host, port=port, history=watch_history,
                    kubetunnel_images=kubetunnel_images, node=node, service_cidr=service_cidr,
                    pod_cidr=pod_cidr, faults=faults))


def _loopback_network(value: str, param: click.Parameter) -> str:
    try:
        network = ipaddress.ip_network(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a network like 127.10.0.0/16") from None
    if not network.is_loopback or network.num_addresses < 256:
        raise click.BadParameter(f"{value} must be a loopback range of at least 256 addresses")
    return str(network)


def _attach_node_commands() -> None:
    # The sample workloads are commands of this same build, run by the sandbox's kubelet.
    from modes.sandbox.node.command import echo

    sandbox.add_command(echo)


_attach_node_commands()
