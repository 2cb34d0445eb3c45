"""PATCH by content type: JSON Patch, merge patch, strategic merge patch, server-side apply."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.sandbox.conftest import Kubectl, Raw

JSON_PATCH = "application/json-patch+json"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"


def _deployment(name: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]},
                        {"name": "side", "image": "side:1"},
                    ]
                },
            },
        },
    }


def test_json_patch_ops_test_and_escaping(raw: Raw, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    raw(
        "POST",
        base,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "j", "annotations": {"a/b": "x"}},
            "data": {"k": "v", "list": "1"},
        },
    )
    ops = [
        {"op": "test", "path": "/metadata/annotations/a~1b", "value": "x"},
        {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "y"},
        {"op": "add", "path": "/data/new", "value": "n"},
        {"op": "remove", "path": "/data/list"},
        {"op": "copy", "from": "/data/k", "path": "/data/k2"},
        {"op": "move", "from": "/data/new", "path": "/data/moved"},
    ]
    code, _, body = raw("PATCH", f"{base}/j", ops, content_type=JSON_PATCH)
    assert code == 200, body
    assert isinstance(body, dict)
    assert body["metadata"]["annotations"] == {"a/b": "y"}
    assert body["data"] == {"k": "v", "k2": "v", "moved": "n"}
    code, _, failed = raw(
        "PATCH",
        f"{base}/j",
        [{"op": "test", "path": "/data/k", "value": "other"}, {"op": "remove", "path": "/data/k"}],
        content_type=JSON_PATCH,
    )
    assert code == 422
    assert isinstance(failed, dict)
    assert failed["kind"] == "Status"
    code, _, _ = raw("PATCH", f"{base}/j", {"not": "a list"}, content_type=JSON_PATCH)
    assert code == 400


def test_merge_patch_replaces_lists_and_deletes_with_null(
    apps: client.AppsV1Api, raw: Raw, ns: str
) -> None:
    apps.create_namespaced_deployment(ns, _deployment())
    patch = {
        "metadata": {"labels": {"x": "1"}},
        "spec": {"template": {"spec": {"containers": [{"name": "only", "image": "only:1"}]}}},
    }
    code, _, body = raw(
        "PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/web", patch, content_type=MERGE
    )
    assert code == 200
    assert isinstance(body, dict)
    assert [c["name"] for c in body["spec"]["template"]["spec"]["containers"]] == ["only"]
    code, _, body = raw(
        "PATCH",
        f"/apis/apps/v1/namespaces/{ns}/deployments/web",
        {"metadata": {"labels": {"x": None}}},
        content_type=MERGE,
    )
    assert isinstance(body, dict)
    assert "x" not in (body["metadata"].get("labels") or {})


def test_strategic_merge_uses_the_merge_key(apps: client.AppsV1Api, raw: Raw, ns: str) -> None:
    apps.create_namespaced_deployment(ns, _deployment())
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}]},
                        {"name": "side", "$patch": "delete"},
                        {"name": "extra", "image": "extra:1"},
                    ]
                }
            }
        }
    }
    code, _, body = raw(
        "PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/web", patch, content_type=STRATEGIC
    )
    assert code == 200, body
    assert isinstance(body, dict)
    containers = {c["name"]: c for c in body["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"app", "extra"}
    assert containers["app"]["image"] == "app:2"
    assert [e["name"] for e in containers["app"]["env"]] == ["A", "B"]  # env merges by name too
    assert containers["extra"]["terminationMessagePath"] == "/dev/termination-log"  # defaulted


def test_strategic_merge_with_official_client_and_finalizer_set(
    core: client.CoreV1Api, ns: str
) -> None:
    core.create_namespaced_config_map(
        ns, {"metadata": {"name": "f", "finalizers": ["a.example/x"]}}
    )
    # finalizers are a merge-strategy list of strings: a strategic patch adds instead of replacing
    cm = core.patch_namespaced_config_map("f", ns, {"metadata": {"finalizers": ["b.example/y"]}})
    assert cm.metadata.finalizers == ["a.example/x", "b.example/y"]
    core.patch_namespaced_config_map(
        "f",
        ns,
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example/x", "b.example/y"]}},
    )


def test_unsupported_patch_type_is_415(raw: Raw, ns: str) -> None:
    raw(
        "POST",
        f"/api/v1/namespaces/{ns}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m"}},
    )
    code, _, body = raw(
        "PATCH", f"/api/v1/namespaces/{ns}/configmaps/m", {"data": {}}, content_type="text/plain"
    )
    assert code == 415
    assert isinstance(body, dict)
    assert body["reason"] == "UnsupportedMediaType"


def test_patch_of_missing_object_is_404(core: client.CoreV1Api, ns: str) -> None:
    with pytest.raises(ApiException) as info:
        core.patch_namespaced_config_map("missing", ns, {"data": {"a": "b"}})
    assert info.value.status == 404


def test_server_side_apply_creates_then_merges_idempotently(raw: Raw, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps/applied?fieldManager=kubetunnel"
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "applied", "labels": {"a": "1"}},
        "data": {"one": "1", "two": "2"},
    }
    code, _, created = raw("PATCH", path, config, content_type=APPLY)
    assert code == 201
    assert isinstance(created, dict)
    assert created["metadata"]["managedFields"][0]["manager"] == "kubetunnel"
    assert created["metadata"]["managedFields"][0]["operation"] == "Apply"
    code, _, again = raw("PATCH", path, config, content_type=APPLY)
    assert code == 200
    assert isinstance(again, dict)
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    # another writer's field survives; a field this manager stops applying is removed
    raw(
        "PATCH",
        f"/api/v1/namespaces/{ns}/configmaps/applied",
        {"data": {"theirs": "x"}},
        content_type=MERGE,
    )
    smaller = {**config, "data": {"one": "1"}}
    code, _, merged = raw("PATCH", path, smaller, content_type=APPLY)
    assert isinstance(merged, dict)
    assert merged["data"] == {"one": "1", "theirs": "x"}
    code, _, body = raw(
        "PATCH", f"/api/v1/namespaces/{ns}/configmaps/applied", config, content_type=APPLY
    )
    assert code == 422
    assert isinstance(body, dict)
    assert body["details"]["causes"][0]["field"] == "fieldManager"


def test_server_side_apply_merges_list_map_items(raw: Raw, ns: str) -> None:
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/web?fieldManager=one"
    raw("PATCH", path, _deployment(), content_type=APPLY)
    mine = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "side", "image": "side:2"}]}}},
    }
    base = f"/apis/apps/v1/namespaces/{ns}/deployments/web?fieldManager=two"
    code, _, body = raw("PATCH", base, mine, content_type=APPLY)
    # "one" owns the image of "side": a different value is a conflict unless forced
    assert code == 409
    assert isinstance(body, dict)
    assert body["reason"] == "Conflict"
    assert body["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "one"',  # an Apply manager: no version, no time
            "field": '.spec.template.spec.containers[name="side"].image',
        }
    ]
    assert body["message"].startswith("Apply failed with 1 conflict: ")
    code, _, body = raw("PATCH", base + "&force=true", mine, content_type=APPLY)
    assert code == 200
    assert isinstance(body, dict)
    images = {c["name"]: c["image"] for c in body["spec"]["template"]["spec"]["containers"]}
    assert images == {"app": "app:1", "side": "side:2"}
    managers = {m["manager"]: m for m in body["metadata"]["managedFields"]}
    assert set(managers) == {"one", "two"}
    assert '"f:image"' not in json.dumps(
        managers["one"]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"][
            'k:{"name":"side"}'
        ]
    )
    # the same value as another manager's is shared ownership, not a conflict
    same = {
        **mine,
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:1"}]}}},
    }
    code, _, _ = raw(
        "PATCH",
        f"/apis/apps/v1/namespaces/{ns}/deployments/web?fieldManager=three",
        same,
        content_type=APPLY,
    )
    assert code == 200


def test_update_managers_own_fields_too(core: client.CoreV1Api, raw: Raw, ns: str) -> None:
    core.create_namespaced_config_map(
        ns, {"metadata": {"name": "u"}, "data": {"a": "1"}}, field_manager="creator"
    )
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "u"},
        "data": {"a": "2"},
    }
    path = f"/api/v1/namespaces/{ns}/configmaps/u?fieldManager=applier"
    code, _, body = raw("PATCH", path, config, content_type=APPLY)
    assert code == 409
    assert isinstance(body, dict)
    assert body["details"]["causes"][0]["field"] == ".data.a"
    cm = core.read_namespaced_config_map("u", ns)
    entry = cm.metadata.managed_fields[0]
    assert (entry.manager, entry.operation) == ("creator", "Update")
    assert entry.fields_v1 == {"f:data": {".": {}, "f:a": {}}}


def test_kubectl_server_side_apply(kubectl: Kubectl, ns: str) -> None:
    manifest = (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  namespace: {ns}\n"
        "data:\n  a: '1'\n"
    )
    out = kubectl("apply", "--server-side", "-f", "-", stdin=manifest).stdout
    assert "serverside-applied" in out
    kubectl("apply", "--server-side", "-f", "-", stdin=manifest.replace("'1'", "'2'"))
    assert kubectl("get", "cm", "ssa", "-n", ns, "-o", "jsonpath={.data.a}").stdout == "2"
    kubectl("patch", "cm", "ssa", "-n", ns, "--type", "merge", "-p", '{"data":{"a":"3"}}')
    refused = kubectl("apply", "--server-side", "-f", "-", stdin=manifest, check=False)
    assert refused.returncode == 1
    assert "conflict" in refused.stderr
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=manifest)
    assert kubectl("get", "cm", "ssa", "-n", ns, "-o", "jsonpath={.data.a}").stdout == "1"


def test_server_side_apply_takes_over_from_client_side_apply(kubectl: Kubectl, ns: str) -> None:
    manifest = (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: mig\n  namespace: {ns}\n"
        "data:\n  a: '1'\n  b: '1'\n"
    )
    kubectl("apply", "-f", "-", stdin=manifest)
    kubectl(
        "patch",
        "cm",
        "mig",
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        '{"data":{"c":"x"}}',
        "--field-manager",
        "someone",
    )
    kubectl("apply", "--server-side", "-f", "-", stdin=manifest.replace("b: '1'", "b: '2'"))
    assert kubectl("get", "cm", "mig", "-n", ns, "-o", "jsonpath={.data.b}").stdout == "2"
    refused = kubectl(
        "apply",
        "--server-side",
        "-f",
        "-",
        check=False,
        stdin=manifest.replace("b: '1'", "b: '2'\n  c: y"),
    )
    assert refused.returncode == 1
    assert 'conflict with "someone"' in refused.stderr


def test_dynamic_client_server_side_apply_is_idempotent(api: client.ApiClient, ns: str) -> None:
    from kubernetes import dynamic

    resources = dynamic.DynamicClient(api).resources
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "svc", "namespace": ns},
        "spec": {"selector": {"app": "a"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    services = resources.get(api_version="v1", kind="Service")
    first = services.server_side_apply(
        body=service, name="svc", namespace=ns, field_manager="kubetunnel-install"
    )
    again = services.server_side_apply(
        body=service, name="svc", namespace=ns, field_manager="kubetunnel-install"
    )
    assert again.metadata.resourceVersion == first.metadata.resourceVersion
    assert again.spec.clusterIP == first.spec.clusterIP
