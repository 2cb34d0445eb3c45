"""``kubetunnel sandbox``: run the local Kubernetes-compatible API server.

aiohttp and the server modules are imported inside the command, so ``kubetunnel sandbox --help``
stays as light as the root help.
"""

from __future__ import annotations

import contextlib
import ipaddress
import pathlib

import click

from kubetunnel.console import common_options, handles_errors, run_async


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
@click.option(
    "--control-plane",
    type=click.Choice(["builtin", "real"]),
    default="builtin",
    show_default=True,
    help="builtin: this process serves the API (Python only). real: Kubernetes' own "
    "kube-apiserver, kube-controller-manager, kube-scheduler and etcd, built by "
    "'python3 build.py --control-plane', with this process as their node (needs root).",
)
@click.option("--service-cidr", default=None,
              callback=lambda ctx, param, value: _loopback_network(value, param),
              help="Loopback range for Service ClusterIPs (default: 127.10.0.0/16, or a free "
              "127.N.0.0/17 while another sandbox holds that).")
@click.option("--pod-cidr", default=None,
              callback=lambda ctx, param, value: _loopback_network(value, param),
              help="Loopback range for pod IPs (default: 127.1.0.0/16, or a free "
              "127.N.128.0/17 while another sandbox holds that).")
@click.option("--faults", type=click.Path(dir_okay=False, path_type=pathlib.Path), default=None,
              help="Chaos runs: a JSON file (re-read when it changes) of API errors and watch "
                   "ends to inject for some users; see modes/sandbox/faults.py. Off by default.")
@handles_errors
def up(
    kubeconfig: pathlib.Path, port: int, host: str, watch_history: int,
    kubetunnel_images: tuple[str, ...], node: bool, control_plane: str,
    service_cidr: str | None, pod_cidr: str | None, faults: pathlib.Path | None,
) -> None:
    """Serve the API in the foreground until SIGINT or SIGTERM."""
    from modes.sandbox.claims import KubeconfigClaim, claim_ranges
    from modes.sandbox.running import serve, serve_real

    if control_plane == "real":
        if not node:
            raise click.UsageError("--no-node applies to --control-plane builtin only")
        if faults is not None:
            # The faults are injected by the builtin server's request handling.
            raise click.UsageError("--faults applies to --control-plane builtin only")
        with KubeconfigClaim(kubeconfig) as claimed:
            run_async(serve_real(kubeconfig=claimed, host=host, port=port,
                                 kubetunnel_images=kubetunnel_images))
        return

    if (service_cidr and pod_cidr
            and ipaddress.ip_network(service_cidr).overlaps(ipaddress.ip_network(pod_cidr))):
        raise click.UsageError(f"--service-cidr {service_cidr} overlaps --pod-cidr {pod_cidr}")
    with contextlib.ExitStack() as held:
        # Before anything starts: a second sandbox on the same kubeconfig or the same addresses
        # would strand the first one (its clients repointed, its pods' ports taken).
        claim = held.enter_context(KubeconfigClaim(kubeconfig))
        if service_cidr is None or pod_cidr is None:
            ranges = held.enter_context(claim_ranges(avoid=service_cidr or pod_cidr))
            service_cidr = service_cidr or ranges.service_cidr
            pod_cidr = pod_cidr or ranges.pod_cidr
        run_async(serve(kubeconfig=claim, host=host, port=port, history=watch_history,
                        kubetunnel_images=kubetunnel_images, node=node,
                        service_cidr=service_cidr, pod_cidr=pod_cidr, faults=faults))


def _loopback_network(value: str | None, param: click.Parameter) -> str | None:
    if value is None:
        return None
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
