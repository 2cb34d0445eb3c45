"""What the CLI reads from the cluster, each with the one-line error a person can act on."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from kubetunnel.errors import KubetunnelError, UsageError
from kubetunnel.records import PortMapping, TunnelRecord

TUNNEL_LABEL = "kubetunnel.dev/tunnel"
OPERATOR_SERVICE = "kubetunnel-operator"


async def require_namespace(client: Any, namespace: str) -> None:
    """A missing namespace is a mistake of the user's: listing it just looks empty."""
    from kubetunnel.kube import ApiError

    try:
        await client.get(f"/api/v1/namespaces/{namespace}")
    except ApiError as exc:
        if exc.status == 404:
            raise UsageError(f"namespace {namespace} does not exist (kubectl get namespaces)"
                             ) from None
        if exc.status != 403:  # 403: not allowed to look, which says nothing about existence
            raise


async def get_service(client: Any, namespace: str, name: str) -> dict[str, Any]:
    from kubetunnel.kube import ApiError

    try:
        path = f"/api/v1/namespaces/{namespace}/services/{name}"
        service: dict[str, Any] = await client.get(path)
    except ApiError as exc:
        if exc.status == 404:
            await require_namespace(client, namespace)
            raise UsageError(
                f"Service {namespace}/{name} not found (kubectl -n {namespace} get services)"
            ) from None
        raise
    spec = service.get("spec", {})
    if spec.get("type") == "ExternalName":
        raise UsageError(f"Service {namespace}/{name} is an ExternalName Service; only Services "
                         "with a pod selector can be tunneled")
    if not spec.get("selector"):
        raise UsageError(f"Service {namespace}/{name} has no selector (its endpoints are "
                         "managed by hand); only Services with a pod selector can be tunneled")
    return service


async def require_operator(client: Any, operator_namespace: str) -> None:
    from kubetunnel.kube import ApiError

    try:
        await client.get(f"/api/v1/namespaces/{operator_namespace}/services/{OPERATOR_SERVICE}")
    except ApiError as exc:
        if exc.status == 404:
            raise KubetunnelError(
                f"the KubeTunnel operator is not installed (no Service {OPERATOR_SERVICE} in "
                f"namespace {operator_namespace}); run: kubetunnel cli install"
            ) from None
        raise


def agent_object_name(record: TunnelRecord) -> str:
    return f"kubetunnel-{record.service}"[:63].rstrip("-")


async def tunnel_token(client: Any, namespace: str, record: TunnelRecord) -> str:
    from kubetunnel.kube import ApiError

    name = agent_object_name(record)
    try:
        secret = await client.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
    except ApiError as exc:
        if exc.status == 403:
            raise KubetunnelError(f"you need get on secrets in namespace {namespace} to read "
                                  "the tunnel token") from None
        raise
    raw = (secret.get("data") or {}).get("token")
    if not raw:
        raise KubetunnelError(f"Secret {namespace}/{name} holds no tunnel token yet")
    return base64.b64decode(raw).decode().strip()


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


async def agent_pod(client: Any, record: TunnelRecord) -> tuple[dict[str, Any] | None, str]:
    """The Ready tunnel pod of the record, or None and why not (for the progress line)."""
    pods = await client.get(
        f"/api/v1/namespaces/{record.namespace}/pods",
        labelSelector=f"{TUNNEL_LABEL}={record.agent_tunnel}",
    )
    items = [p for p in pods.get("items", []) if not p["metadata"].get("deletionTimestamp")]
    for pod in items:
        if _ready(pod):
            return pod, "ready"
    if not items:
        return None, "no pod yet"
    pod = items[0]
    for status in pod.get("status", {}).get("containerStatuses", []):
        waiting = status.get("state", {}).get("waiting")
        if waiting:
            reason = waiting.get("reason", "waiting")
            message = waiting.get("message", "")
            return None, f"pod {pod['metadata']['name']} {reason}" + (
                f": {message}" if message else "")
    return None, f"pod {pod['metadata']['name']} {pod.get('status', {}).get('phase', 'Pending')}"


def agent_ports(pod: dict[str, Any], mappings: Sequence[PortMapping]) -> dict[int | str, int]:
    """Tunnel port and, per Service port, the agent port its traffic arrives on."""
    container_ports = [p for c in pod["spec"]["containers"] for p in c.get("ports", [])]
    by_name = {p["name"]: p["containerPort"] for p in container_ports if p.get("name")}
    numbers = {p["containerPort"] for p in container_ports}
    if "tunnel" not in by_name:
        raise KubetunnelError(f"tunnel pod {pod['metadata']['name']} has no port named 'tunnel'")
    result: dict[int | str, int] = {"tunnel": by_name["tunnel"]}
    for mapping in mappings:
        target = mapping.target_port if mapping.target_port is not None else mapping.service_port
        if isinstance(target, str) and not target.isdigit():
            if target not in by_name:
                raise KubetunnelError(f"tunnel pod has no port named {target!r}")
            result[mapping.service_port] = by_name[target]
        else:
            number = int(target)
            if number not in numbers:
                raise KubetunnelError(f"tunnel pod does not listen on target port {number}")
            result[mapping.service_port] = number
    return result


def refuse_shared_agent_ports(ports: dict[int | str, int],
                              mappings: Sequence[PortMapping]) -> None:
    """A named target port may resolve to the number another mapping uses: one agent port
    cannot route to two local ports, so refuse rather than send traffic to the wrong one."""
    local_of: dict[int, PortMapping] = {}
    for mapping in mappings:
        agent_port = ports[mapping.service_port]
        first = local_of.setdefault(agent_port, mapping)
        if first.local_port != mapping.local_port:
            raise UsageError(
                f"Service ports {first.service_port} and {mapping.service_port} both arrive on "
                f"the tunnel pod's port {agent_port}; map them to the same local port"
            )


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool | None:
    """Whether a label selector selects ``labels``; None when it uses expressions we skip."""
    if selector.get("matchExpressions"):
        return None
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _allows_own_namespace(rule: dict[str, Any], namespace: str) -> bool:
    peers = rule.get("to")
    if not peers:
        return True  # no `to`: every destination
    for peer in peers:
        if "ipBlock" in peer:
            continue
        ns_selector = peer.get("namespaceSelector")
        if ns_selector is None:
            return True  # a podSelector alone means pods of the policy's own namespace
        labels = {"kubernetes.io/metadata.name": namespace}
        if _selects(ns_selector, labels) is not False:
            return True
    return False


def egress_blockers(policies: list[dict[str, Any]], namespace: str,
                    pod_labels: dict[str, str]) -> list[str]:
    """Names of the policies that isolate the tunnel pod for egress without letting it reach
    its own namespace, when no other policy lets it: what makes `forward` through the tunnel
    fail for that namespace's Services (docs/network.md, --allow-namespace-egress)."""
    isolating: list[str] = []
    for policy in policies:
        spec = policy.get("spec", {})
        types = spec.get("policyTypes") or (["Egress"] if "egress" in spec else ["Ingress"])
        if "Egress" not in types:
            continue
        selected = _selects(spec.get("podSelector") or {}, pod_labels)
        if selected is None:
            return []  # a selector we do not evaluate: say nothing rather than guess
        if not selected:
            continue
        if any(_allows_own_namespace(rule, namespace) for rule in spec.get("egress") or []):
            return []
        isolating.append(policy["metadata"]["name"])
    return isolating


async def namespace_egress_warning(client: Any, namespace: str,
                                   pod_labels: dict[str, str]) -> str | None:
    from kubetunnel.kube import ApiError

    try:
        listing = await client.get(
            f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies")
    except ApiError:
        return None  # no permission to look: nothing to say
    blockers = egress_blockers(listing.get("items", []), namespace, pod_labels)
    if not blockers:
        return None
    return (f"network policy {', '.join(blockers)} in {namespace} blocks the tunnel pod's "
            f"connections to {namespace}'s own pods, so forwarded connections to its Services "
            "will fail; render the policies with --allow-namespace-egress (docs/network.md)")
