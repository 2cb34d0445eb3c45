"""CustomResourceDefinitions: serving, structural validation, defaulting, status, columns."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.sandbox.conftest import Kubectl, Raw


def _crd(group: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "shortNames": ["wdg"]},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Color", "type": "string", "jsonPath": ".spec.color"},
                        {"name": "Ready", "type": "boolean", "jsonPath": ".status.ready"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["color"],
                                    "properties": {
                                        "color": {"type": "string", "enum": ["red", "blue"]},
                                        "size": {"type": "integer", "minimum": 1, "default": 3},
                                        "free": {
                                            "type": "object",
                                            "x-kubernetes-preserve-unknown-fields": True,
                                        },
                                    },
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {"ready": {"type": "boolean"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


@pytest.fixture
def group(api: client.ApiClient) -> Iterator[str]:
    name = f"g{uuid.uuid4().hex[:8]}.example.com"
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(_crd(name))
    yield name
    try:
        ext.delete_custom_resource_definition(f"widgets.{name}")
    except ApiException as exc:
        if exc.status != 404:
            raise


def _widget(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


def test_crd_is_established_and_served_in_discovery(
    api: client.ApiClient, raw: Raw, group: str
) -> None:
    crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(f"widgets.{group}")
    conditions = {c.type: c.status for c in crd.status.conditions}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert crd.status.accepted_names.short_names == ["wdg"]
    _, _, resources = raw("GET", f"/apis/{group}/v1")
    assert isinstance(resources, dict)
    by_name = {r["name"]: r for r in resources["resources"]}
    assert by_name["widgets"]["shortNames"] == ["wdg"]
    assert by_name["widgets"]["kind"] == "Widget"
    assert by_name["widgets/status"]["verbs"] == ["get", "patch", "update"]


def test_custom_objects_crud_validation_and_defaults(
    custom: client.CustomObjectsApi, group: str, ns: str, raw: Raw
) -> None:
    body = {**_widget("w1", color="red", free={"any": {"thing": 1}}), "apiVersion": f"{group}/v1"}
    body["spec"]["unknown"] = "dropped"
    created = custom.create_namespaced_custom_object(group, "v1", ns, "widgets", body)
    assert created["spec"] == {"color": "red", "size": 3, "free": {"any": {"thing": 1}}}
    assert created["metadata"]["generation"] == 1
    listed = custom.list_namespaced_custom_object(group, "v1", ns, "widgets")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["w1"]
    code, _, invalid = raw(
        "POST",
        f"/apis/{group}/v1/namespaces/{ns}/widgets",
        {**_widget("w2", color="green", size=0), "apiVersion": f"{group}/v1"},
    )
    assert code == 422
    assert isinstance(invalid, dict)
    fields = {c["field"]: c["reason"] for c in invalid["details"]["causes"]}
    assert fields == {"spec.color": "FieldValueNotSupported", "spec.size": "FieldValueInvalid"}
    assert invalid["message"].startswith(f'Widget.{group} "w2" is invalid')
    code, _, missing = raw(
        "POST",
        f"/apis/{group}/v1/namespaces/{ns}/widgets",
        {**_widget("w3"), "apiVersion": f"{group}/v1"},
    )
    assert code == 422
    assert isinstance(missing, dict)
    assert missing["details"]["causes"][0]["field"] == "spec.color"


def test_status_subresource_semantics(custom: client.CustomObjectsApi, group: str, ns: str) -> None:
    body = {**_widget("s", color="red"), "apiVersion": f"{group}/v1", "status": {"ready": True}}
    created = custom.create_namespaced_custom_object(group, "v1", ns, "widgets", body)
    assert "status" not in created  # status is dropped on create
    with_status = custom.patch_namespaced_custom_object_status(
        group, "v1", ns, "widgets", "s", {"status": {"ready": True}, "spec": {"color": "blue"}}
    )
    assert with_status["status"] == {"ready": True}
    assert with_status["spec"]["color"] == "red"
    assert with_status["metadata"]["generation"] == 1
    main = custom.patch_namespaced_custom_object(
        group, "v1", ns, "widgets", "s", {"status": {"ready": False}, "spec": {"color": "blue"}}
    )
    assert main["status"] == {"ready": True}
    assert main["spec"]["color"] == "blue"
    assert main["metadata"]["generation"] == 2


def test_strategic_merge_patch_on_custom_resource_is_415(
    raw: Raw, custom: client.CustomObjectsApi, group: str, ns: str
) -> None:
    custom.create_namespaced_custom_object(
        group, "v1", ns, "widgets", {**_widget("p", color="red"), "apiVersion": f"{group}/v1"}
    )
    code, _, body = raw(
        "PATCH",
        f"/apis/{group}/v1/namespaces/{ns}/widgets/p",
        {"spec": {"color": "blue"}},
        content_type="application/strategic-merge-patch+json",
    )
    assert code == 415
    assert isinstance(body, dict)
    assert body["reason"] == "UnsupportedMediaType"
    code, _, body = raw(
        "PATCH",
        f"/apis/{group}/v1/namespaces/{ns}/widgets/p",
        {"spec": {"color": "blue"}},
        content_type="application/merge-patch+json",
    )
    assert code == 200
    assert isinstance(body, dict)
    assert body["spec"]["color"] == "blue"


def test_printer_columns_and_short_name_in_kubectl(
    kubectl: Kubectl, custom: client.CustomObjectsApi, group: str, ns: str
) -> None:
    custom.create_namespaced_custom_object(
        group, "v1", ns, "widgets", {**_widget("c", color="blue"), "apiVersion": f"{group}/v1"}
    )
    custom.patch_namespaced_custom_object_status(
        group, "v1", ns, "widgets", "c", {"status": {"ready": True}}
    )
    lines = kubectl("get", f"wdg.v1.{group}", "-n", ns).stdout.splitlines()
    assert lines[0].split() == ["NAME", "COLOR", "READY"]
    assert lines[1].split() == ["c", "blue", "true"]


def test_deleting_the_crd_removes_its_objects_and_endpoints(
    api: client.ApiClient, raw: Raw, custom: client.CustomObjectsApi, ns: str
) -> None:
    group = f"gone{uuid.uuid4().hex[:6]}.example.com"
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(_crd(group))
    custom.create_namespaced_custom_object(
        group, "v1", ns, "widgets", {**_widget("x", color="red"), "apiVersion": f"{group}/v1"}
    )
    ext.delete_custom_resource_definition(f"widgets.{group}")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        code, _, _ = raw("GET", f"/apis/{group}/v1/namespaces/{ns}/widgets")
        if code == 404:
            break
        time.sleep(0.05)
    assert code == 404
    code, _, _ = raw("GET", f"/apis/{group}/v1")
    assert code == 404
    with pytest.raises(ApiException) as info:
        ext.read_custom_resource_definition(f"widgets.{group}")
    assert info.value.status == 404


def test_invalid_crd_is_rejected(raw: Raw) -> None:
    crd = _crd("bad.example.com")
    crd["metadata"]["name"] = "wrong.example.com"
    code, _, body = raw("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert code == 422
    assert isinstance(body, dict)
    assert body["details"]["causes"][0]["field"] == "metadata.name"


def test_immutable_field_rule_self_equals_old_self(
    api: client.ApiClient, raw: Raw, ns: str, custom: client.CustomObjectsApi
) -> None:
    group = f"imm{uuid.uuid4().hex[:6]}.example.com"
    crd = _crd(group)
    color = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["color"]
    color["x-kubernetes-validations"] = [
        {"rule": "self == oldSelf", "message": "color is immutable"}
    ]
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(crd)
    try:
        custom.create_namespaced_custom_object(
            group, "v1", ns, "widgets", {**_widget("i", color="red"), "apiVersion": f"{group}/v1"}
        )
        code, _, body = raw(
            "PATCH",
            f"/apis/{group}/v1/namespaces/{ns}/widgets/i",
            {"spec": {"color": "blue"}},
            content_type="application/merge-patch+json",
        )
        assert code == 422
        assert isinstance(body, dict)
        assert body["details"]["causes"] == [
            {
                "reason": "FieldValueInvalid",
                "field": "spec.color",
                "message": 'Invalid value: "string": color is immutable',
            }
        ]
        code, _, _ = raw(
            "PATCH",
            f"/apis/{group}/v1/namespaces/{ns}/widgets/i",
            {"spec": {"size": 5}},
            content_type="application/merge-patch+json",
        )
        assert code == 200
    finally:
        ext.delete_custom_resource_definition(f"widgets.{group}")


def test_structural_pruning_of_objects_without_properties(
    api: client.ApiClient, ns: str, custom: client.CustomObjectsApi
) -> None:
    group = f"pr{uuid.uuid4().hex[:6]}.example.com"
    crd = _crd(group)
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["closed"] = {"type": "object"}
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(crd)
    try:
        made = custom.create_namespaced_custom_object(
            group,
            "v1",
            ns,
            "widgets",
            {
                **_widget("s", color="red", closed={"gone": 1}, free={"kept": 1}),
                "apiVersion": f"{group}/v1",
            },
        )
        assert made["spec"]["closed"] == {}
        assert made["spec"]["free"] == {"kept": 1}
    finally:
        ext.delete_custom_resource_definition(f"widgets.{group}")
