"""The resource types the sandbox serves: built-ins and those added by CRDs.

A :class:`ResourceType` carries what discovery, routing, storage and validation need. Stored
objects are keyed by ``(group, plural)``, independent of version, as in kube-apiserver.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
READ_WRITE = ALL_VERBS
CREATE_ONLY = ("create",)


@dataclasses.dataclass(frozen=True)
class Column:
    """One printer column of ``kubectl get``: a JSONPath for CRDs, a Python getter otherwise."""

    name: str
    type: str
    json_path: str = ""
    description: str = ""
    priority: int = 0
    format: str = ""


@dataclasses.dataclass
class ResourceType:
    group: str
    versions: tuple[str, ...]
    kind: str
    plural: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = READ_WRITE
    subresources: tuple[str, ...] = ()
    # Whether writes to the spec bump metadata.generation (types whose spec controllers act on).
    generation: bool = False
    # DELETE of an object gone at once answers with the object (as pods and services do)
    # rather than a Status (as ConfigMaps and custom resources do).
    returns_deleted: bool = False
    # OpenAPI definition name of a built-in kind; None for custom resources.
    definition: str | None = None
    # Custom resources: the CRD's per-version openAPIV3Schema and printer columns.
    crd_schemas: dict[str, Any] = dataclasses.field(default_factory=dict)
    crd_columns: dict[str, tuple[Column, ...]] = dataclasses.field(default_factory=dict)
    crd_scale: dict[str, Any] | None = None
    storage_version: str = ""

    def __post_init__(self) -> None:
        if not self.singular:
            self.singular = self.kind.lower()
        if not self.storage_version:
            self.storage_version = self.versions[0]

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def custom(self) -> bool:
        return self.definition is None

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def api_version(self, version: str | None = None) -> str:
        version = version or self.storage_version
        return f"{self.group}/{version}" if self.group else version

    def base_path(self, version: str) -> str:
        return f"/apis/{self.group}/{version}" if self.group else f"/api/{version}"


@dataclasses.dataclass(frozen=True)
class Target:
    """What one request addresses: a type at a version, and where present a namespace, an
    object and a subresource (the endpoints and the handlers they dispatch to share it)."""

    rt: ResourceType
    version: str
    namespace: str | None
    name: str | None
    subresource: str | None


def _core(kind: str, plural: str, namespaced: bool = True, **kw: Any) -> ResourceType:
    return ResourceType(
        "", ("v1",), kind, plural, namespaced, definition=f"io.k8s.api.core.v1.{kind}", **kw
    )


def _grouped(
    group: str, short: str, kind: str, plural: str, namespaced: bool = True, **kw: Any
) -> ResourceType:
    return ResourceType(
        group, ("v1",), kind, plural, namespaced, definition=f"io.k8s.api.{short}.v1.{kind}", **kw
    )


def builtins() -> list[ResourceType]:
    apps = "apps"
    rbac = "rbac.authorization.k8s.io"
    return [
        _core(
            "Namespace",
            "namespaces",
            False,
            short_names=("ns",),
            subresources=("status", "finalize"),
            verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
        ),
        _core(
            "Pod",
            "pods",
            short_names=("po",),
            categories=("all",),
            subresources=("status", "log", "portforward", "binding", "eviction"),
            generation=True,
            returns_deleted=True,
        ),
        _core(
            "Service",
            "services",
            short_names=("svc",),
            categories=("all",),
            subresources=("status", "proxy"),
            returns_deleted=True,
        ),
        _core("Endpoints", "endpoints", short_names=("ep",)),
        _core("ConfigMap", "configmaps", short_names=("cm",)),
        _core("Secret", "secrets"),
        _core("ServiceAccount", "serviceaccounts", short_names=("sa",), subresources=("token",)),
        _core("Event", "events", short_names=("ev",)),
        _core("Node", "nodes", False, short_names=("no",), subresources=("status", "proxy")),
        _grouped(
            apps,
            "apps",
            "Deployment",
            "deployments",
            short_names=("deploy",),
            categories=("all",),
            subresources=("status", "scale"),
            generation=True,
        ),
        _grouped(
            apps,
            "apps",
            "ReplicaSet",
            "replicasets",
            short_names=("rs",),
            categories=("all",),
            subresources=("status", "scale"),
            generation=True,
        ),
        _grouped(
            apps,
            "apps",
            "StatefulSet",
            "statefulsets",
            short_names=("sts",),
            categories=("all",),
            subresources=("status", "scale"),
            generation=True,
        ),
        _grouped(
            apps,
            "apps",
            "DaemonSet",
            "daemonsets",
            short_names=("ds",),
            categories=("all",),
            subresources=("status",),
            generation=True,
        ),
        _grouped(rbac, "rbac", "Role", "roles"),
        _grouped(rbac, "rbac", "RoleBinding", "rolebindings"),
        _grouped(rbac, "rbac", "ClusterRole", "clusterroles", False),
        _grouped(rbac, "rbac", "ClusterRoleBinding", "clusterrolebindings", False),
        _grouped(
            "networking.k8s.io",
            "networking",
            "NetworkPolicy",
            "networkpolicies",
            short_names=("netpol",),
            generation=True,
        ),
        _grouped(
            "networking.k8s.io",
            "networking",
            "Ingress",
            "ingresses",
            short_names=("ing",),
            subresources=("status",),
            generation=True,
        ),
        _grouped("discovery.k8s.io", "discovery", "EndpointSlice", "endpointslices"),
        _grouped("coordination.k8s.io", "coordination", "Lease", "leases"),
        ResourceType(
            "apiextensions.k8s.io",
            ("v1",),
            "CustomResourceDefinition",
            "customresourcedefinitions",
            False,
            short_names=("crd", "crds"),
            categories=("api-extensions",),
            subresources=("status",),
            generation=True,
            definition="io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
        ),
        _grouped(
            "authorization.k8s.io",
            "authorization",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            False,
            verbs=CREATE_ONLY,
        ),
        _grouped(
            "authorization.k8s.io",
            "authorization",
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            False,
            verbs=CREATE_ONLY,
        ),
    ]


class ResourceRegistry:
    """Every served type, looked up by URL parts or by group/version/kind."""

    def __init__(self, types: list[ResourceType] | None = None) -> None:
        self._types: dict[tuple[str, str], ResourceType] = {}
        for rt in builtins() if types is None else types:
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        self._types[rt.key] = rt

    def remove(self, key: tuple[str, str]) -> ResourceType | None:
        return self._types.pop(key, None)

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(list(self._types.values()))

    def get(self, group: str, plural: str) -> ResourceType | None:
        return self._types.get((group, plural))

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        rt = self._types.get((group, plural))
        return rt if rt is not None and version in rt.versions else None

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for rt in self._types.values():
            if rt.group == group and rt.kind == kind and version in rt.versions:
                return rt
        return None

    def groups(self) -> dict[str, list[str]]:
        """group -> served versions, preferred first, in a stable order (core group excluded)."""
        found: dict[str, list[str]] = {}
        for rt in self._types.values():
            if rt.group:
                versions = found.setdefault(rt.group, [])
                for v in rt.versions:
                    if v not in versions:
                        versions.append(v)
        return found

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self._types.values() if rt.group == group and version in rt.versions]
