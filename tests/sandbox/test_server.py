"""The command, the kubeconfig, authentication, discovery and OpenAPI."""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Any

import pytest
import yaml
from kubernetes import client

from modes.sandbox.testing import RunningSandbox
from tests.sandbox.conftest import Kubectl, Raw


def test_kubeconfig_has_cluster_user_context_and_default_namespace(sandbox: RunningSandbox) -> None:
    config = yaml.safe_load(sandbox.kubeconfig.read_text())
    context = config["contexts"][0]["context"]
    assert config["current-context"] == config["contexts"][0]["name"]
    assert context["namespace"] == "default"
    assert config["clusters"][0]["cluster"]["server"] == sandbox.url
    assert config["users"][0]["user"]["token"] == sandbox.token
    assert sandbox.url.startswith("https://127.0.0.1:")
    assert oct(sandbox.kubeconfig.stat().st_mode & 0o777) == "0o600"


def test_ready_line_and_clean_shutdown_on_sigterm(tmp_path: Any) -> None:
    kubeconfig = tmp_path / "kc"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modes",
            "sandbox",
            "up",
            "--kubeconfig",
            str(kubeconfig),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("sandbox ready: server=https://127.0.0.1:")
        assert line.rstrip().endswith(f"kubeconfig={kubeconfig}")
        assert kubeconfig.exists()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out == ""
    assert "Traceback" not in err


@pytest.mark.parametrize("args", [["--port", "notaport"], ["--host", "10.1.2.3"], []])
def test_bad_arguments_exit_2_with_one_line(args: list[str], tmp_path: Any) -> None:
    base = [] if not args else ["--kubeconfig", str(tmp_path / "kc")]
    result = subprocess.run(
        [sys.executable, "-m", "modes", "sandbox", "up", *base, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("kubetunnel: error:")


def test_port_in_use_is_one_line_error(sandbox: RunningSandbox, tmp_path: Any) -> None:
    port = sandbox.url.rsplit(":", 1)[1]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "modes",
            "sandbox",
            "up",
            "--kubeconfig",
            str(tmp_path / "kc"),
            "--port",
            port,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "cannot listen" in result.stderr


@pytest.mark.parametrize("token", [None, "wrong"])
def test_requests_without_the_token_get_401_status(raw: Raw, token: str | None) -> None:
    code, _, body = raw("GET", "/api/v1/namespaces", token=token)
    assert code == 401
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }


def test_health_is_open_and_version_reports_1_37(raw: Raw) -> None:
    assert raw("GET", "/healthz", token=None)[:1] == (200,)
    code, _, body = raw("GET", "/version")
    assert code == 200
    assert isinstance(body, dict)
    assert (body["major"], body["minor"]) == ("1", "37")


def test_initial_namespaces_are_those_of_a_new_cluster(core: client.CoreV1Api) -> None:
    names = {n.metadata.name for n in core.list_namespace().items}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
    default = core.read_namespace("default")
    assert default.status.phase == "Active"
    assert default.spec.finalizers == ["kubernetes"]
    assert default.metadata.labels["kubernetes.io/metadata.name"] == "default"


def test_discovery_documents(raw: Raw) -> None:
    _, _, versions = raw("GET", "/api")
    assert isinstance(versions, dict)
    assert versions["versions"] == ["v1"]
    _, _, groups = raw("GET", "/apis")
    assert isinstance(groups, dict)
    names = {g["name"] for g in groups["groups"]}
    assert {
        "apps",
        "rbac.authorization.k8s.io",
        "networking.k8s.io",
        "coordination.k8s.io",
        "apiextensions.k8s.io",
        "authorization.k8s.io",
    } <= names
    _, _, core = raw("GET", "/api/v1")
    assert isinstance(core, dict)
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["pods"]["namespaced"] is True
    assert by_name["pods"]["kind"] == "Pod"
    assert by_name["pods"]["shortNames"] == ["po"]
    assert set(by_name["pods"]["verbs"]) >= {
        "create",
        "get",
        "list",
        "watch",
        "patch",
        "delete",
        "deletecollection",
    }
    assert by_name["pods/status"]["verbs"] == ["get", "patch", "update"]
    assert by_name["namespaces"]["namespaced"] is False
    assert {"services/status", "pods/log", "serviceaccounts"} <= set(by_name)
    _, _, apps = raw("GET", "/apis/apps/v1")
    assert isinstance(apps, dict)
    scale = {r["name"]: r for r in apps["resources"]}["deployments/scale"]
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    _, _, group = raw("GET", "/apis/apps")
    assert isinstance(group, dict)
    assert group["preferredVersion"]["groupVersion"] == "apps/v1"
    code, _, missing = raw("GET", "/apis/nope.example.com/v1")
    assert code == 404
    assert isinstance(missing, dict)
    assert missing["reason"] == "NotFound"


def test_aggregated_discovery_when_asked(raw: Raw) -> None:
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    code, headers, body = raw("GET", "/apis", headers={"Accept": accept})
    assert code == 200
    assert "as=APIGroupDiscoveryList" in headers["Content-Type"]
    assert isinstance(body, dict)
    assert body["kind"] == "APIGroupDiscoveryList"
    apps = next(i for i in body["items"] if i["metadata"]["name"] == "apps")
    deployments = next(
        r for r in apps["versions"][0]["resources"] if r["resource"] == "deployments"
    )
    assert deployments["scope"] == "Namespaced"
    assert deployments["shortNames"] == ["deploy"]
    assert {s["subresource"] for s in deployments["subresources"]} == {"status", "scale"}


def test_self_subject_access_review_is_allowed(api: client.ApiClient) -> None:
    review = client.AuthorizationV1Api(api).create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(verb="delete", resource="pods")
            )
        )
    )
    assert review.status.allowed is True


def test_kubectl_explain_reads_the_openapi_documents(kubectl: Kubectl) -> None:
    explained = kubectl("explain", "deployment.spec.replicas").stdout
    assert "replicas" in explained
    assert "integer" in explained


def test_openapi_v3_index_and_group_document(raw: Raw) -> None:
    _, _, index = raw("GET", "/openapi/v3")
    assert isinstance(index, dict)
    assert "apis/apps/v1" in index["paths"]
    code, _, doc = raw("GET", index["paths"]["apis/apps/v1"]["serverRelativeURL"])
    assert code == 200
    assert isinstance(doc, dict)
    containers = doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"][
        "containers"
    ]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["type"] == "array"


def test_openapi_v2_in_json_or_protobuf_and_406_otherwise(raw: Raw) -> None:
    code, headers, doc = raw("GET", "/openapi/v2", headers={"Accept": "application/json"})
    assert code == 200
    assert headers["Content-Type"].startswith("application/json")
    assert isinstance(doc, dict)
    assert "io.k8s.api.apps.v1.Deployment" in doc["definitions"]
    # kubectl's spelling of the protobuf type; the answer is in the valid spelling.
    asked = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
    code, headers, body = raw("GET", "/openapi/v2", headers={"Accept": asked})
    assert code == 200
    assert headers["Content-Type"] == "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    assert isinstance(body, str)  # not JSON
    code, _, status = raw("GET", "/openapi/v2", headers={"Accept": "application/xml"})
    assert code == 406
    assert isinstance(status, dict)
    assert status["reason"] == "NotAcceptable"


def test_openapi_v2_protobuf_holds_every_definition() -> None:
    from modes.sandbox import openapi_proto, protobuf

    definitions = {"a.B": {"type": "object", "required": ["x"], "properties": {
        "x": {"type": "integer", "format": "int32", "minimum": 1.5},
        "y": {"type": "array", "items": {"$ref": "#/definitions/a.C"}}},
        "x-kubernetes-group-version-kind": [{"group": "a", "kind": "B", "version": "v1"}]},
        "a.C": {"type": "string", "additionalProperties": False}}
    encoded = openapi_proto.document({"title": "T", "version": "9"},
                                     openapi_proto.named_schemas(definitions))
    doc = {n: v for n, _, v in protobuf._wire(encoded)}
    assert doc[1] == b"2.0"
    entries = [dict((n, v) for n, _, v in protobuf._wire(e))
               for _, _, e in protobuf._wire(doc[9])]
    assert [e[1] for e in entries] == [b"a.B", b"a.C"]
    first = {n: v for n, _, v in protobuf._wire(entries[0][2])}
    assert first[19] == b"x"  # required
    assert b"x-kubernetes-group-version-kind" in first[31]
    assert b'"kind": "B"' in first[31]  # the extension's value, as YAML (JSON) text


def test_error_status_bodies(raw: Raw, ns: str) -> None:
    code, _, body = raw("PUT", f"/api/v1/namespaces/{ns}/configmaps", {})
    assert code == 405
    assert isinstance(body, dict)
    assert body["reason"] == "MethodNotAllowed"
    code, _, body = raw("POST", f"/api/v1/namespaces/{ns}/configmaps", b"{not json")
    assert code == 400
    assert isinstance(body, dict)
    assert body["reason"] == "BadRequest"
    code, _, body = raw("GET", "/api/v1/nothings")
    assert code == 404
    assert isinstance(body, dict)
    assert body["kind"] == "Status"
    code, _, body = raw(
        "POST", f"/api/v1/namespaces/{ns}/configmaps", b"x", content_type="text/csv"
    )
    assert code == 415
    assert isinstance(body, dict)
    assert body["code"] == 415


def test_dry_run_create_is_not_stored(raw: Raw, ns: str) -> None:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dry"}}
    code, _, body = raw("POST", f"/api/v1/namespaces/{ns}/configmaps?dryRun=All", obj)
    assert code == 201
    assert isinstance(body, dict)
    assert body["metadata"]["name"] == "dry"
    assert raw("GET", f"/api/v1/namespaces/{ns}/configmaps/dry")[0] == 404


def test_builtin_status_subresource(core: client.CoreV1Api, ns: str) -> None:
    # A selector-less Service: no controller of the sandbox writes its status, as in a cluster
    # without a load-balancer controller, so what we read back is what the API server kept.
    core.create_namespaced_service(ns, {"metadata": {"name": "s"},
                                        "spec": {"ports": [{"port": 80}]}})
    updated = core.patch_namespaced_service_status("s", ns, {
        "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.9"}]}},
        "spec": {"ports": [{"port": 81}]},
    })
    assert updated.status.load_balancer.ingress[0].ip == "127.0.0.9"
    assert updated.spec.ports[0].port == 80  # /status ignores the spec
    main = core.patch_namespaced_service(
        "s", ns, {"status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.10"}]}}}
    )
    assert main.status.load_balancer.ingress[0].ip == "127.0.0.9"  # main resource: no status


def test_all_namespaces_path_only_lists(raw: Raw) -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "default"},
    }
    assert raw("POST", "/api/v1/configmaps", obj)[0] == 405
    assert raw("GET", "/api/v1/configmaps")[0] == 200
    assert raw("GET", "/api/v1/configmaps/x")[0] == 404
    assert raw("POST", "/apis/apps", {})[0] == 405
