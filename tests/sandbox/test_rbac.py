"""RBAC: ServiceAccount tokens are authorized by Roles and bindings, as kube-apiserver does."""

from __future__ import annotations

import uuid
from typing import Any

from modes.sandbox.tokens import TokenIssuer

from .conftest import Kubectl, Raw

RBAC = "/apis/rbac.authorization.k8s.io/v1"


def _token(raw: Raw, ns: str, account: str, seconds: int = 3600) -> str:
    code, _, body = raw("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}})
    assert code == 201, body
    code, _, body = raw("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{account}/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": seconds}})
    assert code == 201, body
    assert isinstance(body, dict)
    assert body["spec"] == {"audiences": ["https://kubernetes.default.svc.cluster.local"],
                            "expirationSeconds": seconds, "boundObjectRef": None}
    assert body["status"]["expirationTimestamp"].endswith("Z")
    return str(body["status"]["token"])


def _grant(raw: Raw, ns: str | None, rules: list[dict[str, Any]],
           subject: dict[str, str]) -> None:
    """A (Cluster)Role with ``rules`` bound to ``subject``: namespaced if ``ns`` is given."""
    name = f"r-{uuid.uuid4().hex[:8]}"
    scope = f"{RBAC}/namespaces/{ns}" if ns else RBAC
    kind = "Role" if ns else "ClusterRole"
    code, _, body = raw("POST", f"{scope}/{kind.lower()}s", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
        "metadata": {"name": name}, "rules": rules})
    assert code == 201, body
    code, _, body = raw("POST", f"{scope}/{kind.lower()}bindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": f"{kind}Binding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
        "subjects": [subject]})
    assert code == 201, body


def _sa(ns: str, name: str) -> dict[str, str]:
    return {"kind": "ServiceAccount", "name": name, "namespace": ns}


def test_no_binding_means_403_worded_as_kube_apiserver(raw: Raw, ns: str) -> None:
    token = _token(raw, ns, "nobody")
    code, _, body = raw("GET", f"/api/v1/namespaces/{ns}/configmaps/cm", token=token)
    assert code == 403
    assert body == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'configmaps "cm" is forbidden: User "system:serviceaccount:{ns}:nobody" '
                   f'cannot get resource "configmaps" in API group "" in the namespace "{ns}"',
        "reason": "Forbidden", "details": {"name": "cm", "kind": "configmaps"}, "code": 403}
    code, _, body = raw("GET", "/apis/apps/v1/deployments", token=token)
    assert code == 403
    assert isinstance(body, dict)
    assert body["message"].endswith(
        'cannot list resource "deployments" in API group "apps" at the cluster scope')
    # Discovery and version are open to every authenticated user, "/" is not.
    for path in ("/api", "/api/v1", "/apis", "/apis/apps/v1", "/version"):
        assert raw("GET", path, token=token)[0] == 200, path
    code, _, body = raw("GET", "/", token=token)
    assert code == 403
    assert body["message"] == (  # type: ignore[index]
        f'forbidden: User "system:serviceaccount:{ns}:nobody" cannot get path "/"')


def test_rules_match_verbs_resources_names_and_subresources(raw: Raw, ns: str) -> None:
    token = _token(raw, ns, "dev")
    _grant(raw, ns, [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["only-this"],
         "verbs": ["*"]},
        {"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["get"]},
    ], _sa(ns, "dev"))
    path = f"/api/v1/namespaces/{ns}"
    assert raw("GET", f"{path}/configmaps", token=token)[0] == 200
    assert raw("GET", f"{path}/configmaps?watch=true&timeoutSeconds=1", token=token)[0] == 403
    assert raw("POST", f"{path}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                              "metadata": {"name": "x"}}, token=token)[0] == 403
    assert raw("GET", f"{path}/secrets/only-this", token=token)[0] == 404  # allowed, absent
    assert raw("GET", f"{path}/secrets/another", token=token)[0] == 403
    # A rule with resourceNames cannot allow a create: the name is not known yet.
    assert raw("POST", f"{path}/secrets", {"apiVersion": "v1", "kind": "Secret",
                                           "metadata": {"name": "only-this"}},
               token=token)[0] == 403
    assert raw("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/d/scale",
               token=token)[0] == 404
    assert raw("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/d", token=token)[0] == 403
    # A Role reaches no further than its namespace.
    assert raw("GET", "/api/v1/namespaces/default/configmaps", token=token)[0] == 403
    # In a RoleBinding, a ServiceAccount subject without a namespace is one of the binding's.
    assert raw("GET", f"{path}/services", token=token)[0] == 403
    _grant(raw, ns, [{"apiGroups": [""], "resources": ["services"], "verbs": ["list"]}],
           {"kind": "ServiceAccount", "name": "dev"})
    assert raw("GET", f"{path}/services", token=token)[0] == 200


def test_cluster_roles_groups_and_non_resource_urls(raw: Raw, ns: str, kubectl: Kubectl) -> None:
    token = _token(raw, ns, "ops")
    # Every ServiceAccount of the namespace, by group, through a ClusterRoleBinding.
    _grant(raw, None, [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["list"]},
                       {"nonResourceURLs": ["/metrics*"], "verbs": ["get"]}],
           {"kind": "Group", "name": f"system:serviceaccounts:{ns}"})
    assert raw("GET", "/apis/apps/v1/deployments", token=token)[0] == 200
    assert raw("GET", "/api/v1/pods", token=token)[0] == 200
    assert raw("GET", f"/api/v1/namespaces/{ns}/pods/p", token=token)[0] == 403  # get, not list
    code, _, _ = raw("GET", "/metrics/anything", token=token)
    assert code == 404  # allowed by the rule, not served by the sandbox
    # SelfSubjectAccessReview answers the same questions for the asking user.
    for attributes, allowed in (
        ({"resourceAttributes": {"verb": "list", "group": "apps", "resource": "deployments"}},
         True),
        ({"resourceAttributes": {"verb": "delete", "resource": "pods", "namespace": ns}}, False),
        ({"nonResourceAttributes": {"verb": "get", "path": "/metrics"}}, True),
        ({"nonResourceAttributes": {"verb": "get", "path": "/debug"}}, False),
    ):
        code, _, body = raw("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": attributes}, token=token)
        assert code == 201, body
        assert body["status"]["allowed"] is allowed, (attributes, body)  # type: ignore[index]
    # The sandbox's own user is cluster-admin.
    assert kubectl("auth", "can-i", "delete", "nodes").stdout.strip() == "yes"


def test_token_requests_are_validated_and_tokens_expire(raw: Raw, ns: str) -> None:
    _token(raw, ns, "short")
    code, _, body = raw("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/short/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 60}})
    assert code == 422
    assert "may not specify a duration less than 10 minutes" in body["message"]  # type: ignore[index]
    code, _, body = raw("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/absent/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest"})
    assert code == 404
    assert body["message"] == 'serviceaccounts "absent" not found'  # type: ignore[index]


def test_an_expired_token_is_forgotten() -> None:
    issuer = TokenIssuer({"t": "system:serviceaccount:a:b"}, endpoints=None)  # type: ignore[arg-type]
    issuer.expires["t"] = 0.0
    assert issuer.expired("t")
    assert "t" not in issuer.accepted
    assert not issuer.expired("t")  # forgotten: now simply unknown (401 at the server)


def test_self_subject_rules_review_lists_what_applies(raw: Raw, ns: str, kubectl: Kubectl) -> None:
    token = _token(raw, ns, "lister")
    _grant(raw, ns, [{"apiGroups": [""], "resources": ["pods"], "resourceNames": ["p1"],
                      "verbs": ["get"]}], _sa(ns, "lister"))

    def rules(namespace: str) -> dict[str, Any]:
        code, _, body = raw("POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
            "spec": {"namespace": namespace}}, token=token)
        assert code == 201, body
        assert isinstance(body, dict)
        status: dict[str, Any] = body["status"]
        return status

    here = rules(ns)
    assert {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"],
            "resourceNames": ["p1"]} in here["resourceRules"]
    assert {"verbs": ["get"], "nonResourceURLs": list(
        ("/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*",
         "/readyz", "/version", "/version/"))} in here["nonResourceRules"]
    assert here["incomplete"] is False
    elsewhere = rules("default")
    assert all(r.get("resources") != ["pods"] for r in elsewhere["resourceRules"])
    # kubectl auth can-i --list, as the sandbox's admin: everything.
    listed = kubectl("auth", "can-i", "--list").stdout.splitlines()
    assert listed[1].split() == ["*.*", "[]", "[]", "[*]"]


def test_the_default_roles_of_a_new_cluster_are_there_to_bind(
    raw: Raw, ns: str, kubectl: Kubectl,
) -> None:
    names = kubectl("get", "clusterroles", "-l", "kubernetes.io/bootstrapping=rbac-defaults",
                    "-o", "name").stdout.split()
    assert {"clusterrole.rbac.authorization.k8s.io/cluster-admin",
            "clusterrole.rbac.authorization.k8s.io/system:discovery",
            "clusterrole.rbac.authorization.k8s.io/system:basic-user",
            "clusterrole.rbac.authorization.k8s.io/system:public-info-viewer"} <= set(names)
    token = _token(raw, ns, "root")
    assert raw("DELETE", "/api/v1/namespaces/kube-public/configmaps/x", token=token)[0] == 403
    code, _, body = raw("POST", f"{RBAC}/clusterrolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{ns}-root"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
        "subjects": [_sa(ns, "root")]})
    assert code == 201, body
    try:
        assert raw("DELETE", "/api/v1/namespaces/kube-public/configmaps/x",
                   token=token)[0] == 404  # allowed now; there is no such ConfigMap
        assert raw("GET", "/metrics", token=token)[0] == 404
    finally:
        raw("DELETE", f"{RBAC}/clusterrolebindings/{ns}-root")
