"""Per-kind rules beyond the schema: what kube-apiserver's strategies and validation functions
enforce that the OpenAPI schema cannot say (immutable fields, selector/label agreement, status
reset on create, pod update restrictions).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from typing import Any

from modes.sandbox import validation
from modes.sandbox.errors import bad_request, cause
from modes.sandbox.resources import ResourceType
from modes.sandbox.selectors import Requirement

Obj = dict[str, Any]

# Kinds whose names must be DNS-1123 labels (no dots) or DNS-1035 labels (start with a letter).
# Service names are DNS-1123 labels since Kubernetes 1.34 (RelaxedServiceNameValidation).
LABEL_NAMED = {("", "namespaces"), ("", "serviceaccounts"), ("", "services")}
DNS1035_NAMED: set[tuple[str, str]] = set()
# Kinds whose names are free-form path segments (RBAC allows ':' in role names, for example).
PATH_NAMED = {
    ("rbac.authorization.k8s.io", p)
    for p in ("roles", "rolebindings", "clusterroles", "clusterrolebindings")
}


def prepare_create(rt: ResourceType, obj: Obj) -> None:
    """Strategy.PrepareForCreate: status comes from the server, never from the creator."""
    if rt.has_status and rt.key != ("", "namespaces"):
        obj.pop("status", None)
    if rt.key == ("", "pods"):
        obj["status"] = {"phase": "Pending", "qosClass": _qos(obj)}
    elif rt.key == ("", "namespaces"):
        obj["status"] = {"phase": "Active"}
    elif rt.key == ("authorization.k8s.io", "selfsubjectaccessreviews"):
        obj["status"] = {"allowed": True, "reason": "the sandbox authorizes every request"}


def _qos(pod: Obj) -> str:
    spec = pod.get("spec")
    containers = spec.get("containers") if isinstance(spec, dict) else None
    containers = containers if isinstance(containers, list) else []
    resources = [c.get("resources") or {} for c in containers if isinstance(c, dict)]
    resources = [r for r in resources if isinstance(r, dict)]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        r.get("limits")
        and (not r.get("requests") or r.get("requests") == r.get("limits"))
        and {"cpu", "memory"} <= set(r["limits"])
        for r in resources
    )
    return "Guaranteed" if guaranteed else "Burstable"


def name_pattern(rt: ResourceType) -> Any:
    if rt.key in LABEL_NAMED:
        return validation.DNS1123_LABEL
    if rt.key in DNS1035_NAMED:
        return validation.DNS1035_LABEL
    return None if rt.key in PATH_NAMED else validation.DNS1123_SUBDOMAIN


QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")


def check_decoding(rt: ResourceType, obj: Obj) -> None:
    """What kube-apiserver's decoder rejects (400) before validation: bad base64, quantities."""
    if rt.key == ("", "secrets") or rt.key == ("", "configmaps"):
        field = "data" if rt.plural == "secrets" else "binaryData"
        data = obj.get(field)
        for key, value in (data if isinstance(data, dict) else {}).items():
            try:
                base64.b64decode(str(value), validate=True)
            except (binascii.Error, ValueError):
                raise bad_request(
                    f'{rt.kind} in version "v1" cannot be handled as a {rt.kind}: '
                    f"illegal base64 data in {field}[{key}]"
                ) from None
    for path, value in _quantities(obj, ""):
        if not isinstance(value, (str, int, float)) or not QUANTITY.match(str(value)):
            raise bad_request(
                f'{rt.kind} in version "{rt.storage_version}" cannot be handled as a {rt.kind}: '
                f"{path}: quantities must match the regular expression '{QUANTITY.pattern}'"
            )


def _quantities(node: Any, path: str) -> list[tuple[str, Any]]:
    """Values of resources.limits/requests anywhere in a pod spec (or a template's)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else key
            if key == "resources" and isinstance(value, dict):
                for kind in ("limits", "requests"):
                    for name, quantity in (value.get(kind) or {}).items():
                        found.append((f"{here}.{kind}.{name}", quantity))
            else:
                found += _quantities(value, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += _quantities(item, f"{path}[{i}]")
    return found


def check(rt: ResourceType, obj: Obj, old: Obj | None) -> list[Obj]:
    """Field causes for a create (old is None) or an update."""
    causes: list[Obj] = check_enums(rt, obj)
    raw_spec = obj.get("spec")
    spec: Obj = raw_spec if isinstance(raw_spec, dict) else {}
    old_spec = (old or {}).get("spec") or {}
    if rt.key in {
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
    }:
        causes += _selector_matches(spec)
        if old is not None and spec.get("selector") != old_spec.get("selector"):
            causes.append(
                cause(
                    "spec.selector",
                    "FieldValueInvalid",
                    f"Invalid value: {json.dumps(spec.get('selector'))}: field is immutable",
                )
            )
    elif rt.key == ("", "services"):
        causes += _service(spec, old_spec if old is not None else None)
    elif rt.key == ("", "pods"):
        if not spec.get("containers"):
            causes.append(cause("spec.containers", "FieldValueRequired", "Required value"))
        for i, c in enumerate(spec.get("containers") or []):
            if isinstance(c, dict) and not c.get("image"):
                causes.append(
                    cause(f"spec.containers[{i}].image", "FieldValueRequired", "Required value")
                )
        if old is not None and _pod_spec_frozen(spec) != _pod_spec_frozen(old_spec):
            causes.append(
                cause(
                    "spec",
                    "FieldValueForbidden",
                    "Forbidden: pod updates may not change fields other than "
                    "`spec.containers[*].image`,"
                    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
                    "`spec.tolerations` (only additions to existing tolerations),"
                    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
                    "previously negative)",
                )
            )
    elif rt.key == ("", "configmaps") or rt.key == ("", "secrets"):
        for key in [*(obj.get("data") or {}), *(obj.get("binaryData") or {})]:
            if not key or len(key) > 253 or not all(ch.isalnum() or ch in "-_." for ch in key):
                causes.append(
                    cause(
                        f"data[{key}]",
                        "FieldValueInvalid",
                        f"Invalid value: {json.dumps(key)}: a valid config key must consist of "
                        "alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
                        "'KEY_NAME',  or 'key-name', regex used for validation is "
                        "'[-._a-zA-Z0-9]+')",
                    )
                )
        if (
            old is not None
            and old.get("immutable")
            and (
                obj.get("data") != old.get("data") or obj.get("binaryData") != old.get("binaryData")
            )
        ):
            causes.append(
                cause(
                    "data",
                    "FieldValueForbidden",
                    "Forbidden: field is immutable when `immutable` is set",
                )
            )
        if rt.plural == "secrets" and old is not None and obj.get("type") != old.get("type"):
            causes.append(
                cause(
                    "type",
                    "FieldValueInvalid",
                    f"Invalid value: {json.dumps(obj.get('type'))}: field is immutable",
                )
            )
    return causes


PROTOCOLS = ("SCTP", "TCP", "UDP")
_POD_ENUMS = (
    ("restartPolicy", ("Always", "OnFailure", "Never")),
    ("dnsPolicy", ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")),
    ("containers[*].imagePullPolicy", ("Always", "IfNotPresent", "Never")),
    ("containers[*].ports[*].protocol", PROTOCOLS),
    ("initContainers[*].imagePullPolicy", ("Always", "IfNotPresent", "Never")),
)
_TEMPLATED = tuple((f"spec.template.spec.{p}", v) for p, v in _POD_ENUMS)
# Enumerations the Go validation enforces but the OpenAPI schemas only describe in prose.
ENUMS: dict[tuple[str, str], tuple[tuple[str, tuple[str, ...]], ...]] = {
    ("", "pods"): tuple((f"spec.{p}", v) for p, v in _POD_ENUMS),
    ("", "services"): (
        ("spec.type", ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")),
        ("spec.sessionAffinity", ("ClientIP", "None")),
        ("spec.ports[*].protocol", PROTOCOLS),
    ),
    ("apps", "deployments"): (*_TEMPLATED, ("spec.strategy.type", ("Recreate", "RollingUpdate"))),
    ("apps", "replicasets"): _TEMPLATED,
    ("apps", "statefulsets"): _TEMPLATED,
    ("apps", "daemonsets"): _TEMPLATED,
    ("networking.k8s.io", "networkpolicies"): (
        ("spec.policyTypes[*]", ("Egress", "Ingress")),
        ("spec.ingress[*].ports[*].protocol", PROTOCOLS),
        ("spec.egress[*].ports[*].protocol", PROTOCOLS),
    ),
}


def _values(node: Any, parts: list[str], path: str) -> list[tuple[str, Any]]:
    if not parts:
        return [(path, node)]
    part, rest = parts[0], parts[1:]
    key, star = (part[:-3], True) if part.endswith("[*]") else (part, False)
    child = node.get(key) if isinstance(node, dict) else None
    if child is None:
        return []
    here = f"{path}.{key}" if path else key
    if not star:
        return _values(child, rest, here)
    found = []
    for i, item in enumerate(child if isinstance(child, list) else []):
        found += _values(item, rest, f"{here}[{i}]")
    return found


def check_enums(rt: ResourceType, obj: Obj) -> list[Obj]:
    causes = []
    for path, allowed in ENUMS.get(rt.key, ()):
        for field, value in _values(obj, path.split("."), ""):
            if value not in allowed:
                supported = ", ".join(f'"{a}"' for a in allowed)
                causes.append(
                    cause(
                        field,
                        "FieldValueNotSupported",
                        f"Unsupported value: {json.dumps(value)}: supported values: {supported}",
                    )
                )
    return causes


def _selector_matches(spec: Obj) -> list[Obj]:
    selector = spec.get("selector")
    if not isinstance(selector, dict):
        return []
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return [
            cause(
                "spec.selector",
                "FieldValueInvalid",
                "Invalid value: {}: empty selector is invalid for deployment",
            )
        ]
    labels = (((spec.get("template") or {}).get("metadata") or {}).get("labels")) or {}
    requirements = [
        Requirement(k, "=", frozenset({str(v)}))
        for k, v in (selector.get("matchLabels") or {}).items()
    ]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expr in selector.get("matchExpressions") or []:
        op = ops.get(expr.get("operator", ""))
        if op is None:
            return [
                cause(
                    "spec.selector.matchExpressions",
                    "FieldValueNotSupported",
                    f"Unsupported value: {json.dumps(expr.get('operator'))}",
                )
            ]
        requirements.append(
            Requirement(expr.get("key", ""), op, frozenset(expr.get("values") or []))
        )
    if not all(r.matches(labels) for r in requirements):
        return [
            cause(
                "spec.template.metadata.labels",
                "FieldValueInvalid",
                f"Invalid value: {json.dumps(labels)}: `selector` does not match template `labels`",
            )
        ]
    return []


def _service(spec: Obj, old_spec: Obj | None) -> list[Obj]:
    causes = []
    kind = spec.get("type", "ClusterIP")
    if kind != "ExternalName" and spec.get("clusterIP") != "None" and not spec.get("ports"):
        causes.append(cause("spec.ports", "FieldValueRequired", "Required value"))
    names = set()
    for i, port in enumerate(spec.get("ports") or []):
        # In kube-apiserver's order: name, port, targetPort.
        if len(spec.get("ports") or []) > 1 and not port.get("name"):
            causes.append(cause(f"spec.ports[{i}].name", "FieldValueRequired", "Required value"))
        number = port.get("port")
        if not isinstance(number, int) or not 0 < number < 65536:
            causes.append(
                cause(
                    f"spec.ports[{i}].port",
                    "FieldValueInvalid",
                    f"Invalid value: {json.dumps(number)}: must be between 1 and 65535, inclusive",
                )
            )
        target = port.get("targetPort")
        if isinstance(target, int) and not 0 < target < 65536:
            causes.append(
                cause(
                    f"spec.ports[{i}].targetPort",
                    "FieldValueInvalid",
                    f"Invalid value: {json.dumps(target)}: must be between 1 and 65535, inclusive",
                )
            )
        if port.get("name") and port.get("name") in names:
            causes.append(
                cause(
                    f"spec.ports[{i}].name",
                    "FieldValueDuplicate",
                    f"Duplicate value: {json.dumps(port.get('name'))}",
                )
            )
        names.add(port.get("name"))
    if (
        old_spec is not None
        and old_spec.get("clusterIP")
        and spec.get("clusterIP") != old_spec.get("clusterIP")
        and kind != "ExternalName"
    ):
        causes.append(
            cause(
                "spec.clusterIPs[0]",
                "FieldValueInvalid",
                # kube-apiserver shows the whole new clusterIPs list, the first being clusterIP.
                f"Invalid value: {_go_json(_new_cluster_ips(spec))}: may not change once set",
            )
        )
    return causes


def _pod_spec_frozen(spec: Obj) -> Obj:
    frozen = copy.deepcopy(spec)
    for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
        frozen.pop(key, None)
    for group in ("containers", "initContainers"):
        for c in frozen.get(group) or []:
            if isinstance(c, dict):
                c.pop("image", None)
    return frozen


def carry_over(rt: ResourceType, obj: Obj, old: Obj) -> None:
    """Server-owned values a full update may leave out (ClusterIP, NodePorts)."""
    if rt.key != ("", "services"):
        return
    spec, old_spec = obj.setdefault("spec", {}), old.get("spec") or {}
    if not spec.get("clusterIP") and old_spec.get("clusterIP"):
        spec["clusterIP"] = old_spec["clusterIP"]
        spec["clusterIPs"] = old_spec.get("clusterIPs", [old_spec["clusterIP"]])
    old_ports = {(p.get("port"), p.get("protocol", "TCP")): p for p in old_spec.get("ports") or []}
    for port in spec.get("ports") or []:
        previous = old_ports.get((port.get("port"), port.get("protocol", "TCP")))
        if previous and previous.get("nodePort") and not port.get("nodePort"):
            port["nodePort"] = previous["nodePort"]


def _new_cluster_ips(spec: Obj) -> list[Any]:
    ips = spec.get("clusterIPs")
    rest = ips[1:] if isinstance(ips, list) else []
    return [spec.get("clusterIP"), *rest]


def _go_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
