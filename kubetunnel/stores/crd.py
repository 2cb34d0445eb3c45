"""The ``crd`` store (the default): each record is a ``Kubetunnel`` custom resource
(``application.dcode.tech/v1``, manifests/crd.yaml).

The API server already keeps every promise of the store protocol for a custom resource with a
status subresource (resource versions, generation on spec changes only, spec and status written
through separate endpoints, finalizers), so this store is a thin mapping.
"""

from __future__ import annotations

import builtins
from typing import Any

from kubetunnel.errors import KubetunnelError
from kubetunnel.kube import ApiError, resource_path
from kubetunnel.records import TunnelRecord, TunnelStatus, record_from_spec
from kubetunnel.stores.kubernetes import KubeRecordStore, metadata_fields, translated

GROUP = "application.dcode.tech"
VERSION = "v1"
PLURAL = "kubetunnels"


class CrdStore(KubeRecordStore):
    """Store plugin ``crd``: needs the CRD of manifests/ installed."""

    api_version = f"{GROUP}/{VERSION}"
    kind = "Kubetunnel"

    def _path(self, namespace: str | None, name: str | None = None) -> str:
        return resource_path(self.api_version, PLURAL, namespace, name)

    def _to_record(self, obj: dict[str, Any]) -> TunnelRecord | None:
        meta = obj.get("metadata") or {}
        return record_from_spec(
            meta.get("namespace", ""),
            meta["name"],
            obj.get("spec") or {},
            generation=int(meta.get("generation") or 0),
            status=TunnelStatus.from_dict(obj.get("status")),
            **metadata_fields(obj),
        )

    def _to_object(self, record: TunnelRecord) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": record.name, "namespace": record.namespace}
        if record.resource_version:
            metadata["resourceVersion"] = record.resource_version
        if record.finalizers:
            metadata["finalizers"] = list(record.finalizers)
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": metadata,
            "spec": record.spec_dict(),
        }

    async def create(self, record: TunnelRecord) -> TunnelRecord:
        obj = self._to_object(record.replace(resource_version=""))
        created = await translated(
            self._client.create(self._path(record.namespace), obj),
            self._what(record.namespace, record.name),
        )
        return self._converted(created)

    async def replace(self, record: TunnelRecord) -> TunnelRecord:
        # Without finalizers in the body the API server would keep none: the record's tuple is
        # the whole truth, as in the memory store.
        obj = self._to_object(record)
        obj["metadata"]["finalizers"] = list(record.finalizers)
        replaced = await translated(
            self._client.replace(self._path(record.namespace, record.name), obj),
            self._what(record.namespace, record.name),
        )
        return self._converted(replaced)

    async def replace_status(self, record: TunnelRecord) -> TunnelRecord:
        obj = self._to_object(record)
        obj["status"] = record.status.to_dict()
        replaced = await translated(
            self._client.replace(self._path(record.namespace, record.name) + "/status", obj),
            self._what(record.namespace, record.name),
        )
        return self._converted(replaced)

    async def list(self, namespace: str | None = None) -> builtins.list[TunnelRecord]:
        try:
            return await super().list(namespace)
        except ApiError as exc:
            if exc.status != 404:
                raise
            # The collection itself is missing: say what to do, not "404 page not found".
            raise KubetunnelError(
                f"the cluster does not serve {PLURAL}.{GROUP}: the Kubetunnel CRD is not "
                "installed (run `kubetunnel cli install`, or use the configmap store)"
            ) from exc

    def _converted(self, obj: dict[str, Any]) -> TunnelRecord:
        record = self._to_record(obj)
        assert record is not None  # a Kubetunnel always maps to a record
        return record
