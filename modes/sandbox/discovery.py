"""Discovery documents: /version, /api, /apis and per group-version APIResourceLists, plus the
aggregated form (apidiscovery.k8s.io/v2) that kubectl asks for first.
"""

from __future__ import annotations

from typing import Any

from modes.sandbox.resources import ResourceRegistry, ResourceType

Obj = dict[str, Any]
SUBRESOURCE_VERBS = {
    "status": ["get", "patch", "update"],
    "scale": ["get", "patch", "update"],
    "finalize": ["update"],
    "log": ["get"],
    "portforward": ["create", "get"],
    "proxy": ["create", "delete", "get", "patch", "update"],
    "binding": ["create"],
    "eviction": ["create"],
    "token": ["create"],
}


def version_info() -> Obj:
    return {
        "major": "1",
        "minor": "37",
        "gitVersion": "v1.37.0-kubetunnel-sandbox",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25",
        "compiler": "gc",
        "platform": "linux/amd64",
        "emulationMajor": "1",
        "emulationMinor": "37",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "36",
    }


def core_versions(address: str) -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    }


def _group(name: str, versions: list[str]) -> Obj:
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def group_list(registry: ResourceRegistry) -> Obj:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group(g, vs) for g, vs in registry.groups().items()],
    }


def group(registry: ResourceRegistry, name: str) -> Obj | None:
    versions = registry.groups().get(name)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def _scale_kind(rt: ResourceType) -> tuple[str, str, str]:
    return ("autoscaling", "v1", "Scale")


def resource_list(registry: ResourceRegistry, group: str, version: str) -> Obj | None:
    types = registry.in_group_version(group, version)
    if not types and not (group == "" and version == "v1"):
        return None
    resources: list[Obj] = []
    for rt in sorted(types, key=lambda t: t.plural):
        entry: Obj = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(rt.verbs),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        resources.append(entry)
        for sub in rt.subresources:
            sub_entry: Obj = {
                "name": f"{rt.plural}/{sub}",
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": SUBRESOURCE_VERBS.get(sub, ["get"]),
            }
            if sub == "scale":
                g, v, k = _scale_kind(rt)
                sub_entry.update(group=g, version=v, kind=k)
            resources.append(sub_entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def aggregated(registry: ResourceRegistry, core: bool) -> Obj:
    """apidiscovery.k8s.io/v2 APIGroupDiscoveryList for /api (core) or /apis."""
    groups = {"": ["v1"]} if core else registry.groups()
    items = []
    for name, versions in groups.items():
        version_entries = []
        for version in versions:
            resources = []
            for rt in sorted(registry.in_group_version(name, version), key=lambda t: t.plural):
                entry: Obj = {
                    "resource": rt.plural,
                    "singularResource": rt.singular,
                    "scope": "Namespaced" if rt.namespaced else "Cluster",
                    "responseKind": {"group": name, "version": version, "kind": rt.kind},
                    "verbs": list(rt.verbs),
                }
                if rt.short_names:
                    entry["shortNames"] = list(rt.short_names)
                if rt.categories:
                    entry["categories"] = list(rt.categories)
                subs = []
                for sub in rt.subresources:
                    kind = (*_scale_kind(rt),) if sub == "scale" else (name, version, rt.kind)
                    subs.append(
                        {
                            "subresource": sub,
                            "verbs": SUBRESOURCE_VERBS.get(sub, ["get"]),
                            "responseKind": {"group": kind[0], "version": kind[1], "kind": kind[2]},
                        }
                    )
                if subs:
                    entry["subresources"] = subs
                resources.append(entry)
            version_entries.append(
                {"version": version, "resources": resources, "freshness": "Current"}
            )
        items.append(
            {"metadata": {"name": name, "creationTimestamp": None}, "versions": version_entries}
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }
