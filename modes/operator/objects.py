"""The objects each record owns, as the operator wants them: the agent Deployment, its token
Secret and its ServiceAccount.

All three are named ``kubetunnel-<service>``: one tunnel per Service, so the name itself makes a
second Deployment for the same Service impossible, and ``kubectl get deploy`` shows at a glance
which Service is tunneled.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from kubetunnel.records import TunnelRecord

APP_LABEL = "we-dcode-app"
APP_VALUE = "kubetunnel"
TUNNEL_LABEL = "kubetunnel.dev/tunnel"
SPEC_HASH = "kubetunnel.dev/spec-hash"
RECORD_UID = "kubetunnel.dev/record-uid"
TOKEN_KEY = "token"  # noqa: S105 - the key name in the Secret, not a secret
TUNNEL_PORT_NAME = "tunnel"
HEALTH_PORT_NAME = "health"


def object_name(record: TunnelRecord) -> str:
    return f"kubetunnel-{record.service}"[:63].rstrip("-")


def origin_name(record: TunnelRecord) -> str:
    """The Service with the original selector that the agent falls back to."""
    return origin_of(object_name(record))


def origin_of(name: str) -> str:
    """The origin Service's name for the objects named ``name`` (a DNS label: 63 at most)."""
    return f"{name[:56].rstrip('-')}-origin"


def tunnel_labels(record: TunnelRecord) -> dict[str, str]:
    """The agent pod's labels; also the Service selector while the tunnel is switched in."""
    return {APP_LABEL: APP_VALUE, TUNNEL_LABEL: record.name}


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class AgentPorts:
    """Where the agent listens: the Service's target ports, plus a tunnel and a health port
    chosen so they never collide with a target port (8080 is a common one)."""

    service: tuple[tuple[int, str | None], ...]
    tunnel: int
    health: int

    @classmethod
    def plan(cls, targets: list[tuple[int, str | None]]) -> AgentPorts:
        taken = {number for number, _ in targets}
        tunnel = next(p for p in range(7000, 8000) if p not in taken)
        health = next(p for p in range(8080, 9080) if p not in taken and p != tunnel)
        return cls(tuple(dict.fromkeys(targets)), tunnel, health)


def metadata(record: TunnelRecord, owner: dict[str, Any] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": object_name(record),
        "namespace": record.namespace,
        "labels": tunnel_labels(record),
        "annotations": {RECORD_UID: record.uid},
    }
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return meta


def service_account(record: TunnelRecord, owner: dict[str, Any] | None) -> dict[str, Any]:
    # The agent never calls the Kubernetes API: no token in the pod at all.
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(record, owner),
        "automountServiceAccountToken": False,
    }


def secret(record: TunnelRecord, owner: dict[str, Any] | None, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(record, owner),
        "type": "Opaque",
        "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


def token_of(secret_obj: dict[str, Any]) -> str | None:
    raw = (secret_obj.get("data") or {}).get(TOKEN_KEY)
    if not raw:
        return None
    try:
        return base64.b64decode(raw).decode().strip() or None
    except (ValueError, UnicodeDecodeError):
        return None


def deployment(
    record: TunnelRecord,
    owner: dict[str, Any] | None,
    *,
    image: str,
    operator_url: str,
    ports: AgentPorts,
    origin_address: str | None = None,
    shared: bool = False,
) -> dict[str, Any]:
    labels = tunnel_labels(record)
    name = object_name(record)
    env = [
        {"name": "KUBETUNNEL_TUNNEL_PORT", "value": str(ports.tunnel)},
        {"name": "KUBETUNNEL_HEALTH_PORT", "value": str(ports.health)},
        {"name": "KUBETUNNEL_PORTS", "value": " ".join(str(n) for n, _ in ports.service)},
        # From the Secret through the environment, not a volume: runtimes without mounts at a
        # fixed path (the sandbox runs pods as processes) work the same way.
        {"name": "KUBETUNNEL_TOKEN_FROM_ENV", "value": "true"},
        {"name": "KUBETUNNEL_TOKEN",
         "valueFrom": {"secretKeyRef": {"name": name, "key": TOKEN_KEY}}},
        {"name": "KUBETUNNEL_OPERATOR_URL", "value": operator_url},
        {"name": "KUBETUNNEL_TUNNEL_NAME", "value": record.name},
        {"name": "KUBETUNNEL_TUNNEL_NAMESPACE",
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    if origin_address:
        # By ClusterIP, like the operator URL: no DNS needed, and the address never changes for
        # the Service's life.
        env.append({"name": "KUBETUNNEL_ORIGIN_ADDRESS", "value": origin_address})
    if shared:  # one tunnel per intercept, each request routed (modes/agent/shared.py)
        env.append({"name": "KUBETUNNEL_SHARED", "value": "true"})
    container_ports = [
        {"name": TUNNEL_PORT_NAME, "containerPort": ports.tunnel, "protocol": "TCP"},
        {"name": HEALTH_PORT_NAME, "containerPort": ports.health, "protocol": "TCP"},
    ]
    for number, port_name in ports.service:
        entry: dict[str, Any] = {"containerPort": number, "protocol": "TCP"}
        if port_name:  # a named targetPort resolves against the agent's ports once switched
            entry["name"] = port_name
        container_ports.append(entry)
    probe = {"httpGet": {"path": "/readyz", "port": HEALTH_PORT_NAME}, "periodSeconds": 2}
    container = {
        "name": "agent",
        "image": image,
        "args": ["agent"],
        "env": env,
        "ports": container_ports,
        "readinessProbe": probe,
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": HEALTH_PORT_NAME},
                          "periodSeconds": 10, "failureThreshold": 3},
        "imagePullPolicy": "IfNotPresent",
        "volumeMounts": [
            # The only writable place: the zipapp unpacks itself under SHIV_ROOT=/tmp/.shiv.
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, per pod
        ],
        # The "restricted" Pod Security Standard, like the operator's own pod.
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    spec: dict[str, Any] = {
        "replicas": 1,
        # Two agents for one tunnel would split the Service's traffic: never overlap them.
        "strategy": {"type": "Recreate"},
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "serviceAccountName": name,
                "automountServiceAccountToken": False,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                    "runAsGroup": 10001, "fsGroup": 10001,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [container],
                "volumes": [
                    {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                ],
            },
        },
    }
    meta = metadata(record, owner)
    meta["annotations"][SPEC_HASH] = spec_hash(spec)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


def spec_hash(spec: dict[str, Any]) -> str:
    """What the Deployment was last written from: drift shows as a different hash."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def origin_service(record: TunnelRecord, owner: dict[str, Any] | None, selector: dict[str, str],
                   ports: AgentPorts, targets: dict[int, int | str]) -> dict[str, Any]:
    """``kubetunnel-<service>-origin``: the Service's own pods, whatever its selector points at.

    The agent dials it when the developer's process cannot take a connection, so a failback
    never waits for the operator. Port N of the origin leads to the pods' port that the Service's
    target port N names: the agent keeps the port number it accepted the connection on.
    """
    meta = metadata(record, owner)
    meta["name"] = origin_name(record)
    service_ports = [
        {"name": f"port-{number}", "port": number, "protocol": "TCP",
         "targetPort": targets.get(number, number)}
        for number, _ in ports.service
    ]
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"type": "ClusterIP", "selector": dict(selector), "ports": service_ports}}
