"""RBAC authorization, as kube-apiserver's RBAC authorizer decides it.

Who is asking comes from the bearer token: the sandbox's own token is ``sandbox-admin`` in group
``system:masters`` (allowed everything, as cluster-admin's certificate is), and a token minted
for a ServiceAccount (pods, TokenRequest) is ``system:serviceaccount:<ns>:<name>`` in groups
``system:serviceaccounts``, ``system:serviceaccounts:<ns>`` and ``system:authenticated``.

What a request asks to do is the request's attributes (verb, API group, resource, subresource,
namespace, name; or a non-resource path), derived from the URL and method as kube-apiserver's
RequestInfo does. A request is allowed when a rule of a Role or ClusterRole bound to the user
(ClusterRoleBindings anywhere; RoleBindings in the request's namespace) matches it, with the
wildcards RBAC allows. A new sandbox has the default roles and bindings every cluster has that
matter here (``default_objects``): ``cluster-admin`` for ``system:masters``, and for every
authenticated user the discovery and version paths (``system:discovery``,
``system:public-info-viewer``) and self-reviews (``system:basic-user``).

Not emulated: aggregated ClusterRoles (their rules must be written out), escalation checks when
creating Roles or bindings, impersonation, and any authorizer other than RBAC.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modes.sandbox.errors import ApiError

if TYPE_CHECKING:
    from modes.sandbox.storage import Store

Obj = dict[str, Any]
ADMIN = "sandbox-admin"
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
RBAC_GROUP = "rbac.authorization.k8s.io"

# The default roles and bindings of every new cluster (kube-apiserver's RBAC bootstrap policy),
# as far as they concern what the sandbox serves. Created as objects when the sandbox starts.
_DISCOVERY_PATHS = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
                    "/openapi/*", "/readyz", "/version", "/version/"]
_DEFAULT_ROLES: dict[str, tuple[list[Obj], list[Obj]]] = {
    # name: (rules, subjects of its ClusterRoleBinding)
    "cluster-admin": (
        [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
         {"nonResourceURLs": ["*"], "verbs": ["*"]}],
        [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": MASTERS}]),
    "system:discovery": (
        [{"nonResourceURLs": _DISCOVERY_PATHS, "verbs": ["get"]}],
        [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": AUTHENTICATED}]),
    "system:basic-user": (
        [{"apiGroups": ["authorization.k8s.io"],
          "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
          "verbs": ["create"]},
         {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"],
          "verbs": ["create"]}],
        [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": AUTHENTICATED}]),
    "system:public-info-viewer": (
        [{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"],
          "verbs": ["get"]}],
        [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": AUTHENTICATED},
         {"apiGroup": RBAC_GROUP, "kind": "Group", "name": "system:unauthenticated"}]),
}


def default_objects() -> list[Obj]:
    """The default ClusterRoles and ClusterRoleBindings, labelled as kube-apiserver labels its
    bootstrap policy."""
    meta = {"labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}}
    objects: list[Obj] = []
    for name, (rules, subjects) in _DEFAULT_ROLES.items():
        objects.append({"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRole",
                        "metadata": {"name": name, **copy.deepcopy(meta)},
                        "rules": copy.deepcopy(rules)})
        objects.append({"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRoleBinding",
                        "metadata": {"name": name, **copy.deepcopy(meta)},
                        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole",
                                    "name": name},
                        "subjects": copy.deepcopy(subjects)})
    return objects


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]

    @classmethod
    def named(cls, name: str) -> User:
        if name == ADMIN:
            return cls(name, (MASTERS, AUTHENTICATED))
        parts = name.split(":")
        if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
            return cls(name, ("system:serviceaccounts", f"system:serviceaccounts:{parts[2]}",
                              AUTHENTICATED))
        return cls(name, (AUTHENTICATED,))


@dataclass(frozen=True)
class Attributes:
    """What one request asks to do (kube-apiserver's authorizer.Attributes)."""

    verb: str
    resource_request: bool
    path: str = ""
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    def describe(self) -> str:
        """The words kube-apiserver uses in a 403 (responsewriters.forbiddenMessage)."""
        if not self.resource_request:
            return f'cannot {self.verb} path "{self.path}"'
        resource = self.resource + (f"/{self.subresource}" if self.subresource else "")
        where = (f'in the namespace "{self.namespace}"' if self.namespace
                 else "at the cluster scope")
        return f'cannot {self.verb} resource "{resource}" in API group "{self.api_group}" {where}'


def resource_verb(method: str, *, has_name: bool, watch: bool) -> str:
    """The RBAC verb of a resource request (RequestInfoFactory)."""
    if method in ("GET", "HEAD"):
        if watch:
            return "watch"
        return "get" if has_name else "list"
    if method == "DELETE":
        return "delete" if has_name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def forbidden(user: User, attrs: Attributes) -> ApiError:
    """403 with the message and details kube-apiserver gives (errors.NewForbidden)."""
    said = f'User "{user.name}" {attrs.describe()}'
    if not attrs.resource_request:
        return ApiError(403, "Forbidden", f"forbidden: {said}", details={})
    qualified = attrs.resource + (f".{attrs.api_group}" if attrs.api_group else "")
    named = f' "{attrs.name}"' if attrs.name else ""
    details: Obj = {"kind": attrs.resource}
    if attrs.name:
        details["name"] = attrs.name
    if attrs.api_group:
        details["group"] = attrs.api_group
    return ApiError(403, "Forbidden", f"{qualified}{named} is forbidden: {said}", details=details)


class Authorizer:
    """RBAC over the sandbox's stored Roles, ClusterRoles and their bindings."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def check(self, user: User, attrs: Attributes) -> None:
        """Raise the 403 kube-apiserver would send, unless the request is allowed."""
        if not self.decide(user, attrs)[0]:
            raise forbidden(user, attrs)

    def decide(self, user: User, attrs: Attributes) -> tuple[bool, str]:
        """(allowed, reason); the reason names the binding that allowed it, as RBAC's does."""
        if MASTERS in user.groups:  # kube-apiserver lets this group through before RBAC
            return True, f'allowed: user "{user.name}" is in group "{MASTERS}"'
        for binding in self._list(RBAC_GROUP, "clusterrolebindings", None):
            if _binds(binding, user, None):
                role = self._role(binding, None)
                if role is not None and any(_allows(r, attrs) for r in _rules(role)):
                    return True, _reason("ClusterRoleBinding", binding, role)
        if attrs.namespace:
            for binding in self._list(RBAC_GROUP, "rolebindings", attrs.namespace):
                if _binds(binding, user, attrs.namespace):
                    role = self._role(binding, attrs.namespace)
                    if role is not None and attrs.resource_request and any(
                            _allows(r, attrs) for r in _rules(role)):
                        return True, _reason("RoleBinding", binding, role)
        return False, ""

    def rules_of(self, user: User, namespace: str) -> tuple[list[Obj], list[Obj]]:
        """(resource rules, non-resource rules) the user has in ``namespace``: the status of a
        SelfSubjectRulesReview (``kubectl auth can-i --list``)."""
        rules: list[Obj] = []
        for binding in self._list(RBAC_GROUP, "clusterrolebindings", None):
            if _binds(binding, user, None):
                role = self._role(binding, None)
                rules += _rules(role) if role is not None else []
        if namespace:
            for binding in self._list(RBAC_GROUP, "rolebindings", namespace):
                if _binds(binding, user, namespace):
                    role = self._role(binding, namespace)
                    rules += [r for r in _rules(role) if r.get("resources")] if role else []
        resource = [{k: r[k] for k in ("verbs", "apiGroups", "resources", "resourceNames")
                     if r.get(k)} for r in rules if r.get("resources")]
        non_resource = [{k: r[k] for k in ("verbs", "nonResourceURLs")}
                        for r in rules if r.get("nonResourceURLs")]
        return resource, non_resource

    def _role(self, binding: Obj, namespace: str | None) -> Obj | None:
        ref = binding.get("roleRef") or {}
        if ref.get("kind") == "ClusterRole":
            return self._get(RBAC_GROUP, "clusterroles", "", ref.get("name", ""))
        if ref.get("kind") == "Role" and namespace:
            return self._get(RBAC_GROUP, "roles", namespace, ref.get("name", ""))
        return None

    def _list(self, group: str, plural: str, namespace: str | None) -> list[Obj]:
        rt = self.store.registry.get(group, plural)
        if rt is None:
            return []
        objects = self.store.bucket(rt).values()
        if namespace is None:
            return list(objects)
        return [o for o in objects if o["metadata"].get("namespace") == namespace]

    def _get(self, group: str, plural: str, namespace: str, name: str) -> Obj | None:
        rt = self.store.registry.get(group, plural)
        return None if rt is None else self.store.peek(rt, namespace, name)


def _reason(kind: str, binding: Obj, role: Obj) -> str:
    return (f'RBAC: allowed by {kind} "{binding["metadata"]["name"]}" of '
            f'{role.get("kind", "Role")} "{role["metadata"]["name"]}"')


def _rules(role: Obj) -> list[Obj]:
    rules = role.get("rules")
    return [r for r in rules if isinstance(r, dict)] if isinstance(rules, list) else []


def _binds(binding: Obj, user: User, namespace: str | None) -> bool:
    """Whether a subject of the binding is this user (rbac.appliesTo)."""
    for subject in binding.get("subjects") or []:
        kind, name = subject.get("kind"), subject.get("name")
        if kind == "User" and name == user.name:
            return True
        if kind == "Group" and name in user.groups:
            return True
        if kind == "ServiceAccount":
            # In a RoleBinding a ServiceAccount subject without a namespace is one of the
            # binding's own namespace (rbac's appliesToUser); a ClusterRoleBinding's must name it.
            sa_namespace = subject.get("namespace") or namespace or ""
            if sa_namespace and user.name == f"system:serviceaccount:{sa_namespace}:{name}":
                return True
    return False


def _allows(rule: Obj, attrs: Attributes) -> bool:
    """rbac.RuleAllows: verbs, then groups/resources/names or non-resource URLs."""
    verbs = rule.get("verbs") or []
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    if not attrs.resource_request:
        return any(url == attrs.path or url == "*" or
                   (url.endswith("*") and attrs.path.startswith(url[:-1]))
                   for url in rule.get("nonResourceURLs") or [])
    groups = rule.get("apiGroups") or []
    if "*" not in groups and attrs.api_group not in groups:
        return False
    combined = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
    resources = rule.get("resources") or []
    if not any(r in ("*", combined) or (attrs.subresource and r == f"*/{attrs.subresource}")
               for r in resources):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names
