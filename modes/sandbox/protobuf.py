"""Request bodies in Kubernetes' protobuf encoding (``application/vnd.kubernetes.protobuf``).

kubectl's typed commands (``kubectl create namespace``, ``configmap``, ``secret``,
``serviceaccount``, ``deployment``, ``service``, ``role``, ``rolebinding``, ``clusterrole``,
``clusterrolebinding``, ``kubectl expose``, ``kubectl auth can-i``, ``kubectl create token``)
send their object in this encoding, which kube-apiserver prefers for built-in types. The body
is the 4-byte magic ``k8s\\0`` and a ``runtime.Unknown`` message whose ``raw`` field holds the
object's message.

The sandbox decodes the messages those commands send into the same JSON object the JSON path
gets, from a table of field numbers per message (the numbers are fixed by Kubernetes' published
``generated.proto`` files and never reused). Kubernetes' encoder writes every non-pointer field
even when it holds its zero value; such a field, known or not, is dropped, as JSON's
``omitempty`` would. A field that is not in the table and holds a value, or a kind that has no
table, is refused with 415 and a message that says to send JSON instead: nothing is guessed, and
nothing a client sent is silently lost.
"""

from __future__ import annotations

import base64
import datetime
import json
from dataclasses import dataclass
from typing import Any

from modes.sandbox.errors import ApiError, bad_request

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"


@dataclass(frozen=True)
class Field:
    name: str
    # "string", "bytes" (base64 in JSON), "raw" (the bytes themselves), "int", "bool", "time",
    # "intorstring", "json" (a FieldsV1 blob), a message name, or "map:<value kind>".
    kind: str = "string"
    repeated: bool = False
    pointer: bool = False  # a Go pointer: sent only when set, so a zero value means zero


def _f(name: str, kind: str = "string", *, repeated: bool = False,
       pointer: bool = False) -> Field:
    return Field(name, kind, repeated, pointer)


MESSAGES: dict[str, dict[int, Field]] = {
    "Unknown": {1: _f("typeMeta", "TypeMeta"), 2: _f("raw", "raw"),
                3: _f("contentEncoding"), 4: _f("contentType")},
    "TypeMeta": {1: _f("apiVersion"), 2: _f("kind")},
    "ObjectMeta": {
        1: _f("name"), 2: _f("generateName"), 3: _f("namespace"), 4: _f("selfLink"),
        5: _f("uid"), 6: _f("resourceVersion"), 7: _f("generation", "int"),
        8: _f("creationTimestamp", "time"), 9: _f("deletionTimestamp", "time"),
        10: _f("deletionGracePeriodSeconds", "int", pointer=True),
        11: _f("labels", "map:string"), 12: _f("annotations", "map:string"),
        13: _f("ownerReferences", "OwnerReference", repeated=True),
        14: _f("finalizers", repeated=True),
        17: _f("managedFields", "ManagedFieldsEntry", repeated=True),
    },
    "OwnerReference": {1: _f("kind"), 3: _f("name"), 4: _f("uid"), 5: _f("apiVersion"),
                       6: _f("controller", "bool", pointer=True),
                       7: _f("blockOwnerDeletion", "bool", pointer=True)},
    "ManagedFieldsEntry": {1: _f("manager"), 2: _f("operation"), 3: _f("apiVersion"),
                           4: _f("time", "time"), 6: _f("fieldsType"),
                           7: _f("fieldsV1", "FieldsV1"), 8: _f("subresource")},
    "FieldsV1": {1: _f("Raw", "json")},
    "LabelSelector": {1: _f("matchLabels", "map:string"),
                      2: _f("matchExpressions", "LabelSelectorRequirement", repeated=True)},
    "LabelSelectorRequirement": {1: _f("key"), 2: _f("operator"),
                                 3: _f("values", repeated=True)},
    # core/v1
    "Namespace": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "NamespaceSpec"),
                  3: _f("status", "NamespaceStatus")},
    "NamespaceSpec": {1: _f("finalizers", repeated=True)},
    "NamespaceStatus": {1: _f("phase")},
    "ConfigMap": {1: _f("metadata", "ObjectMeta"), 2: _f("data", "map:string"),
                  3: _f("binaryData", "map:bytes"),
                  4: _f("immutable", "bool", pointer=True)},
    "Secret": {1: _f("metadata", "ObjectMeta"), 2: _f("data", "map:bytes"), 3: _f("type"),
               4: _f("stringData", "map:string"), 5: _f("immutable", "bool", pointer=True)},
    "ServiceAccount": {1: _f("metadata", "ObjectMeta"),
                       2: _f("secrets", "ObjectReference", repeated=True),
                       3: _f("imagePullSecrets", "LocalObjectReference", repeated=True),
                       4: _f("automountServiceAccountToken", "bool", pointer=True)},
    "ObjectReference": {1: _f("kind"), 2: _f("namespace"), 3: _f("name"), 4: _f("uid"),
                        5: _f("apiVersion"), 6: _f("resourceVersion"), 7: _f("fieldPath")},
    "LocalObjectReference": {1: _f("name")},
    "Service": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "ServiceSpec"),
                3: _f("status", "ServiceStatus")},
    "ServiceSpec": {
        1: _f("ports", "ServicePort", repeated=True), 2: _f("selector", "map:string"),
        3: _f("clusterIP"), 4: _f("type"), 5: _f("externalIPs", repeated=True),
        7: _f("sessionAffinity"), 8: _f("loadBalancerIP"),
        9: _f("loadBalancerSourceRanges", repeated=True), 10: _f("externalName"),
        11: _f("externalTrafficPolicy"), 12: _f("healthCheckNodePort", "int"),
        13: _f("publishNotReadyAddresses", "bool"), 17: _f("ipFamilyPolicy", pointer=True),
        18: _f("clusterIPs", repeated=True), 19: _f("ipFamilies", repeated=True),
        20: _f("allocateLoadBalancerNodePorts", "bool", pointer=True),
        21: _f("loadBalancerClass", pointer=True), 22: _f("internalTrafficPolicy", pointer=True),
    },
    "ServicePort": {1: _f("name"), 2: _f("protocol"), 3: _f("port", "int"),
                    4: _f("targetPort", "intorstring"), 5: _f("nodePort", "int"),
                    6: _f("appProtocol", pointer=True)},
    "ServiceStatus": {},
    "PodTemplateSpec": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "PodSpec")},
    "PodSpec": {
        2: _f("containers", "Container", repeated=True), 3: _f("restartPolicy"),
        4: _f("terminationGracePeriodSeconds", "int", pointer=True),
        5: _f("activeDeadlineSeconds", "int", pointer=True), 6: _f("dnsPolicy"),
        7: _f("nodeSelector", "map:string"), 8: _f("serviceAccountName"),
        9: _f("serviceAccount"), 10: _f("nodeName"), 11: _f("hostNetwork", "bool"),
        12: _f("hostPID", "bool"), 13: _f("hostIPC", "bool"),
        15: _f("imagePullSecrets", "LocalObjectReference", repeated=True),
        16: _f("hostname"), 17: _f("subdomain"), 19: _f("schedulerName"),
        20: _f("initContainers", "Container", repeated=True),
        21: _f("automountServiceAccountToken", "bool", pointer=True),
        24: _f("priorityClassName"), 30: _f("enableServiceLinks", "bool", pointer=True),
    },
    "Container": {
        1: _f("name"), 2: _f("image"), 3: _f("command", repeated=True),
        4: _f("args", repeated=True), 5: _f("workingDir"),
        6: _f("ports", "ContainerPort", repeated=True), 7: _f("env", "EnvVar", repeated=True),
        8: _f("resources", "ResourceRequirements"), 13: _f("terminationMessagePath"),
        14: _f("imagePullPolicy"), 16: _f("stdin", "bool"), 17: _f("stdinOnce", "bool"),
        18: _f("tty", "bool"), 20: _f("terminationMessagePolicy"),
    },
    "ContainerPort": {1: _f("name"), 2: _f("hostPort", "int"), 3: _f("containerPort", "int"),
                      4: _f("protocol"), 5: _f("hostIP")},
    "EnvVar": {1: _f("name"), 2: _f("value")},
    "ResourceRequirements": {1: _f("limits", "map:Quantity"), 2: _f("requests", "map:Quantity")},
    "Quantity": {1: _f("string")},
    # apps/v1
    "Deployment": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "DeploymentSpec"),
                   3: _f("status", "DeploymentStatus")},
    "DeploymentSpec": {
        1: _f("replicas", "int", pointer=True), 2: _f("selector", "LabelSelector"),
        3: _f("template", "PodTemplateSpec"), 4: _f("strategy", "DeploymentStrategy"),
        5: _f("minReadySeconds", "int"), 6: _f("revisionHistoryLimit", "int", pointer=True),
        7: _f("paused", "bool"), 9: _f("progressDeadlineSeconds", "int", pointer=True),
    },
    "DeploymentStrategy": {1: _f("type"), 2: _f("rollingUpdate", "RollingUpdateDeployment")},
    "RollingUpdateDeployment": {1: _f("maxUnavailable", "intorstring", pointer=True),
                                2: _f("maxSurge", "intorstring", pointer=True)},
    "DeploymentStatus": {1: _f("observedGeneration", "int"), 2: _f("replicas", "int"),
                         3: _f("updatedReplicas", "int"), 4: _f("availableReplicas", "int"),
                         5: _f("unavailableReplicas", "int"), 7: _f("readyReplicas", "int")},
    # rbac.authorization.k8s.io/v1
    "Role": {1: _f("metadata", "ObjectMeta"), 2: _f("rules", "PolicyRule", repeated=True)},
    "ClusterRole": {1: _f("metadata", "ObjectMeta"), 2: _f("rules", "PolicyRule", repeated=True),
                    3: _f("aggregationRule", "AggregationRule")},
    "AggregationRule": {1: _f("clusterRoleSelectors", "LabelSelector", repeated=True)},
    "PolicyRule": {1: _f("verbs", repeated=True), 2: _f("apiGroups", repeated=True),
                   3: _f("resources", repeated=True), 4: _f("resourceNames", repeated=True),
                   5: _f("nonResourceURLs", repeated=True)},
    "RoleBinding": {1: _f("metadata", "ObjectMeta"), 2: _f("subjects", "Subject", repeated=True),
                    3: _f("roleRef", "RoleRef")},
    "Subject": {1: _f("kind"), 2: _f("apiGroup"), 3: _f("name"), 4: _f("namespace")},
    "RoleRef": {1: _f("apiGroup"), 2: _f("kind"), 3: _f("name")},
    # authentication.k8s.io/v1
    "TokenRequest": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "TokenRequestSpec"),
                     3: _f("status", "TokenRequestStatus")},
    "TokenRequestSpec": {1: _f("audiences", repeated=True),
                         3: _f("boundObjectRef", "BoundObjectReference"),
                         4: _f("expirationSeconds", "int", pointer=True)},
    "BoundObjectReference": {1: _f("kind"), 2: _f("apiVersion"), 3: _f("name"), 4: _f("uid")},
    "TokenRequestStatus": {1: _f("token"), 2: _f("expirationTimestamp", "time")},
    # authorization.k8s.io/v1
    "SelfSubjectAccessReview": {1: _f("metadata", "ObjectMeta"),
                                2: _f("spec", "SelfSubjectAccessReviewSpec"),
                                3: _f("status", "SubjectAccessReviewStatus")},
    "SelfSubjectAccessReviewSpec": {1: _f("resourceAttributes", "ResourceAttributes"),
                                    2: _f("nonResourceAttributes", "NonResourceAttributes")},
    "ResourceAttributes": {1: _f("namespace"), 2: _f("verb"), 3: _f("group"), 4: _f("version"),
                           5: _f("resource"), 6: _f("subresource"), 7: _f("name")},
    "NonResourceAttributes": {1: _f("path"), 2: _f("verb")},
    "SelfSubjectRulesReview": {1: _f("metadata", "ObjectMeta"),
                               2: _f("spec", "SelfSubjectRulesReviewSpec")},
    "SelfSubjectRulesReviewSpec": {1: _f("namespace")},
    "SubjectAccessReviewStatus": {1: _f("allowed", "bool"), 2: _f("reason"),
                                  3: _f("evaluationError"), 4: _f("denied", "bool")},
}

# (apiVersion, kind) -> the message of the object.
KINDS: dict[tuple[str, str], str] = {
    ("v1", "Namespace"): "Namespace",
    ("v1", "ConfigMap"): "ConfigMap",
    ("v1", "Secret"): "Secret",
    ("v1", "ServiceAccount"): "ServiceAccount",
    ("v1", "Service"): "Service",
    ("apps/v1", "Deployment"): "Deployment",
    ("rbac.authorization.k8s.io/v1", "Role"): "Role",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "ClusterRole",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "RoleBinding",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "RoleBinding",
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): "SelfSubjectAccessReview",
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): "SelfSubjectRulesReview",
    ("authentication.k8s.io/v1", "TokenRequest"): "TokenRequest",
}


class Undecodable(Exception):
    """A body this module will not turn into JSON (the caller answers 415)."""


def decode(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf request body; raises ApiError (400 or 415) otherwise."""
    if not body.startswith(MAGIC):
        raise bad_request("error decoding request body: protobuf body without the k8s magic")
    try:
        envelope = _message(body[len(MAGIC):], "Unknown")
    except (IndexError, ValueError) as exc:
        raise bad_request(f"error decoding request body: malformed protobuf ({exc})") from None
    except Undecodable as exc:
        raise _unsupported(str(exc)) from None
    type_meta = envelope.get("typeMeta") or {}
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    if envelope.get("contentEncoding"):
        raise _unsupported(f"content encoding {envelope['contentEncoding']!r}")
    message = KINDS.get((api_version, kind))
    if message is None:
        raise _unsupported(f"{kind or 'an object without a kind'} ({api_version or '?'})")
    raw = envelope.get("raw", b"")
    try:
        obj = _message(raw, message)
    except (IndexError, ValueError) as exc:
        raise bad_request(f"error decoding request body: malformed {kind} ({exc})") from None
    except Undecodable as exc:
        raise _unsupported(f"{kind}: {exc}") from None
    return {"apiVersion": api_version, "kind": kind, **obj}


def _unsupported(what: str) -> ApiError:
    return ApiError(
        415, "UnsupportedMediaType",
        f"the sandbox cannot decode this protobuf body ({what}); send it as JSON or YAML "
        f"(for example kubectl create -f or kubectl apply -f)",
    )


def _varint(data: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _wire(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of every field, in order."""
    fields: list[tuple[int, int, int | bytes]] = []
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            if i + size > len(data):
                raise ValueError("length past the end of the message")
            value, i = data[i:i + size], i + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if i + width > len(data):
                raise ValueError("fixed-width field past the end of the message")
            value, i = int.from_bytes(data[i:i + width], "little"), i + width
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if number == 0:
            raise ValueError("field number 0")
        fields.append((number, wire, value))
    return fields


def _is_zero(value: int | bytes) -> bool:
    """A zero, an empty string, or a message made only of zeros (Go's zero struct)."""
    if isinstance(value, int):
        return value == 0
    if not value:
        return True
    try:
        return all(_is_zero(v) for _, _, v in _wire(value))
    except (IndexError, ValueError):
        return False


def _message(data: bytes, name: str) -> dict[str, Any]:
    table = MESSAGES[name]
    out: dict[str, Any] = {}
    for number, wire, value in _wire(data):
        field = table.get(number)
        if field is None:
            if _is_zero(value):
                continue
            raise Undecodable(f"field {number} of {name} is not one the sandbox knows")
        decoded = _value(field, wire, value, name)
        if decoded is _ZERO:
            continue
        if field.kind.startswith("map:"):
            key, item = decoded
            out.setdefault(field.name, {})[key] = item
        elif field.repeated:
            out.setdefault(field.name, []).append(decoded)
        else:
            out[field.name] = decoded
    return out


_ZERO = object()


def _value(field: Field, wire: int, value: int | bytes, owner: str) -> Any:
    kind = field.kind
    expected = 0 if kind in ("int", "bool") else 2
    if wire != expected:
        raise ValueError(f"{owner}.{field.name}: wire type {wire}, expected {expected}")
    if kind == "int":
        number = _int(value, owner, field)
        return _ZERO if number == 0 and not field.pointer else number
    if kind == "bool":
        return _ZERO if value == 0 and not field.pointer else bool(value)
    if not isinstance(value, bytes):
        raise ValueError(f"{owner}.{field.name}: a number where bytes belong")
    if kind == "string":
        text = value.decode("utf-8")
        return _ZERO if not text and not (field.pointer or field.repeated) else text
    if kind == "bytes":
        return base64.b64encode(value).decode("ascii")
    if kind == "raw":
        return value
    if kind == "json":
        return json.loads(value) if value else _ZERO
    if kind == "time":
        return _time(value)
    if kind == "intorstring":
        parts = {n: v for n, _, v in _wire(value)}
        if parts.get(1, 0) == 1:
            return _text(parts.get(3, b""), owner, field)
        return _int(parts.get(2, 0), owner, field)
    if kind.startswith("map:"):
        entry = {n: (w, v) for n, w, v in _wire(value)}
        key = _text(entry.get(1, (2, b""))[1], owner, field)
        item_kind = kind[4:]
        wire_of_item, raw_item = entry.get(2, (0 if item_kind in ("int", "bool") else 2, b""))
        item = _value(Field(field.name, item_kind, pointer=True), wire_of_item, raw_item, owner)
        if item is _ZERO:
            item = {} if item_kind in MESSAGES else ""
        if item_kind == "Quantity":
            item = item.get("string", "")
        return key, item
    decoded = _message(value, kind)
    return _ZERO if not decoded and not (field.pointer or field.repeated) else decoded


def _int(value: int | bytes, owner: str, field: Field) -> int:
    if not isinstance(value, int):
        raise ValueError(f"{owner}.{field.name}: bytes where a number belongs")
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(value: int | bytes, owner: str, field: Field) -> str:
    if not isinstance(value, bytes):
        raise ValueError(f"{owner}.{field.name}: a number where a string belongs")
    return value.decode("utf-8")


def _time(value: bytes) -> Any:
    parts = {n: v for n, _, v in _wire(value)}
    seconds = _int(parts.get(1, 0), "Time", Field("seconds", "int"))
    if seconds == 0:
        return _ZERO  # Go's zero time: null in JSON
    try:
        moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    except (OverflowError, OSError) as exc:
        raise ValueError(f"time out of range: {seconds} s") from exc
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
