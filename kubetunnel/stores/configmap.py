"""The ``configmap`` store: each record is a labelled ConfigMap, for clusters where installing a
CRD is not allowed.

A ConfigMap has no spec/status split and no generation, so this store provides them itself:
``data.spec`` and ``data.status`` hold the same JSON shapes as the custom resource, the
generation lives in an annotation that grows only when ``data.spec`` changes, and ``replace`` /
``replace_status`` each rewrite only their half of the object, with the ConfigMap's
resourceVersion as the precondition so a concurrent writer gets Conflict, not a lost update.
Finalizers and deletion are the ConfigMap's own, so deletion behaves exactly as for the CRD.
"""

from __future__ import annotations

import json
from typing import Any

from kubetunnel.errors import Conflict
from kubetunnel.kube import resource_path
from kubetunnel.logging import get_logger
from kubetunnel.records import TunnelRecord, TunnelStatus, record_from_spec
from kubetunnel.stores.kubernetes import KubeRecordStore, metadata_fields, translated

log = get_logger(__name__)

RECORD_LABEL = "kubetunnel.dev/record"
GENERATION_ANNOTATION = "kubetunnel.dev/generation"
# A prefix with a dot cannot clash with a Deployment-style name a person would give a ConfigMap.
NAME_PREFIX = "kubetunnel."


class ConfigMapStore(KubeRecordStore):
    """Store plugin ``configmap``: records as ConfigMaps named ``kubetunnel.<record>``."""

    api_version = "v1"
    kind = "ConfigMap"
    label_selector = RECORD_LABEL

    def _path(self, namespace: str | None, name: str | None = None) -> str:
        return resource_path("v1", "configmaps", namespace, name)

    def _object_name(self, name: str) -> str:
        return NAME_PREFIX + name

    def _to_record(self, obj: dict[str, Any]) -> TunnelRecord | None:
        meta = obj.get("metadata") or {}
        name = (meta.get("labels") or {}).get(RECORD_LABEL)
        data = obj.get("data") or {}
        try:
            spec = json.loads(data["spec"])
            status = json.loads(data.get("status") or "{}")
            generation = int((meta.get("annotations") or {}).get(GENERATION_ANNOTATION, "1"))
            return record_from_spec(
                meta.get("namespace", ""),
                str(name),
                spec,
                generation=generation,
                status=TunnelStatus.from_dict(status),
                **metadata_fields(obj),
            )
        except (KeyError, ValueError, TypeError) as exc:
            # Someone edited the ConfigMap by hand; one bad record must not stop the others.
            log.warning("store.configmap_unreadable", namespace=meta.get("namespace"),
                        configmap=meta.get("name"), error=str(exc))
            return None

    def owner_reference(self, record: TunnelRecord) -> dict[str, Any]:
        # blockOwnerDeletion on a ConfigMap owner would need `update configmaps/finalizers`
        # (OwnerReferencesPermissionEnforcement), a grant the operator does not otherwise need;
        # the record's own finalizer already makes the operator clean up before it goes.
        reference = super().owner_reference(record)
        del reference["blockOwnerDeletion"]
        return reference

    def _converted(self, obj: dict[str, Any]) -> TunnelRecord:
        record = self._to_record(obj)
        if record is None:
            raise Conflict(f"ConfigMap {obj['metadata'].get('name')} is not a readable record")
        return record

    async def create(self, record: TunnelRecord) -> TunnelRecord:
        obj = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self._object_name(record.name),
                "namespace": record.namespace,
                "labels": {RECORD_LABEL: record.name,
                           "app.kubernetes.io/managed-by": "kubetunnel"},
                "annotations": {GENERATION_ANNOTATION: "1"},
                "finalizers": list(record.finalizers),
            },
            "data": {
                "spec": json.dumps(record.spec_dict(), sort_keys=True),
                "status": json.dumps(TunnelStatus().to_dict(), sort_keys=True),
            },
        }
        created = await translated(
            self._client.create(self._path(record.namespace), obj),
            self._what(record.namespace, record.name),
        )
        return self._converted(created)

    async def _current(self, record: TunnelRecord) -> dict[str, Any]:
        current = await self._get_object(record.namespace, record.name)
        meta = current["metadata"]
        if record.resource_version and record.resource_version != meta.get("resourceVersion"):
            raise Conflict(
                f"{self._what(record.namespace, record.name)} was changed by someone else; "
                "read it again and retry"
            )
        return current

    async def _write(self, record: TunnelRecord, obj: dict[str, Any]) -> TunnelRecord:
        written = await translated(
            self._client.replace(self._path(record.namespace, obj["metadata"]["name"]), obj),
            self._what(record.namespace, record.name),
        )
        return self._converted(written)

    async def replace(self, record: TunnelRecord) -> TunnelRecord:
        current = await self._current(record)
        meta = current["metadata"]
        data = current.setdefault("data", {})
        spec = json.dumps(record.spec_dict(), sort_keys=True)
        annotations = meta.setdefault("annotations", {})
        if data.get("spec") != spec:
            generation = int(annotations.get(GENERATION_ANNOTATION, "1")) + 1
            annotations[GENERATION_ANNOTATION] = str(generation)
            data["spec"] = spec
        meta["finalizers"] = list(record.finalizers)
        return await self._write(record, current)

    async def replace_status(self, record: TunnelRecord) -> TunnelRecord:
        current = await self._current(record)
        current.setdefault("data", {})["status"] = json.dumps(
            record.status.to_dict(), sort_keys=True
        )
        return await self._write(record, current)
