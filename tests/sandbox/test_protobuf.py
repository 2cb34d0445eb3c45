"""Protobuf request bodies: kubectl's typed commands work, anything undecodable is refused."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modes.sandbox import protobuf
from modes.sandbox.errors import ApiError

from .conftest import Kubectl, Raw


def _get(kubectl: Kubectl, ns: str, *what: str) -> dict[str, object]:
    out = kubectl("get", "-n", ns, *what, "-o", "json").stdout
    parsed: dict[str, object] = json.loads(out)
    return parsed


def test_kubectl_typed_create_commands(kubectl: Kubectl, ns: str) -> None:
    kubectl("create", "configmap", "cm", "-n", ns, "--from-literal=k1=v1", "--from-literal=e=")
    kubectl("create", "secret", "generic", "sec", "-n", ns, "--from-literal=k=s3cret",
            "--type=example.com/kind")
    kubectl("create", "serviceaccount", "sa", "-n", ns)
    kubectl("create", "deployment", "web", "-n", ns, "--image=example/web:1", "--port=8080",
            "--replicas=0")
    kubectl("create", "service", "clusterip", "web", "-n", ns, "--tcp=80:8080")
    kubectl("create", "role", "reader", "-n", ns, "--verb=get,list",
            "--resource=pods,deployments.apps")
    kubectl("create", "rolebinding", "reader", "-n", ns, "--role=reader", "--user=alice",
            f"--serviceaccount={ns}:sa")

    assert _get(kubectl, ns, "configmap", "cm")["data"] == {"k1": "v1", "e": ""}
    secret = _get(kubectl, ns, "secret", "sec")
    assert (secret["type"], secret["data"]) == ("example.com/kind", {"k": "czNjcmV0"})
    deployment = _get(kubectl, ns, "deployment", "web")
    spec = deployment["spec"]
    assert isinstance(spec, dict)
    assert spec["replicas"] == 0  # a pointer field: an explicit zero is kept, not defaulted to 1
    assert spec["selector"] == {"matchLabels": {"app": "web"}}
    container = spec["template"]["spec"]["containers"][0]
    assert (container["name"], container["image"]) == ("web", "example/web:1")
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    service = _get(kubectl, ns, "service", "web")["spec"]
    assert isinstance(service, dict)
    assert service["ports"] == [{"name": "80-8080", "port": 80, "protocol": "TCP",
                                 "targetPort": 8080}]
    assert service["type"] == "ClusterIP"
    role = _get(kubectl, ns, "role", "reader")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]},
    ]
    kubectl("expose", "deployment", "web", "-n", ns, "--port=81", "--target-port=http",
            "--name=exposed")
    exposed = _get(kubectl, ns, "service", "exposed")["spec"]
    assert isinstance(exposed, dict)
    assert exposed["selector"] == {"app": "web"}
    assert exposed["ports"] == [{"port": 81, "protocol": "TCP", "targetPort": "http"}]
    binding = _get(kubectl, ns, "rolebinding", "reader")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "reader"}
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"},
        {"kind": "ServiceAccount", "name": "sa", "namespace": ns},
    ]


def test_kubectl_create_namespace_and_auth_can_i(kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "pb-created")
    try:
        namespace = json.loads(kubectl("get", "namespace", "pb-created", "-o", "json").stdout)
        assert namespace["status"]["phase"] == "Active"
        assert namespace["spec"] == {"finalizers": ["kubernetes"]}
        bad = kubectl("create", "namespace", "Not_A_Label", check=False)
        assert bad.returncode == 1
        assert 'metadata.name: Invalid value: "Not_A_Label"' in bad.stderr
    finally:
        kubectl("delete", "namespace", "pb-created", "--wait=false")
    # The sandbox authorizes everything, resource and non-resource requests alike.
    assert kubectl("auth", "can-i", "create", "pods", "-n", "kube-system").stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "get", "/healthz").stdout.strip() == "yes"


def test_undecodable_kind_is_415_and_creates_nothing(kubectl: Kubectl, ns: str, raw: Raw) -> None:
    result = kubectl("create", "priorityclass", "high", "--value=1000", check=False)
    assert result.returncode == 1
    # PriorityClass is not served at all: 404 before any decoding.
    assert "the server could not find the requested resource" in result.stderr
    body = _envelope("v1", "Pod", _message((1, _meta("p"))))
    code, _, status = raw("POST", f"/api/v1/namespaces/{ns}/pods", body,
                          content_type=protobuf.MEDIA_TYPE)
    assert code == 415
    assert isinstance(status, dict)
    assert "cannot decode this protobuf body (Pod (v1))" in str(status["message"])
    assert kubectl("get", "pods", "-n", ns, "-o", "name").stdout == ""


# --- the decoder on its own ---------------------------------------------------------------------

def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _message(*fields: tuple[int, int | bytes]) -> bytes:
    out = bytearray()
    for number, value in fields:
        if isinstance(value, int):
            out += _varint(number << 3) + _varint(value)
        else:
            out += _varint(number << 3 | 2) + _varint(len(value)) + value
    return bytes(out)


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = _message((1, api_version.encode()), (2, kind.encode()))
    return protobuf.MAGIC + _message((1, type_meta), (2, raw), (3, b""), (4, b""))


def _meta(name: str) -> bytes:
    # As Kubernetes' encoder writes it: every non-pointer field, zero or not.
    return _message((1, name.encode()), (2, b""), (3, b""), (4, b""), (5, b""), (6, b""),
                    (7, 0), (8, b""))


def test_zero_fields_are_dropped_and_values_kept() -> None:
    target = _message((1, 1), (3, b"http"))  # IntOrString, the string form
    port = _message((1, b"web"), (2, b"TCP"), (3, 80), (4, target), (5, 0))
    spec = _message((1, port), (3, b""), (4, b"ClusterIP"), (12, 0), (99, b""), (98, 0))
    obj = protobuf.decode(_envelope("v1", "Service", _message((1, _meta("s")), (2, spec))))
    assert obj == {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                   "spec": {"ports": [{"name": "web", "protocol": "TCP", "port": 80,
                                       "targetPort": "http"}], "type": "ClusterIP"}}


def test_negative_numbers_times_and_bytes() -> None:
    meta = _message((1, b"n"), (8, _message((1, 1_700_000_000))),
                    (10, -1 & ((1 << 64) - 1)), (12, _message((1, b"a"), (2, b"b"))))
    data = _message((1, b"bin"), (2, b"\x00\xff"))
    obj = protobuf.decode(_envelope("v1", "Secret", _message((1, meta), (2, data), (5, 0))))
    assert obj["metadata"] == {"name": "n", "creationTimestamp": "2023-11-14T22:13:20Z",
                               "deletionGracePeriodSeconds": -1, "annotations": {"a": "b"}}
    assert obj["data"] == {"bin": "AP8="}
    assert obj["immutable"] is False  # a pointer: an explicit false is kept


def test_unknown_field_with_a_value_is_refused_by_name() -> None:
    raw = _message((1, _meta("cm")), (7, b"surprise"))
    with pytest.raises(ApiError) as caught:
        protobuf.decode(_envelope("v1", "ConfigMap", raw))
    assert caught.value.code == 415
    assert "field 7 of ConfigMap is not one the sandbox knows" in str(caught.value)


@pytest.mark.parametrize(("body", "code", "words"), [
    (b'{"kind": "ConfigMap"}', 400, "without the k8s magic"),
    (protobuf.MAGIC + b"\x0a\x05v1", 400, "malformed protobuf"),
    (protobuf.MAGIC + b"\x0b", 400, "malformed protobuf"),
    (_envelope("v1", "ConfigMap", b"\x0a\xff\xff"), 400, "malformed ConfigMap"),
    (_envelope("v1", "Pod", b""), 415, "Pod (v1)"),
    (protobuf.MAGIC + _message((3, b"gzip")), 415, "content encoding 'gzip'"),
])
def test_bad_bodies_are_one_clear_error(body: bytes, code: int, words: str) -> None:
    with pytest.raises(ApiError) as caught:
        protobuf.decode(body)
    assert caught.value.code == code
    assert words in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash_the_decoder(noise: bytes) -> None:
    for body in (protobuf.MAGIC + noise, _envelope("v1", "ConfigMap", noise),
                 _envelope("apps/v1", "Deployment", noise)):
        try:
            obj = protobuf.decode(body)
        except ApiError as exc:
            codes = {exc.code}
        else:
            codes = {200} if isinstance(obj, dict) else {0}
        assert codes <= {200, 400, 415}


_FIELDS = st.recursive(
    st.one_of(st.integers(0, (1 << 64) - 1), st.binary(max_size=12)),
    lambda inner: st.lists(st.tuples(st.integers(1, 40), inner), max_size=6).map(
        lambda fields: _message(*fields)),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(protobuf.KINDS)), st.lists(st.tuples(st.integers(1, 12), _FIELDS),
                                                         max_size=8))
def test_random_messages_of_every_kind_are_decoded_or_refused(
    kind: tuple[str, str], fields: list[tuple[int, int | bytes]]
) -> None:
    """Well-formed wire data with random field numbers and nesting: JSON, or a 400/415."""
    try:
        obj = protobuf.decode(_envelope(*kind, _message(*fields)))
    except ApiError as exc:
        codes = {exc.code}
    else:
        json.dumps(obj)  # plain JSON, nothing else
        codes = {200}
    assert codes <= {200, 400, 415}
