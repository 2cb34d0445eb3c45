"""CustomResourceDefinitions: a created CRD starts serving its resources (discovery, storage,
validation, defaulting, printer columns); a deleted one first deletes every custom resource of
it, through the same finalizer kube-apiserver uses, and then stops serving them.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

from modes.sandbox import deletion
from modes.sandbox.errors import cause
from modes.sandbox.resources import Column, ResourceType
from modes.sandbox.watching import Event

if TYPE_CHECKING:
    from modes.sandbox.storage import Store

Obj = dict[str, Any]
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
CLEANUP = "customresourcecleanup.apiextensions.k8s.io"
_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Kube's version order: GA > beta > alpha, higher numbers first, then non-kube names."""
    m = _VERSION.match(version)
    if not m:
        return (3, 0, 0, version)
    stability = {"": 0, "beta": 1, "alpha": 2}[m[2] or ""]
    return (stability, -int(m[1]), -int(m[3] or 0), "")


def resource_type(crd: Obj) -> ResourceType:
    spec = crd["spec"]
    names = spec["names"]
    served = [v for v in spec.get("versions", []) if v.get("served")]
    storage = next(
        (v["name"] for v in spec.get("versions", []) if v.get("storage")), served[0]["name"]
    )
    versions = tuple(sorted((v["name"] for v in served), key=version_priority))
    subresources: list[str] = []
    scale = None
    for v in served:
        sub = v.get("subresources") or {}
        if "status" in sub and "status" not in subresources:
            subresources.append("status")
        if "scale" in sub and "scale" not in subresources:
            subresources.append("scale")
            scale = sub["scale"]
    return ResourceType(
        spec["group"],
        versions,
        names["kind"],
        names["plural"],
        spec.get("scope", "Namespaced") == "Namespaced",
        singular=names.get("singular") or names["kind"].lower(),
        short_names=tuple(names.get("shortNames") or ()),
        categories=tuple(names.get("categories") or ()),
        subresources=tuple(subresources),
        generation=True,
        crd_schemas={
            v["name"]: (v.get("schema") or {}).get("openAPIV3Schema") or {} for v in served
        },
        crd_columns={
            v["name"]: tuple(
                Column(
                    c["name"],
                    c.get("type", "string"),
                    c.get("jsonPath", ""),
                    c.get("description", ""),
                    c.get("priority", 0),
                    c.get("format", ""),
                )
                for c in v.get("additionalPrinterColumns") or []
            )
            for v in served
        },
        crd_scale=scale,
        storage_version=storage,
    )


def validate(crd: Obj, old: Obj | None) -> list[Obj]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    causes = []
    expected = f"{names.get('plural', '')}.{spec.get('group', '')}"
    if crd["metadata"].get("name") != expected:
        causes.append(
            cause(
                "metadata.name",
                "FieldValueInvalid",
                f'Invalid value: "{crd["metadata"].get("name")}": must be '
                'spec.names.plural+"."+spec.group',
            )
        )
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(
            cause(
                "spec.scope",
                "FieldValueNotSupported",
                f'Unsupported value: "{spec.get("scope")}": supported values: "Cluster", '
                '"Namespaced"',
            )
        )
    versions = spec.get("versions") or []
    if not versions:
        causes.append(
            cause(
                "spec.versions",
                "FieldValueInvalid",
                "Invalid value: null: must have at least one version",
            )
        )
    if len([v for v in versions if v.get("storage")]) != 1:
        causes.append(
            cause(
                "spec.versions",
                "FieldValueInvalid",
                "Invalid value: must have exactly one version marked as storage version",
            )
        )
    for i, v in enumerate(versions):
        schema = (v.get("schema") or {}).get("openAPIV3Schema")
        if not schema:
            causes.append(
                cause(
                    f"spec.versions[{i}].schema.openAPIV3Schema",
                    "FieldValueRequired",
                    "Required value: schemas are required",
                )
            )
        elif schema.get("type") != "object":
            causes.append(
                cause(
                    f"spec.versions[{i}].schema.openAPIV3Schema.type",
                    "FieldValueRequired",
                    "Required value: must be object at the root",
                )
            )
    if old is not None:
        for field in ("group",):
            if spec.get(field) != old["spec"].get(field):
                causes.append(
                    cause(f"spec.{field}", "FieldValueInvalid", "Invalid value: field is immutable")
                )
        if spec.get("scope") != old["spec"].get("scope"):
            causes.append(
                cause("spec.scope", "FieldValueInvalid", "Invalid value: field is immutable")
            )
    return causes


class CrdController:
    """Keeps the served types in step with the stored CRDs (a store listener)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.crd_rt = store.registry.get(*CRD_KEY)
        store.validators.setdefault(CRD_KEY, []).append(validate)
        store.listeners.append(self.on_event)
        self._cleaning = False

    def on_event(self, event: Event) -> None:
        if event.key == CRD_KEY:
            self._crd_changed(event)
            return
        if event.type == "DELETED":
            for crd in self.store.select(self.crd_rt) if self.crd_rt else []:
                if (
                    crd["metadata"].get("deletionTimestamp")
                    and (crd["spec"]["group"], crd["spec"]["names"]["plural"]) == event.key
                ):
                    self._cleanup(crd)
                    return

    def _crd_changed(self, event: Event) -> None:
        assert self.crd_rt is not None
        crd = event.obj
        key = (crd["spec"]["group"], crd["spec"]["names"]["plural"])
        if event.type == "DELETED":
            self.store.registry.remove(key)
            self.store.hub.close_key(key)
            self.store._objects.pop(key, None)
            return
        if crd["metadata"].get("deletionTimestamp"):
            self._cleanup(crd)
            return
        self.store.registry.add(resource_type(crd))
        wanted = copy.deepcopy(crd)
        meta = wanted["metadata"]
        if CLEANUP not in (meta.get("finalizers") or []):
            meta["finalizers"] = [*(meta.get("finalizers") or []), CLEANUP]
        names = wanted["spec"]["names"]
        established = {"lastTransitionTime": meta["creationTimestamp"], "status": "True"}
        wanted["status"] = {
            "acceptedNames": {k: v for k, v in names.items()},
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                    **established,
                },
                {
                    "type": "Established",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                    **established,
                },
            ],
            "storedVersions": sorted(
                {
                    *(crd.get("status") or {}).get("storedVersions", []),
                    *[v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
                }
            ),
        }
        if wanted != crd:
            self.store.put_raw(self.crd_rt, wanted, "MODIFIED", crd)

    def _cleanup(self, crd: Obj) -> None:
        if self._cleaning:  # deleting one custom resource re-enters through its DELETED event
            return
        self._cleaning = True
        try:
            self._cleanup_once(crd)
        finally:
            self._cleaning = False

    def _cleanup_once(self, crd: Obj) -> None:
        assert self.crd_rt is not None
        rt = self.store.registry.get(crd["spec"]["group"], crd["spec"]["names"]["plural"])
        if rt is not None:
            for obj in list(self.store.select(rt)):
                meta = obj["metadata"]
                alive = self.store.peek(rt, meta.get("namespace", ""), meta["name"])
                if alive is not None and not meta.get("deletionTimestamp"):
                    deletion.delete(self.store, rt, meta.get("namespace", ""), meta["name"])
            if self.store.select(rt):
                return  # some custom resources wait for their own finalizers
        current = self.store.peek(self.crd_rt, "", crd["metadata"]["name"])
        if current is not None and CLEANUP in (current["metadata"].get("finalizers") or []):
            deletion._remove_finalizer(self.store, self.crd_rt, current, CLEANUP)
