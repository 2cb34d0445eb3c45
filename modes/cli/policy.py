"""``kubetunnel cli policy``: the network policies tunnel pods need, printed or applied.

``render`` needs no cluster, so the output can go through review or GitOps first; ``apply``
sends the very same objects with server-side apply, so running it again changes nothing and a
changed set of namespaces converges without deleting anything by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
import yaml

from kubetunnel.console import PluginChoice, cli_options, handles_errors, run_async
from kubetunnel.errors import KubetunnelError
from kubetunnel.plugins import PolicyRenderer, PolicyRequest
from kubetunnel.registry import DEFAULTS, get_registry

if TYPE_CHECKING:
    from kubetunnel.kube import KubeAccess

F = TypeVar("F", bound=Callable[..., Any])
FIELD_MANAGER = "kubetunnel"


def request_options(f: F) -> F:
    """The options that say which policies to build; ``render`` and ``apply`` share them."""
    options = [
        click.option(
            "--operator-namespace",
            default="kubetunnel",
            show_default=True,
            metavar="NS",
            help="Namespace the operator runs in.",
        ),
        click.option(
            "--app-namespace",
            "app_namespaces",
            multiple=True,
            required=True,
            metavar="NS",
            help="Namespace where tunnels run (repeat for each; at least one).",
        ),
        click.option(
            "--renderer",
            type=PluginChoice("policy"),
            default=DEFAULTS["policy"],
            show_default=True,
            help="Policy plugin: networkpolicy (Kubernetes) or cilium (CiliumNetworkPolicy).",
        ),
        click.option(
            "--allow-dns",
            is_flag=True,
            help="Also let tunnel pods query the cluster DNS (kube-system, UDP/TCP 53).",
        ),
        click.option(
            "--allow-namespace-egress",
            is_flag=True,
            help="Also let tunnel pods reach the pods of their own namespace, which the agent "
            "needs to carry the local process's connections to that namespace's Services.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def build(
    renderer: str,
    operator_namespace: str,
    app_namespaces: tuple[str, ...],
    allow_dns: bool,
    allow_namespace_egress: bool,
) -> list[dict[str, Any]]:
    plugin: PolicyRenderer = get_registry().create("policy", renderer, None)
    request = PolicyRequest(
        operator_namespace, app_namespaces, allow_dns, allow_namespace_egress
    )
    return plugin.render(request)


@click.group()
@cli_options
def policy() -> None:
    """Network policies that let tunnel pods reach the operator, and nothing more.

    One egress policy per application namespace (tunnel pods may call the operator on TCP 80
    and 8083) and one ingress policy in the operator namespace (only those tunnel pods may call
    it). See docs/network.md.
    """


@policy.command()
@request_options
@click.option(
    "-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True,
    help="yaml: one document per object; json: one List object.",
)
@cli_options
@handles_errors
def render(output: str, **options: Any) -> None:
    """Print the policies, ready for kubectl apply -f -."""
    objects = build(**options)
    if output == "json":
        click.echo(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2))
    else:
        # No line folding: a folded annotation is valid YAML but hard to read and to grep.
        text = yaml.safe_dump_all(objects, sort_keys=False, width=2**16)
        click.echo(text, nl=False)


@policy.command()
@request_options
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="Kubeconfig file to use.")
@click.option("--context", help="Kubeconfig context to use.")
@cli_options
@handles_errors
def apply(kubeconfig: str | None, context: str | None, **options: Any) -> None:
    """Create or update the policies in the cluster (server-side apply; safe to repeat)."""
    objects = build(**options)
    # Imported here so that render and --help never load the cluster client.
    from kubetunnel.kube import KubeAccess

    access = KubeAccess.load(kubeconfig=kubeconfig, context=context)
    run_async(apply_all(access, objects, click.echo))


async def apply_all(
    access: KubeAccess, objects: list[dict[str, Any]], report: Callable[[str], None]
) -> None:
    """Apply each object in order, reporting each as it lands; stop at the first refusal.

    Reporting as we go matters on failure: the user sees which objects are already in place.
    """
    from kubetunnel.kube import ApiError, KubeClient

    async with KubeClient(access) as client:
        for api_version, kind in sorted({(o["apiVersion"], o["kind"]) for o in objects}):
            try:
                await client.resource(api_version, kind)
            except ApiError as exc:
                if exc.status != 404:
                    raise KubetunnelError(f"cannot look up {kind} ({api_version}): {exc}") from exc
                raise KubetunnelError(
                    f"the cluster does not serve {kind} ({api_version}); choose a --renderer "
                    "for the network policy engine it runs"
                ) from exc
        for obj in objects:
            meta = obj["metadata"]
            where = f"{obj['kind']} {meta['namespace']}/{meta['name']}"
            try:
                await client.apply(obj, field_manager=FIELD_MANAGER)
            except KubetunnelError as exc:
                raise KubetunnelError(f"cannot apply {where}: {exc}") from exc
            report(f"{where} applied")
