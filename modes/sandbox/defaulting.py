"""Defaults kube-apiserver fills in for the built-in kinds the sandbox serves.

Only the defaults that clients and controllers observably rely on; each mirrors the
corresponding SetDefaults_* function of the API (read, not copied).
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]

# Service ClusterIPs come from a loopback range so that part 2's loopback proxy can bind them.
SERVICE_CIDR = ipaddress.ip_network("127.10.0.0/16")
NODE_PORTS = range(30000, 32768)


class Allocator:
    """ClusterIPs and NodePorts in use, so that each is handed out once."""

    def __init__(self, service_cidr: str | None = None) -> None:
        self.cidr = ipaddress.ip_network(service_cidr) if service_cidr else SERVICE_CIDR
        self.ips: set[str] = set()
        self.node_ports: set[int] = set()
        self._next_ip = 1
        self._next_port = NODE_PORTS.start

    def cluster_ip(self) -> str:
        hosts = self.cidr.num_addresses - 2
        for _ in range(hosts):
            ip = str(self.cidr.network_address + self._next_ip)
            self._next_ip = self._next_ip % hosts + 1
            if ip not in self.ips:
                self.ips.add(ip)
                return ip
        raise RuntimeError("service IP range exhausted")

    def node_port(self) -> int:
        for _ in NODE_PORTS:
            port = self._next_port
            self._next_port = port + 1 if port + 1 < NODE_PORTS.stop else NODE_PORTS.start
            if port not in self.node_ports:
                self.node_ports.add(port)
                return port
        raise RuntimeError("node port range exhausted")

    def release(self, service: Obj) -> None:
        spec = service.get("spec") or {}
        for ip in spec.get("clusterIPs") or [spec.get("clusterIP")]:
            self.ips.discard(ip)
        for port in _dicts(spec.get("ports")):
            self.node_ports.discard(port.get("nodePort"))


def _dicts(value: Any) -> list[Obj]:
    """The objects of a list field (validation has already rejected other shapes)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _container(c: Obj) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    image = str(c.get("image", ""))
    tagged = ":" in image.rpartition("/")[2] or "@" in image
    latest = image.endswith(":latest") or not tagged
    c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    c.setdefault("resources", {})
    for port in _dicts(c.get("ports")):
        port.setdefault("protocol", "TCP")


def pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        if isinstance(c, dict):
            _container(c)


def _template(obj: Obj) -> None:
    template = (obj.get("spec") or {}).get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        pod_spec(template["spec"])


def pod(obj: Obj, alloc: Allocator) -> None:
    spec = obj.setdefault("spec", {})
    pod_spec(spec)
    # The ServiceAccount admission plugin names the namespace's default account.
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    # Defaulted on pods only, not on the pod templates of workloads (SetDefaults_Pod).
    spec.setdefault("enableServiceLinks", True)
    _default_tolerations(spec)
    _service_account_volume(spec)


# The DefaultTolerationSeconds admission plugin: a pod tolerates a not-ready or unreachable
# node for five minutes unless it says otherwise.
_NODE_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


def _default_tolerations(spec: Obj) -> None:
    tolerations = spec.get("tolerations")
    tolerations = tolerations if isinstance(tolerations, list) else []
    for key in _NODE_TAINTS:
        if not any(isinstance(t, dict) and t.get("key") == key
                   and t.get("effect") in ("NoExecute", None, "") for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                                "tolerationSeconds": 300})
    spec["tolerations"] = tolerations


TOKEN_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"  # noqa: S105  # a path
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # apiserver's name generator's alphabet


def _service_account_volume(spec: Obj) -> None:
    """The ServiceAccount admission plugin's projected token volume, mounted in every container
    (the sandbox's kubelet hands the token over as a kubeconfig instead of mounting it)."""
    containers = [c for key in ("initContainers", "containers")
                  for c in _dicts(spec.get(key))]
    if spec.get("automountServiceAccountToken") is False or any(
            m.get("mountPath") == TOKEN_MOUNT for c in containers
            for m in _dicts(c.get("volumeMounts"))):
        return
    name = "kube-api-access-" + "".join(secrets.choice(_NAME_CHARS) for _ in range(5))
    volumes = spec.get("volumes")
    volumes = volumes if isinstance(volumes, list) else []
    spec["volumes"] = [*volumes, {"name": name, "projected": {"sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt",
                       "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
            "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ], "defaultMode": 420}}]
    for c in containers:
        mounts = c.get("volumeMounts")
        mounts = mounts if isinstance(mounts, list) else []
        c["volumeMounts"] = [*mounts, {"name": name, "readOnly": True, "mountPath": TOKEN_MOUNT}]


def service(obj: Obj, alloc: Allocator) -> None:
    spec = obj.setdefault("spec", {})
    kind = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if kind != "ExternalName":
        if not spec.get("clusterIP"):
            ip = alloc.cluster_ip()
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        else:
            if spec["clusterIP"] != "None":
                alloc.ips.add(spec["clusterIP"])
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in _dicts(spec.get("ports")):
        port.setdefault("protocol", "TCP")
        if "port" in port:
            port.setdefault("targetPort", port["port"])
        if kind in ("NodePort", "LoadBalancer") and not port.get("nodePort"):
            port["nodePort"] = alloc.node_port()
    if kind in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    obj.setdefault("status", {}).setdefault("loadBalancer", {})


def secret(obj: Obj, alloc: Allocator) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {}) or {}
        obj["data"] = data
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def deployment(obj: Obj, alloc: Allocator) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _template(obj)
    obj.setdefault("status", {})  # a struct, always serialized by kube-apiserver


def replicaset(obj: Obj, alloc: Allocator) -> None:
    obj.setdefault("spec", {}).setdefault("replicas", 1)
    _template(obj)


def namespace(obj: Obj, alloc: Allocator) -> None:
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    name = obj["metadata"].get("name", "")
    labels = obj["metadata"].setdefault("labels", {}) or {}
    obj["metadata"]["labels"] = labels
    labels["kubernetes.io/metadata.name"] = name


def network_policy(obj: Obj, alloc: Allocator) -> None:
    spec = obj.setdefault("spec", {})
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress", *(["Egress"] if spec.get("egress") else [])]
    for rule in [*_dicts(spec.get("ingress")), *_dicts(spec.get("egress"))]:
        for port in _dicts((rule or {}).get("ports")):
            port.setdefault("protocol", "TCP")


def role_binding(obj: Obj, alloc: Allocator) -> None:
    # A ServiceAccount subject's default group is "", which the API omits when serializing.
    for subject in _dicts(obj.get("subjects")):
        if subject.get("kind") in ("User", "Group"):
            subject.setdefault("apiGroup", "rbac.authorization.k8s.io")


def crd(obj: Obj, alloc: Allocator) -> None:
    spec = obj.setdefault("spec", {})
    names = spec.setdefault("names", {})
    if names.get("kind"):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
    spec.setdefault("conversion", {"strategy": "None"})


DEFAULTERS: dict[tuple[str, str], Callable[[Obj, Allocator], None]] = {
    ("", "pods"): pod,
    ("", "services"): service,
    ("", "secrets"): secret,
    ("", "namespaces"): namespace,
    ("apps", "deployments"): deployment,
    ("apps", "replicasets"): replicaset,
    ("apps", "statefulsets"): replicaset,
    ("apps", "daemonsets"): lambda obj, alloc: _template(obj),
    ("networking.k8s.io", "networkpolicies"): network_policy,
    ("rbac.authorization.k8s.io", "rolebindings"): role_binding,
    ("rbac.authorization.k8s.io", "clusterrolebindings"): role_binding,
    ("apiextensions.k8s.io", "customresourcedefinitions"): crd,
}


def apply(key: tuple[str, str], obj: Obj, alloc: Allocator) -> None:
    defaulter = DEFAULTERS.get(key)
    if defaulter is not None:
        defaulter(obj, alloc)
