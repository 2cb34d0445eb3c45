"""``kubetunnel cli install`` and ``uninstall``: the operator, from the manifests in the zipapp.

Permissions are checked with SelfSubjectAccessReview before anything is created, so a user
without the rights learns exactly which ones are missing and the cluster is left untouched.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click

from kubetunnel.console import cli_options, run_async
from kubetunnel.errors import KubetunnelError, UsageError
from kubetunnel.records import check_dns_label
from modes.cli import manifests
from modes.cli.options import KubeOptions, kube_access_options
from modes.cli.progress import Progress

CRD_NAME = "kubetunnels.application.dcode.tech"
RECORDS_PATH = "/apis/application.dcode.tech/v1/kubetunnels"


def _ns_option(f: Any) -> Any:
    return click.option(
        "-n", "--namespace", "operator_namespace", default=manifests.DEFAULT_NAMESPACE,
        show_default=True, help="Namespace of the operator.",
    )(f)


async def missing_permissions(
    client: Any, objects: list[dict[str, Any]], verbs: tuple[str, ...]
) -> list[str]:
    """``you need VERB on RESOURCE`` lines for every denied (verb, resource, namespace)."""
    checks: dict[tuple[str, str, str, str], None] = {}
    for obj in objects:
        plural, namespaced = await client.resource(obj["apiVersion"], obj["kind"])
        group = obj["apiVersion"].rpartition("/")[0]
        namespace = obj["metadata"].get("namespace", "") if namespaced else ""
        for verb in verbs:
            checks[(verb, group, plural, namespace)] = None

    async def allowed(verb: str, group: str, plural: str, namespace: str) -> bool:
        attributes = {"verb": verb, "group": group, "resource": plural}
        if namespace:
            attributes["namespace"] = namespace
        review = await client.create(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
             "spec": {"resourceAttributes": attributes}},
        )
        return bool(review.get("status", {}).get("allowed"))

    results = await asyncio.gather(*(allowed(*key) for key in checks))
    missing = []
    for (verb, group, plural, namespace), ok in zip(checks, results, strict=True):
        if not ok:
            resource = plural + (f".{group}" if group else "")
            where = f"in namespace {namespace}" if namespace else "cluster-wide"
            missing.append(f"you need {verb} on {resource} {where}")
    return missing


async def _apply_all(client: Any, objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Apply in order; report created / configured / unchanged per object, as kubectl does."""

    outcomes = []
    for obj in objects:
        meta = obj["metadata"]
        path = await client.object_path(obj["apiVersion"], obj["kind"], meta.get("namespace"),
                                        meta["name"])
        before = await client.get_or_none(path)
        after = await client.apply(obj, field_manager="kubetunnel-install")
        if before is None:
            outcome = "created"
        elif before["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]:
            outcome = "unchanged"
        else:
            outcome = "configured"
        outcomes.append((manifests.describe(obj), outcome))
        if obj["kind"] == "CustomResourceDefinition":
            await _wait_established(client, meta["name"])
    return outcomes


async def _wait_established(client: Any, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
    while time.monotonic() < deadline:
        crd = await client.get(path)
        # A new CRD's status says "conditions": null on a real API server, not [].
        conditions = (crd.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            return
        await asyncio.sleep(0.2)
    raise KubetunnelError(f"CRD {name} was not Established after {timeout:.0f}s")


async def wait_for_operator(
    client: Any, namespace: str, timeout: float, progress: Progress
) -> None:
    """Until the operator Deployment has a Ready replica; on timeout, say why the pod is not."""
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{manifests.OPERATOR}"
    deadline = time.monotonic() + timeout
    while True:
        deployment = await client.get(path)
        status = deployment.get("status", {})
        ready = status.get("readyReplicas", 0)
        wanted = deployment["spec"].get("replicas", 1)
        if ready >= 1 and status.get("observedGeneration", 0) >= deployment["metadata"].get(
            "generation", 0
        ):
            progress.done()
            return
        if time.monotonic() > deadline:
            progress.done()
            raise KubetunnelError(
                f"the operator is not Ready after {timeout:.0f}s ({ready}/{wanted} ready)"
                f"{await _pod_problem(client, namespace)}; see "
                f"'kubectl -n {namespace} describe deployment {manifests.OPERATOR}'"
            )
        progress.live(
            f"  waiting for deployment/{manifests.OPERATOR}: {ready}/{wanted} ready "
            f"({progress.elapsed():.0f}s)"
        )
        await asyncio.sleep(0.25)


async def wait_namespace_gone(
    client: Any, namespace: str, timeout: float, progress: Progress
) -> None:
    """Until a Terminating namespace is gone, so install can create it again.

    Objects cannot be created in a namespace that is being deleted; a real cluster takes from
    seconds to forever (a finalizer nobody removes) to finish, so wait with a live line, and on
    timeout name the finalizers that hold it.
    """
    path = f"/api/v1/namespaces/{namespace}"
    deadline = time.monotonic() + timeout
    waited = False
    while True:
        current = await client.get_or_none(path)
        if current is None or not current["metadata"].get("deletionTimestamp"):
            if waited:
                progress.step(f"namespace {namespace} finished terminating")
            return
        finalizers = [*current["metadata"].get("finalizers", []),
                      *current.get("spec", {}).get("finalizers", [])]
        held = f" (finalizers: {', '.join(finalizers)})" if finalizers else ""
        if time.monotonic() > deadline:
            progress.done()
            raise KubetunnelError(
                f"namespace {namespace} is still terminating after {timeout:.0f}s{held}; "
                f"install again once 'kubectl get namespace {namespace}' says NotFound, or "
                "install into another namespace with -n")
        waited = True
        progress.live(f"  namespace {namespace} is terminating; waiting until it is gone to "
                      f"create it again{held} ({progress.elapsed():.0f}s)")
        await asyncio.sleep(0.25)


async def _pod_problem(client: Any, namespace: str) -> str:
    pods = await client.get(
        f"/api/v1/namespaces/{namespace}/pods",
        labelSelector="we-dcode-app=kubetunnel-operator",
    )
    for pod in pods.get("items", []):
        for status in pod.get("status", {}).get("containerStatuses", []):
            waiting = status.get("state", {}).get("waiting")
            if waiting:
                return f": pod {pod['metadata']['name']} is waiting: {waiting.get('reason')}"\
                    f" {waiting.get('message', '')}".rstrip()
    return ""


@click.command()
@_ns_option
@click.option("--image", default=None, help="Operator image (default: the manifests' image).")
@click.option("--dry-run", is_flag=True, help="Print the objects as YAML; change nothing.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait for the operator to be Ready.")
@click.option("--timeout", type=click.FloatRange(min=1), default=180, show_default=True,
              help="Seconds to wait for the operator, and before that for a terminating "
              "namespace to go.")
@kube_access_options
@cli_options
def install(kube: KubeOptions, operator_namespace: str, image: str | None, dry_run: bool,
            wait: bool, timeout: float) -> None:
    """Install (or update) the operator; a second run changes nothing and says so."""
    namespace = _checked_namespace(operator_namespace)
    objects = manifests.customized(namespace, image)
    if dry_run:
        click.echo(manifests.to_yaml(objects), nl=False)
        return
    run_async(install_operator(kube, namespace, objects, wait, timeout))


async def install_operator(kube: KubeOptions, namespace: str, objects: list[dict[str, Any]],
                           wait: bool, timeout: float) -> None:
    """What ``cli install`` does; ``kubetunnel demo`` installs through this same function."""
    from kubetunnel.kube import KubeClient

    progress = Progress()
    async with KubeClient(await kube.load()) as client:
        missing = await missing_permissions(client, objects, ("create", "patch"))
        if missing:
            raise KubetunnelError("cannot install: " + "; ".join(missing))
        await wait_namespace_gone(client, namespace, timeout, progress)
        outcomes = await _apply_all(client, objects)
        for name, outcome in outcomes:
            click.echo(f"{name} {outcome}")
        if all(outcome == "unchanged" for _, outcome in outcomes):
            click.echo(f"KubeTunnel is already installed in namespace {namespace}; "
                       "nothing changed.")
        if wait:
            await wait_for_operator(client, namespace, timeout, progress)
            progress.step(f"operator Ready in namespace {namespace}")


@click.command()
@_ns_option
@click.option("--force", is_flag=True, help="Remove even while tunnels exist (ends them).")
@click.option("--timeout", type=click.FloatRange(min=1), default=60, show_default=True,
              help="Seconds to wait for tunnels to end with --force.")
@kube_access_options
@cli_options
def uninstall(kube: KubeOptions, operator_namespace: str, force: bool, timeout: float) -> None:
    """Remove everything install created; refuses while tunnels exist unless --force."""
    namespace = _checked_namespace(operator_namespace)
    run_async(_uninstall(kube, namespace, force, timeout))


async def _uninstall(kube: KubeOptions, namespace: str, force: bool, timeout: float) -> None:
    from kubetunnel.kube import ApiError, KubeClient

    objects = manifests.customized(namespace)
    async with KubeClient(await kube.load()) as client:
        present = await _present(client, objects)
        elsewhere = await _installed_elsewhere(client, namespace, present)
        if not present or elsewhere:
            hint = (f" (it is installed in namespace {elsewhere}: kubetunnel cli uninstall -n "
                    f"{elsewhere})" if elsewhere else "")
            click.echo(f"KubeTunnel is not installed in namespace {namespace}{hint}; nothing to "
                       "remove.")
            return
        tunnels = await _tunnels(client)
        if tunnels and not force:
            listed = ", ".join(f"{t['metadata']['namespace']}/{t['metadata']['name']} "
                               f"({t['spec'].get('client', '?')})" for t in tunnels)
            raise UsageError(f"tunnels exist: {listed}; disconnect them first or use --force")
        for tunnel in tunnels:
            meta = tunnel["metadata"]
            await client.delete(f"/apis/application.dcode.tech/v1/namespaces/"
                                f"{meta['namespace']}/kubetunnels/{meta['name']}")
        deadline = time.monotonic() + timeout
        while tunnels and await _tunnels(client):
            if time.monotonic() > deadline:
                raise KubetunnelError(
                    f"tunnels did not end within {timeout:.0f}s; is the operator running? "
                    f"(kubectl -n {namespace} get pods)"
                )
            await asyncio.sleep(0.25)
        for obj, path in reversed(present):
            try:
                await client.delete(path)
                click.echo(f"{manifests.describe(obj)} deleted")
            except ApiError as exc:
                if exc.status != 404:  # gone meanwhile (the namespace took it along): fine
                    raise


async def _installed_elsewhere(client: Any, namespace: str,
                               present: list[tuple[dict[str, Any], str]]) -> str | None:
    """The namespace of another installation, when only the cluster-wide objects it shares with
    one in ``namespace`` exist (the CRD, the ClusterRole): those are not ours to delete."""
    if any(obj["kind"] == "Namespace" or obj["metadata"].get("namespace")
           for obj, _ in present):
        return None
    binding = next((path for obj, path in present if obj["kind"] == "ClusterRoleBinding"), None)
    if binding is None:
        return None
    subjects = (await client.get(binding)).get("subjects") or []
    others = {s.get("namespace") for s in subjects if s.get("kind") == "ServiceAccount"}
    others.discard(None)
    if not others or namespace in others:
        return None
    return str(sorted(others)[0])


async def _present(client: Any, objects: list[dict[str, Any]]
                   ) -> list[tuple[dict[str, Any], str]]:
    """The objects of an installation that exist, each with its path (all built-in kinds)."""
    found = []
    for obj in objects:
        meta = obj["metadata"]
        path = await client.object_path(obj["apiVersion"], obj["kind"], meta.get("namespace"),
                                        meta["name"])
        if await client.get_or_none(path) is not None:
            found.append((obj, path))
    return found


async def _tunnels(client: Any) -> list[dict[str, Any]]:
    from kubetunnel.kube import ApiError

    try:
        listing = await client.get(RECORDS_PATH)
    except ApiError as exc:
        if exc.status == 404:  # CRD not installed: no tunnels can exist
            return []
        raise
    items: list[dict[str, Any]] = listing.get("items", [])
    return items


def _checked_namespace(value: str) -> str:
    try:
        return check_dns_label(value, "namespace")
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint="'-n' / '--namespace'") from exc
