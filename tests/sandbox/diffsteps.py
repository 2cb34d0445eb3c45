"""The request sequence of tests/sandbox/test_differential.py, in the order it is sent.

Every server gets it on a fresh start, so the names are fixed; what differs per server
(resourceVersions, tokens) is referenced as "{step:path}" and taken from that server's answers.
"""

from __future__ import annotations

from typing import Any

from tests.sandbox.differencing import APPLY, JSON_PATCH, MERGE, STRATEGIC, Answer, Step

NS = "diff"
CORE = f"/api/v1/namespaces/{NS}"
CMS = f"{CORE}/configmaps"
SVCS = f"{CORE}/services"
PODS = f"{CORE}/pods"
GROUP = "diff.kubetunnel.test"
CRD_NAME = f"widgets.{GROUP}"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
WIDGETS = f"/apis/{GROUP}/v1/namespaces/{NS}/widgets"
DEPLOYS = f"/apis/apps/v1/namespaces/{NS}/deployments"


def _ok(answer: Answer) -> bool:
    return answer.status == 200


def _established(answer: Answer) -> bool:
    conditions = (answer.body.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def _cm(name: str, data: dict[str, str], labels: dict[str, str] | None = None,
        **meta: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, **meta}
    if labels is not None:
        metadata["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": CRD_NAME},
    "spec": {
        "group": GROUP, "scope": "Namespaced",
        "names": {"kind": "Widget", "listKind": "WidgetList", "plural": "widgets",
                  "singular": "widget", "shortNames": ["wd"]},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {
                "type": "object", "required": ["spec"],
                "properties": {
                    "spec": {
                        "type": "object", "required": ["size"],
                        "properties": {
                            "size": {"type": "integer", "minimum": 1},
                            "color": {"type": "string", "enum": ["red", "blue"],
                                      "default": "red"},
                            "tags": {"type": "array", "items": {"type": "string"},
                                     "maxItems": 3},
                            "name": {"type": "string", "maxLength": 3},
                        },
                    },
                    "status": {"type": "object", "properties": {
                        "ready": {"type": "boolean"}, "count": {"type": "integer"}}},
                },
            }},
        }],
    },
}


def _widget(name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "Widget",
            "metadata": {"name": name, **meta}, "spec": spec}


SERVICE = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {"selector": {"app": "web"},
             "ports": [{"name": "http", "port": 80, "targetPort": 8080},
                       {"name": "admin", "port": 9000, "protocol": "TCP"}]},
}

POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "p1", "labels": {"app": "web"}},
    "spec": {"containers": [
        {"name": "main", "image": "registry.invalid/none:1", "ports": [{"containerPort": 8080}],
         "resources": {"requests": {"cpu": "100m"}}},
        {"name": "side", "image": "registry.invalid/side"},
    ]},
}

DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "d1"},
    "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "d1"}},
             "template": {"metadata": {"labels": {"app": "d1"}},
                          "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
}

STEPS: list[Step] = [
    # Namespace, and the ServiceAccount its controller makes (pods need it on kube-apiserver).
    Step("ns-create", "POST", "/api/v1/namespaces",
         {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
    Step("ns-get", "GET", f"/api/v1/namespaces/{NS}"),
    Step("sa-default", "GET", f"{CORE}/serviceaccounts/default", until=_ok),
    # ConfigMap CRUD.
    Step("cm-create", "POST", CMS, _cm("cm1", {"a": "1"}, {"app": "one", "tier": "a"})),
    Step("cm-create-2", "POST", CMS, _cm("cm2", {"k": "v"}, {"app": "two"})),
    Step("cm-create-generated", "POST", CMS,
         {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}}),
    Step("cm-create-exists", "POST", CMS, _cm("cm1", {"a": "1"})),
    Step("cm-get", "GET", f"{CMS}/cm1"),
    Step("cm-update", "PUT", f"{CMS}/cm1", _cm(
        "cm1", {"a": "2"}, {"app": "one", "tier": "a"},
        resourceVersion="{cm-create:metadata.resourceVersion}")),
    Step("cm-update-stale", "PUT", f"{CMS}/cm1", _cm(
        "cm1", {"a": "stale"}, {"app": "one"},
        resourceVersion="{cm-create:metadata.resourceVersion}")),
    Step("cm-update-noop", "PUT", f"{CMS}/cm1", _cm(
        "cm1", {"a": "2"}, {"app": "one", "tier": "a"},
        resourceVersion="{cm-update:metadata.resourceVersion}")),
    Step("cm-update-missing", "PUT", f"{CMS}/nope", _cm("nope", {"a": "1"},
                                                       resourceVersion="1")),
    Step("cm-update-name-mismatch", "PUT", f"{CMS}/cm1", _cm("other", {"a": "1"})),
    # Every patch type.
    Step("cm-patch-merge", "PATCH", f"{CMS}/cm1",
         {"metadata": {"labels": {"tier": None}}, "data": {"b": "x"}}, MERGE),
    Step("cm-patch-json", "PATCH", f"{CMS}/cm1", [
        {"op": "add", "path": "/data/c", "value": "y"},
        {"op": "replace", "path": "/data/a", "value": "3"},
        {"op": "remove", "path": "/data/b"},
        {"op": "copy", "from": "/data/c", "path": "/data/d"},
        {"op": "move", "from": "/data/d", "path": "/data/e"},
        {"op": "test", "path": "/data/e", "value": "y"}], JSON_PATCH),
    Step("cm-patch-json-test-fails", "PATCH", f"{CMS}/cm1",
         [{"op": "test", "path": "/data/a", "value": "nope"}], JSON_PATCH),
    Step("cm-patch-json-bad-path", "PATCH", f"{CMS}/cm1",
         [{"op": "remove", "path": "/data/missing"}], JSON_PATCH),
    Step("cm-patch-strategic", "PATCH", f"{CMS}/cm1",
         {"metadata": {"annotations": {"note": "s"}}, "data": {"f": "z"}}, STRATEGIC),
    Step("cm-patch-stale", "PATCH", f"{CMS}/cm1",
         {"metadata": {"resourceVersion": "{cm-create:metadata.resourceVersion}"},
          "data": {"a": "no"}}, MERGE),
    Step("cm-patch-missing", "PATCH", f"{CMS}/nope", {"data": {"a": "1"}}, MERGE),
    Step("cm-patch-bad-type", "PATCH", f"{CMS}/cm1", {"data": {"a": "1"}}, "text/plain"),
    Step("cm-apply", "PATCH", f"{CMS}/applied?fieldManager=one",
         _cm("applied", {"x": "1", "y": "2"}, {"app": "applied"}), APPLY),
    Step("cm-apply-again", "PATCH", f"{CMS}/applied?fieldManager=one",
         _cm("applied", {"x": "1", "y": "2"}, {"app": "applied"}), APPLY),
    Step("cm-apply-drop", "PATCH", f"{CMS}/applied?fieldManager=one",
         _cm("applied", {"x": "1"}, {"app": "applied"}), APPLY),
    Step("cm-apply-conflict", "PATCH", f"{CMS}/applied?fieldManager=two",
         _cm("applied", {"x": "other"}), APPLY),
    Step("cm-apply-force", "PATCH", f"{CMS}/applied?fieldManager=two&force=true",
         _cm("applied", {"x": "other"}), APPLY),
    Step("cm-apply-no-manager", "PATCH", f"{CMS}/applied", _cm("applied", {"x": "1"}), APPLY),
    # Selectors.
    Step("cm-list-label-in", "GET", f"{CMS}?labelSelector=app+in+(one,two)"),
    Step("cm-list-label-not", "GET", f"{CMS}?labelSelector=app,app!=one"),
    Step("cm-list-label-exists-not", "GET", f"{CMS}?labelSelector=app,!tier"),
    Step("cm-list-field", "GET", f"{CMS}?fieldSelector=metadata.name%3Dcm2"),
    Step("cm-list-field-not", "GET", f"{CMS}?labelSelector=app&fieldSelector=metadata.name!%3Dcm2"),
    Step("cm-list-field-bad", "GET", f"{CMS}?fieldSelector=data.a%3D1"),
    Step("cm-list-label-bad", "GET", f"{CMS}?labelSelector=a+b"),
    Step("cm-list-limit", "GET", f"{CMS}?labelSelector=app&limit=1"),
    # Deletion, 404s, and the watch that replays it all.
    Step("cm-delete", "DELETE", f"{CMS}/cm1"),
    Step("cm-delete-missing", "DELETE", f"{CMS}/cm1"),
    Step("cm-get-missing", "GET", f"{CMS}/cm1"),
    Step("cm-watch", "GET",
         f"{CMS}?watch=1&labelSelector=app&resourceVersion={{cm-create:metadata.resourceVersion}}",
         watch_until=("DELETED", "cm1")),
    Step("cm-watch-selector", "GET",
         f"{CMS}?watch=1&labelSelector=app%3Done&resourceVersion={{cm-create:metadata.resourceVersion}}",
         watch_until=("DELETED", "cm1")),
    # 422s.
    # One bad entry per map: kube-apiserver checks map entries in Go's random map order.
    Step("cm-create-invalid", "POST", CMS,
         _cm("Bad_Name", {"bad key!": "1"}, {"bad label!": "-bad-"})),
    Step("svc-create-bad-name", "POST", SVCS, SERVICE | {"metadata": {"name": "1web"}}),
    Step("ns-create-bad-name", "POST", "/api/v1/namespaces",
         {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}}),
    Step("cm-create-no-name", "POST", CMS, {"apiVersion": "v1", "kind": "ConfigMap"}),
    Step("cm-create-wrong-ns", "POST", CMS, _cm("cm3", {}, namespace="other")),
    Step("cm-create-bad-json", "POST", CMS, b"{not json"),
    Step("cm-create-wrong-type", "POST", CMS, {"apiVersion": "v1", "kind": "ConfigMap",
                                               "metadata": {"name": "t"}, "data": {"a": 1}}),
    Step("cm-immutable", "POST", CMS, _cm("frozen", {"a": "1"}) | {"immutable": True}),
    Step("cm-immutable-update", "PATCH", f"{CMS}/frozen", {"data": {"a": "2"}}, MERGE),
    # Services: defaulting, immutable ClusterIP, strategic merge of ports by their key.
    Step("svc-create", "POST", SVCS, SERVICE),
    Step("svc-get", "GET", f"{SVCS}/web"),
    Step("svc-patch-strategic", "PATCH", f"{SVCS}/web",
         {"spec": {"ports": [{"port": 9000, "name": "admin", "targetPort": 9001}]}}, STRATEGIC),
    Step("svc-patch-clusterip", "PATCH", f"{SVCS}/web", {"spec": {"clusterIP": "10.0.0.99"}},
         MERGE),
    Step("svc-create-invalid", "POST", SVCS, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad"},
        "spec": {"ports": [{"port": 0}, {"port": 80}]}}),
    Step("svc-create-bad-protocol", "POST", SVCS, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad"},
        "spec": {"ports": [{"port": 80, "protocol": "XTP"}]}}),
    Step("svc-create-headless", "POST", SVCS, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "headless"},
        "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
    Step("svc-list", "GET", f"{SVCS}?labelSelector=app"),
    Step("svc-delete", "DELETE", f"{SVCS}/web"),
    # A CRD and its objects, with the status subresource.
    Step("crd-create", "POST", CRDS, CRD, status_only=True),
    Step("crd-established", "GET", f"{CRDS}/{CRD_NAME}", until=_established, status_only=True),
    Step("cr-create", "POST", WIDGETS, _widget("w1", {"size": 1, "tags": ["a"]},
                                               labels={"app": "w"})),
    Step("cr-create-2", "POST", WIDGETS, _widget("w2", {"size": 2, "color": "blue"})),
    Step("cr-create-status-ignored", "POST", WIDGETS,
         _widget("w3", {"size": 3}) | {"status": {"ready": True}}),
    Step("cr-get", "GET", f"{WIDGETS}/w1"),
    Step("cr-list", "GET", WIDGETS),
    Step("cr-list-label", "GET", f"{WIDGETS}?labelSelector=app%3Dw"),
    Step("cr-list-field", "GET", f"{WIDGETS}?fieldSelector=metadata.name%3Dw2"),
    Step("cr-update", "PUT", f"{WIDGETS}/w1", _widget(
        "w1", {"size": 5, "color": "red"}, labels={"app": "w"},
        resourceVersion="{cr-create:metadata.resourceVersion}")),
    Step("cr-update-stale", "PUT", f"{WIDGETS}/w1", _widget(
        "w1", {"size": 6}, resourceVersion="{cr-create:metadata.resourceVersion}")),
    Step("cr-status-put", "PUT", f"{WIDGETS}/w1/status", _widget(
        "w1", {"size": 99}, labels={"app": "w"},
        resourceVersion="{cr-update:metadata.resourceVersion}") | {"status": {"ready": True}}),
    Step("cr-status-patch", "PATCH", f"{WIDGETS}/w1/status", {"status": {"count": 2}}, MERGE),
    Step("cr-status-get", "GET", f"{WIDGETS}/w1/status"),
    Step("cr-patch-merge", "PATCH", f"{WIDGETS}/w1",
         {"spec": {"tags": ["b", "c"]}, "status": {"ready": False}}, MERGE),
    Step("cr-patch-json", "PATCH", f"{WIDGETS}/w1",
         [{"op": "add", "path": "/spec/tags/-", "value": "d"},
          {"op": "replace", "path": "/spec/size", "value": 7}], JSON_PATCH),
    Step("cr-patch-strategic", "PATCH", f"{WIDGETS}/w1", {"spec": {"size": 8}}, STRATEGIC),
    Step("cr-apply", "PATCH", f"{WIDGETS}/w4?fieldManager=one",
         _widget("w4", {"size": 4, "tags": ["x"]}), APPLY),
    Step("cr-apply-again", "PATCH", f"{WIDGETS}/w4?fieldManager=one",
         _widget("w4", {"size": 4, "tags": ["x"]}), APPLY),
    # One error each: kube-apiserver walks an unstructured object in Go's random map order.
    Step("cr-create-too-small", "POST", WIDGETS, _widget("bad", {"size": 0})),
    Step("cr-create-bad-enum", "POST", WIDGETS, _widget("bad", {"size": 1, "color": "green"})),
    Step("cr-create-too-long", "POST", WIDGETS, _widget("bad", {"size": 1, "name": "abcdef"})),
    Step("cr-create-too-many", "POST", WIDGETS,
         _widget("bad", {"size": 1, "tags": ["a", "b", "c", "d"]})),
    Step("cr-list-field-bad", "GET", f"{WIDGETS}?fieldSelector=spec.size%3D1"),
    Step("cr-create-missing-required", "POST", WIDGETS, _widget("bad", {"color": "red"})),
    Step("cr-create-pruned", "POST", WIDGETS,
         _widget("w5", {"size": 1, "unknown": "x"}) | {"extra": 1}),
    Step("cr-get-missing", "GET", f"{WIDGETS}/nope"),
    Step("cr-delete", "DELETE", f"{WIDGETS}/w1"),
    Step("cr-watch", "GET",
         f"{WIDGETS}?watch=1&resourceVersion={{cr-create:metadata.resourceVersion}}",
         watch_until=("DELETED", "w1")),
    # Pods: what admission and defaulting add at creation (the create answer is the stored
    # object before any controller touched it; later reads race the scheduler and kubelet).
    Step("pod-create", "POST", PODS, POD),
    Step("pod-list-field-bad", "GET", f"{PODS}?fieldSelector=spec.bogus%3D1"),
    Step("pod-create-invalid", "POST", PODS, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"},
        "spec": {"containers": [], "restartPolicy": "Sometimes"}}),
    Step("pod-update-spec", "PATCH", f"{PODS}/p1",
         {"spec": {"containers": [{"name": "main", "ports": [{"containerPort": 81}]}]}},
         STRATEGIC),
    Step("pod-delete", "DELETE", f"{PODS}/p1?gracePeriodSeconds=0", status_only=True),
    Step("deploy-create", "POST", DEPLOYS, DEPLOYMENT),
    # RBAC: a ServiceAccount without any role.
    Step("sa-create", "POST", f"{CORE}/serviceaccounts",
         {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody"}}),
    Step("sa-token", "POST", f"{CORE}/serviceaccounts/nobody/token",
         {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
          "spec": {"expirationSeconds": 3600}}),
    Step("rbac-get", "GET", f"{CMS}/cm2", token="{sa-token:status.token}"),
    Step("rbac-list-cluster", "GET", "/apis/apps/v1/deployments",
         token="{sa-token:status.token}"),
    Step("rbac-create", "POST", CMS, _cm("x", {}), token="{sa-token:status.token}"),
    Step("rbac-path", "GET", "/", token="{sa-token:status.token}"),
    Step("rbac-discovery", "GET", "/api", token="{sa-token:status.token}", status_only=True),
    Step("rbac-ssar", "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"namespace": NS, "verb": "get",
                                        "resource": "configmaps"}}},
         token="{sa-token:status.token}"),
    Step("unauthenticated", "GET", CMS, token="not-a-token"),
    # Errors of the URL itself.
    Step("unknown-resource", "GET", f"{CORE}/gizmos"),
    Step("unknown-group", "GET", "/apis/nope.example/v1/things"),
    Step("method-not-allowed", "PUT", f"{CMS}", _cm("cm9", {})),
]
