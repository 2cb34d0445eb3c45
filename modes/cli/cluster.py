"""What the CLI reads from the cluster, each with the one-line error a person can act on."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from kubetunnel.errors import KubetunnelError, UsageError
from kubetunnel.records import PortMapping, TunnelRecord

TUNNEL_LABEL = "kubetunnel.dev/tunnel"
OPERATOR_SERVICE = "kubetunnel-operator"


async def get_service(client: Any, namespace: str, name: str) -> dict[str, Any]:
    from kubetunnel.kube import ApiError

    try:
        path = f"/api/v1/namespaces/{namespace}/services/{name}"
        service: dict[str, Any] = await client.get(path)
    except ApiError as exc:
        if exc.status == 404:
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
        labelSelector=f"{TUNNEL_LABEL}={record.name}",
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
