"""Which pod and container stand behind a Service, and the API objects its environment reads.

The pods are the ones the Service selects; while it is tunneled its selector points at the
tunnel pod, so the original one is read from the annotation the operator keeps it in. Pods are
grouped by the workload that owns them (a ReplicaSet's Deployment, a StatefulSet...), one Ready
pod standing for each. Everything here talks to the API; the resolution itself is pure
(envvars, volumes).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubetunnel.errors import KubetunnelError, UsageError
from kubetunnel.logging import get_logger
from modes.cli import envvars
from modes.cli.volumes import mounted_volumes

log = get_logger(__name__)

ORIGINAL_SELECTOR = "kubetunnel.dev/original-selector"  # written by the operator
TUNNEL_POD_LABEL = ("we-dcode-app", "kubetunnel")
Obj = dict[str, Any]


@dataclass(frozen=True)
class Choice:
    workload: str  # kind/name, lower-case kind as kubectl spells it
    pod: Obj
    container: Obj

    def describe(self) -> str:
        return f"{self.workload} container {self.container['name']} " \
               f"(pod {self.pod['metadata']['name']})"


def selector_of(service: Mapping[str, Any]) -> dict[str, str]:
    annotations = (service.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(ORIGINAL_SELECTOR)
    if raw:
        try:
            original = json.loads(raw)
        except ValueError:
            original = None
        if isinstance(original, dict) and original:
            return {str(k): str(v) for k, v in original.items()}
    return dict((service.get("spec") or {}).get("selector") or {})


def serves(container: Mapping[str, Any], service: Mapping[str, Any]) -> bool:
    """Whether the container declares a port that one of the Service's targetPorts names."""
    ports = container.get("ports") or []
    for port in (service.get("spec") or {}).get("ports") or []:
        target = port.get("targetPort", port.get("port"))
        named = isinstance(target, str) and not target.isdigit()
        for declared in ports:
            if (declared.get("name") == target) if named else \
                    str(declared.get("containerPort")) == str(target):
                return True
    return False


def choose(service: Mapping[str, Any], candidates: Mapping[str, Obj], container: str | None,
           workload: str | None) -> Choice:
    """One (workload, container) among the Service's pods, or a one-line error with the
    choices. ``candidates``: workload -> the pod that stands for it."""
    name = f"{service['metadata']['namespace']}/{service['metadata']['name']}"
    if workload is not None:
        wanted = {w: p for w, p in candidates.items()
                  if w == workload or w.split("/", 1)[1] == workload}
        if not wanted:
            raise UsageError(f"Service {name} has no pods of workload {workload!r} "
                             f"(it has: {', '.join(sorted(candidates))})")
        candidates = wanted
    pairs = [(w, p, c) for w, p in sorted(candidates.items())
             for c in p["spec"].get("containers") or []
             if container is None or c["name"] == container]
    if not pairs:
        raise UsageError(f"no container {container!r} in the pods of Service {name} "
                         f"(containers: {_listing(candidates, None)})")
    if len(pairs) > 1:
        serving = [pair for pair in pairs if serves(pair[2], service)]
        pairs = serving if len(serving) == 1 else pairs
    if len(pairs) > 1:
        raise UsageError(f"Service {name} selects several containers: "
                         f"{_listing(candidates, container)}; choose with --workload KIND/NAME "
                         "and -c CONTAINER")
    return Choice(*pairs[0])


def _listing(candidates: Mapping[str, Obj], container: str | None) -> str:
    def names(pod: Obj) -> str:
        return ", ".join(c["name"] for c in pod["spec"].get("containers") or []
                         if container in (None, c["name"]))

    return ", ".join(f"{w} ({names(p)})" for w, p in sorted(candidates.items()))


def _rank(pod: Mapping[str, Any]) -> tuple[int, str]:
    status = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or [])
    running = status.get("phase") == "Running"
    return (0 if ready else 1 if running else 2, pod["metadata"].get("creationTimestamp", ""))


async def candidates(client: Any, service: Mapping[str, Any]) -> dict[str, Obj]:
    """workload -> its best pod, for the pods behind the Service."""
    ns, name = service["metadata"]["namespace"], service["metadata"]["name"]
    selector = selector_of(service)
    if not selector:
        raise UsageError(f"Service {ns}/{name} has no selector: no pods to take the "
                         "environment from")
    listing = await _get(client, f"/api/v1/namespaces/{ns}/pods", "list pods",
                         labelSelector=",".join(f"{k}={v}" for k, v in sorted(selector.items())))
    pods = [p for p in listing.get("items", []) if not p["metadata"].get("deletionTimestamp")
            and (p["metadata"].get("labels") or {}).get(TUNNEL_POD_LABEL[0])
            != TUNNEL_POD_LABEL[1]]
    if not pods:
        raise KubetunnelError(f"no pods of Service {ns}/{name} run (selector "
                              f"{','.join(f'{k}={v}' for k, v in sorted(selector.items()))}); "
                              "the environment is read from a live pod")
    owners: dict[str, str] = {}
    grouped: dict[str, Obj] = {}
    for pod in sorted(pods, key=_rank):
        workload = await _workload(client, ns, pod, owners)
        grouped.setdefault(workload, pod)
    return grouped


async def _workload(client: Any, ns: str, pod: Obj, cache: dict[str, str]) -> str:
    owner = next((o for o in pod["metadata"].get("ownerReferences") or []
                  if o.get("controller")), None)
    if owner is None:
        return f"pod/{pod['metadata']['name']}"
    kind, name = owner["kind"].lower(), owner["name"]
    if kind != "replicaset":
        return f"{kind}/{name}"
    if name not in cache:
        from kubetunnel.kube import ApiError

        cache[name] = f"replicaset/{name}"
        try:
            rs = await client.get(f"/apis/apps/v1/namespaces/{ns}/replicasets/{name}")
        except ApiError as exc:
            log.debug("workload.replicaset_unreadable", replicaset=name, status=exc.status)
        else:
            up = next((o for o in rs["metadata"].get("ownerReferences") or []
                       if o.get("controller")), None)
            if up is not None:
                cache[name] = f"{up['kind'].lower()}/{up['name']}"
    return cache[name]


async def _get(client: Any, path: str, what: str, **params: str) -> Any:
    from kubetunnel.kube import ApiError

    try:
        return await client.get(path, **params)
    except ApiError as exc:
        if exc.status == 403:
            raise KubetunnelError(f"you may not {what} ({exc}); ask for that permission in "
                                  "the namespace") from None
        raise


async def sources(client: Any, choice: Choice, *, no_secrets: bool,
                  with_volumes: bool) -> envvars.Sources:
    """Fetch what the container's environment (and, ``with_volumes``, its files) reads."""
    pod, container = choice.pod, choice.container
    ns = pod["metadata"]["namespace"]
    volumes = mounted_volumes(pod, container) if with_volumes else []
    cm_names, secret_names = envvars.referenced(container, volumes)
    configmaps = {n: await _object(client, ns, "configmaps", n) for n in sorted(cm_names)}
    secrets = None if no_secrets else {
        n: await _object(client, ns, "secrets", n) for n in sorted(secret_names)}
    services, allocatable = await asyncio.gather(
        _services(client, ns), _allocatable(client, pod, container, volumes))
    return envvars.Sources(ns, pod, container, configmaps, secrets, services, allocatable)


async def _object(client: Any, ns: str, plural: str, name: str) -> Obj | None:
    from kubetunnel.kube import ApiError

    try:
        obj: Obj = await client.get(f"/api/v1/namespaces/{ns}/{plural}/{name}")
    except ApiError as exc:
        if exc.status == 404:
            return None
        if exc.status == 403 and plural == "secrets":
            raise KubetunnelError(
                f"you may not read Secrets in namespace {ns} (Secret {name}, which the "
                "container's environment or files use); run with --no-secrets to go on "
                "without them") from None
        if exc.status == 403:
            raise KubetunnelError(f"you may not read ConfigMap {ns}/{name}, which the "
                                  "container uses ({exc})") from None
        raise
    return obj


async def _services(client: Any, ns: str) -> Sequence[Obj]:
    from kubetunnel.kube import ApiError

    found: list[Obj] = []
    try:
        found.extend((await client.get(f"/api/v1/namespaces/{ns}/services")).get("items", []))
    except ApiError as exc:
        log.warning("env.services_unreadable", namespace=ns, status=exc.status)
    if ns != envvars.MASTER_SERVICE[0]:
        try:
            found.append(await client.get("/api/v1/namespaces/default/services/kubernetes"))
        except ApiError as exc:
            log.debug("env.master_service_unreadable", status=exc.status)
    return found


async def _allocatable(client: Any, pod: Obj, container: Obj,
                       volumes: Sequence[Mapping[str, Any]]) -> Mapping[str, str] | None:
    """The node's allocatable, which stands in for unset limits; read only when asked for."""
    from kubetunnel.kube import ApiError

    text = json.dumps([container.get("env"), list(volumes)])
    node = (pod.get("spec") or {}).get("nodeName")
    if "resourceFieldRef" not in text or not node:
        return None
    try:
        obj = await client.get(f"/api/v1/nodes/{node}")
    except ApiError as exc:
        log.debug("env.node_unreadable", node=node, status=exc.status)
        return None
    return dict((obj.get("status") or {}).get("allocatable") or {})
