"""CRUD of every built-in resource through the official client, metadata, defaults, validation."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

POD_SPEC = {
    "containers": [{"name": "app", "image": "example/app:1", "ports": [{"containerPort": 8080}]}]
}
TEMPLATE = {"metadata": {"labels": {"app": "web"}}, "spec": POD_SPEC}
SELECTOR = {"matchLabels": {"app": "web"}}

# (api class, method suffix, namespaced, body without metadata)
BUILTINS: list[tuple[str, str, bool, dict[str, Any]]] = [
    ("CoreV1Api", "pod", True, {"apiVersion": "v1", "kind": "Pod", "spec": POD_SPEC}),
    (
        "CoreV1Api",
        "service",
        True,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        },
    ),
    (
        "CoreV1Api",
        "endpoints",
        True,
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "subsets": [{"addresses": [{"ip": "127.0.0.5"}], "ports": [{"port": 80}]}],
        },
    ),
    (
        "CoreV1Api",
        "config_map",
        True,
        {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"}},
    ),
    ("CoreV1Api", "secret", True, {"apiVersion": "v1", "kind": "Secret", "data": {"a": "MQ=="}}),
    ("CoreV1Api", "service_account", True, {"apiVersion": "v1", "kind": "ServiceAccount"}),
    (
        "CoreV1Api",
        "event",
        True,
        {
            "apiVersion": "v1",
            "kind": "Event",
            "reason": "Tested",
            "involvedObject": {"kind": "Pod", "name": "x"},
        },
    ),
    (
        "AppsV1Api",
        "deployment",
        True,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "spec": {"selector": SELECTOR, "template": TEMPLATE},
        },
    ),
    (
        "AppsV1Api",
        "replica_set",
        True,
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "spec": {"selector": SELECTOR, "template": TEMPLATE},
        },
    ),
    (
        "RbacAuthorizationV1Api",
        "role",
        True,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        },
    ),
    (
        "RbacAuthorizationV1Api",
        "role_binding",
        True,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}],
        },
    ),
    (
        "RbacAuthorizationV1Api",
        "cluster_role",
        False,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        },
    ),
    (
        "RbacAuthorizationV1Api",
        "cluster_role_binding",
        False,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "r",
            },
            "subjects": [{"kind": "User", "name": "alice"}],
        },
    ),
    (
        "NetworkingV1Api",
        "network_policy",
        True,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]},
        },
    ),
    (
        "CoordinationV1Api",
        "lease",
        True,
        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": "me"}},
    ),
]


def _call(
    api: client.ApiClient, cls: str, verb: str, suffix: str, namespaced: bool
) -> Callable[..., Any]:
    scope = "namespaced_" if namespaced else ""
    return getattr(getattr(client, cls)(api), f"{verb}_{scope}{suffix}")  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("cls", "suffix", "namespaced", "body"), BUILTINS, ids=[b[1] for b in BUILTINS]
)
def test_builtin_crud(
    api: client.ApiClient, ns: str, cls: str, suffix: str, namespaced: bool, body: dict[str, Any]
) -> None:
    name = f"{ns}-{suffix.replace('_', '')}" if not namespaced else "thing"
    args: tuple[str, ...] = (ns,) if namespaced else ()

    def call(verb: str, *more: Any, **kw: Any) -> Any:
        fn = _call(api, cls, verb, suffix, namespaced)
        if verb in ("create", "list"):
            return fn(*args, *more, **kw)
        return fn(name, *args, *more, **kw)

    created = call("create", {**body, "metadata": {"name": name, "labels": {"x": "1"}}})
    meta = created.metadata
    assert meta.uid
    assert meta.creation_timestamp
    assert int(meta.resource_version) > 0
    assert (meta.namespace == ns) if namespaced else meta.namespace is None
    read = call("read")
    assert read.metadata.uid == meta.uid
    assert name in [i.metadata.name for i in call("list", label_selector="x=1").items]
    for _ in range(10):  # the kubelet writes pod status meanwhile: retry on conflict, as clients do
        read.metadata.labels["x"] = "2"
        try:
            replaced = call("replace", read)
            break
        except ApiException as exc:
            if exc.status != 409:
                raise
            read = call("read")
    assert replaced.metadata.labels["x"] == "2"
    assert int(replaced.metadata.resource_version) > int(meta.resource_version)
    call("delete")
    # A pod goes once the kubelet has stopped it (graceful deletion); everything else at once.
    deadline = time.monotonic() + 15
    status = None
    while status is None:
        try:
            call("read")
        except ApiException as exc:
            status = exc.status
            continue
        assert suffix == "pod", "only pods may linger after delete"
        assert time.monotonic() < deadline, "the pod was never removed"
        time.sleep(0.1)
    assert status == 404


def test_metadata_is_set_by_the_server(core: client.CoreV1Api, ns: str) -> None:
    cm = core.create_namespaced_config_map(
        ns,
        {
            "metadata": {
                "generateName": "gen-",
                "uid": "mine",
                "creationTimestamp": "2000-01-01T00:00:00Z",
            }
        },
    )
    assert cm.metadata.name.startswith("gen-")
    assert len(cm.metadata.name) == len("gen-") + 5
    assert cm.metadata.uid != "mine"
    assert cm.metadata.creation_timestamp.year > 2000
    assert cm.metadata.generation is None  # configmaps have no generation in kube either
    other = core.create_namespaced_config_map(ns, {"metadata": {"name": "other"}})
    assert int(other.metadata.resource_version) > int(cm.metadata.resource_version)


def test_namespace_is_taken_from_the_url(core: client.CoreV1Api, ns: str) -> None:
    created = core.create_namespaced_config_map(ns, {"metadata": {"name": "x"}})
    assert created.metadata.namespace == ns
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "y", "namespace": "default"}})
    assert info.value.status == 400


def test_create_in_missing_namespace_is_404(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map("no-such-namespace", {"metadata": {"name": "x"}})
    assert info.value.status == 404
    assert json.loads(info.value.body)["message"] == 'namespaces "no-such-namespace" not found'


def test_already_exists_is_409(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, {"metadata": {"name": "dup"}})
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "dup"}})
    body = json.loads(info.value.body)
    assert (info.value.status, body["reason"]) == (409, "AlreadyExists")
    assert body["message"] == 'configmaps "dup" already exists'
    assert body["details"] == {"name": "dup", "kind": "configmaps"}


def test_generation_moves_with_spec_only(apps: client.AppsV1Api, ns: str) -> None:
    body = {"metadata": {"name": "web"}, "spec": {"selector": SELECTOR, "template": TEMPLATE}}
    dep = apps.create_namespaced_deployment(ns, body)
    assert dep.metadata.generation == 1
    dep = apps.patch_namespaced_deployment("web", ns, {"metadata": {"labels": {"a": "b"}}})
    assert dep.metadata.generation == 1
    dep = apps.patch_namespaced_deployment("web", ns, {"spec": {"replicas": 3}})
    assert dep.metadata.generation == 2


def test_noop_update_keeps_resource_version(core: client.CoreV1Api, ns: str) -> None:
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "same"}, "data": {"a": "1"}})
    again = core.replace_namespaced_config_map("same", ns, cm)
    assert again.metadata.resource_version == cm.metadata.resource_version


def test_stale_put_is_409_conflict(core: client.CoreV1Api, ns: str) -> None:
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"a": "1"}})
    core.patch_namespaced_config_map("c", ns, {"data": {"a": "2"}})
    cm.data = {"a": "3"}
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_config_map("c", ns, cm)
    body = json.loads(info.value.body)
    assert (info.value.status, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]
    assert core.read_namespaced_config_map("c", ns).data == {"a": "2"}


def test_patch_with_resource_version_is_a_precondition(core: client.CoreV1Api, ns: str) -> None:
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "p"}, "data": {"a": "1"}})
    rv = cm.metadata.resource_version
    core.patch_namespaced_config_map(
        "p", ns, {"metadata": {"resourceVersion": rv}, "data": {"a": "2"}}
    )
    with pytest.raises(ApiException) as info:
        core.patch_namespaced_config_map(
            "p", ns, {"metadata": {"resourceVersion": rv}, "data": {"a": "3"}}
        )
    assert info.value.status == 409


# The official client checks required fields itself, so invalid bodies go over plain HTTPS.
def test_validation_422_with_field_causes(raw: Any, ns: str) -> None:
    code, _, body = raw(
        "POST",
        f"/api/v1/namespaces/{ns}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "Bad_Name"},
            "spec": {"containers": [{"image": "x"}]},
        },
    )
    assert (code, body["reason"], body["code"]) == (422, "Invalid", 422)
    fields = {c["field"]: c["reason"] for c in body["details"]["causes"]}
    assert fields == {
        "metadata.name": "FieldValueInvalid",
        "spec.containers[0].name": "FieldValueRequired",
    }
    assert body["message"].startswith('Pod "Bad_Name" is invalid: ')
    assert body["details"]["kind"] == "Pod"


def test_validation_of_enums_and_labels(raw: Any, ns: str) -> None:
    code, _, body = raw(
        "POST",
        f"/api/v1/namespaces/{ns}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s", "labels": {"bad key!": "v"}},
            "spec": {"ports": [{"port": 80, "protocol": "TCPX"}]},
        },
    )
    assert code == 422
    causes = body["details"]["causes"]
    reasons = {(c["field"], c["reason"]) for c in causes}
    assert ("metadata.labels", "FieldValueInvalid") in reasons
    assert ("spec.ports[0].protocol", "FieldValueNotSupported") in reasons


def test_wrong_json_type_is_400(raw: Any, ns: str) -> None:
    code, _, body = raw(
        "POST",
        f"/api/v1/namespaces/{ns}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": "nope"},
    )
    assert code == 400
    assert body["reason"] == "BadRequest"


def test_unknown_fields_strict_400_warn_drops(raw: Any, ns: str) -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "u"},
        "data": {},
        "bogus": 1,
    }
    code, _, body = raw("POST", f"/api/v1/namespaces/{ns}/configmaps?fieldValidation=Strict", obj)
    assert code == 400
    assert 'unknown field "bogus"' in body["message"]
    code, headers, body = raw("POST", f"/api/v1/namespaces/{ns}/configmaps", obj)
    assert code == 201
    assert "bogus" not in body
    assert headers["Warning"] == '299 - "unknown field \\"bogus\\""'


def test_service_defaults(core: client.CoreV1Api, ns: str) -> None:
    svc = core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        },
    )
    assert svc.spec.type == "ClusterIP"
    assert svc.spec.cluster_ip.startswith("127.")
    assert svc.spec.cluster_ips == [svc.spec.cluster_ip]
    assert svc.spec.ports[0].protocol == "TCP"
    assert svc.spec.ports[0].target_port == 80
    other = core.create_namespaced_service(
        ns, {"metadata": {"name": "api"}, "spec": {"ports": [{"port": 80}]}}
    )
    assert other.spec.cluster_ip != svc.spec.cluster_ip
    svc.spec.cluster_ip, svc.spec.cluster_ips = "127.10.99.99", ["127.10.99.99"]
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_service("web", ns, svc)
    assert info.value.status == 422


def test_secret_string_data_becomes_data(core: client.CoreV1Api, ns: str) -> None:
    secret = core.create_namespaced_secret(
        ns, {"metadata": {"name": "s"}, "stringData": {"pw": "hunter2"}}
    )
    assert secret.data == {"pw": base64.b64encode(b"hunter2").decode()}
    assert secret.string_data is None
    assert secret.type == "Opaque"


def test_deployment_defaults_selector_match_and_immutability(
    apps: client.AppsV1Api, ns: str
) -> None:
    dep = apps.create_namespaced_deployment(
        ns, {"metadata": {"name": "web"}, "spec": {"selector": SELECTOR, "template": TEMPLATE}}
    )
    assert dep.spec.replicas == 1
    assert dep.spec.strategy.type == "RollingUpdate"
    assert dep.spec.template.spec.restart_policy == "Always"
    assert dep.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"
    with pytest.raises(ApiException) as info:
        apps.create_namespaced_deployment(
            ns,
            {
                "metadata": {"name": "bad"},
                "spec": {"selector": {"matchLabels": {"app": "other"}}, "template": TEMPLATE},
            },
        )
    causes = json.loads(info.value.body)["details"]["causes"]
    assert causes[0]["field"] == "spec.template.metadata.labels"
    with pytest.raises(ApiException) as info:
        apps.patch_namespaced_deployment(
            "web",
            ns,
            {
                "spec": {
                    "selector": {"matchLabels": {"app": "web", "v": "2"}},
                    "template": {"metadata": {"labels": {"v": "2"}}},
                }
            },
        )
    assert info.value.status == 422
    assert "field is immutable" in json.loads(info.value.body)["message"]


def test_pod_status_defaults(core: client.CoreV1Api, ns: str) -> None:
    pod = core.create_namespaced_pod(
        ns, {"metadata": {"name": "p"}, "spec": POD_SPEC, "status": {"phase": "Running"}}
    )
    assert pod.status.phase == "Pending"
    assert pod.status.qos_class == "BestEffort"
    assert pod.spec.service_account_name == "default"
    assert pod.spec.containers[0].termination_message_path == "/dev/termination-log"


def test_deployment_scale_subresource(apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(
        ns, {"metadata": {"name": "web"}, "spec": {"selector": SELECTOR, "template": TEMPLATE}}
    )
    scale = apps.read_namespaced_deployment_scale("web", ns)
    assert scale.spec.replicas == 1
    assert scale.status.selector == "app=web"
    apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 4}})
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 4


def test_decoder_errors_are_400(raw: Any, ns: str) -> None:
    code, _, body = raw(
        "POST",
        f"/api/v1/namespaces/{ns}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s"},
            "data": {"k": "not base64!"},
        },
    )
    assert code == 400
    assert "illegal base64" in body["message"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "q"},
        "spec": {
            "containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": "lots"}}}]
        },
    }
    code, _, body = raw("POST", f"/api/v1/namespaces/{ns}/pods", pod)
    assert code == 400
    assert "quantities must match" in body["message"]
    pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "500m"
    assert raw("POST", f"/api/v1/namespaces/{ns}/pods", pod)[0] == 201
