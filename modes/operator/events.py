"""Kubernetes Events on the records, so ``kubectl describe kt orders`` tells the story:
Connected, Disconnected, SelectorSwitched, SelectorRestored, Failed.

An Event is a courtesy, never a reason to fail a reconcile: errors are logged and dropped.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from kubetunnel.errors import KubetunnelError
from kubetunnel.kube import KubeClient, resource_path
from kubetunnel.logging import get_logger
from kubetunnel.records import TunnelRecord, format_micro_time, format_time, now

log = get_logger(__name__)

COMPONENT = "kubetunnel-operator"


class Referencing(Protocol):
    """Stores whose records are Kubernetes objects (crd, configmap) can be named by an Event
    and own other objects; the memory store cannot, and then both are skipped."""

    def object_reference(self, record: TunnelRecord) -> dict[str, Any]: ...

    def owner_reference(self, record: TunnelRecord) -> dict[str, Any]: ...


class Recorder:
    def __init__(self, client: KubeClient, store: object, instance: str) -> None:
        self._client = client
        self._store = store if hasattr(store, "object_reference") else None
        self._instance = instance

    async def emit(
        self,
        record: TunnelRecord,
        reason: str,
        message: str,
        kind: Literal["Normal", "Warning"] = "Normal",
    ) -> None:
        log.info("tunnel.event", namespace=record.namespace, tunnel=record.name,
                 reason=reason, message=message)
        if self._store is None:
            return
        store: Referencing = self._store  # type: ignore[assignment]
        stamp = now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{record.name}.", "namespace": record.namespace},
            "involvedObject": store.object_reference(record),
            "reason": reason,
            "message": message[:1024],
            "type": kind,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": format_time(stamp),
            "lastTimestamp": format_time(stamp),
            "eventTime": format_micro_time(stamp),
            "action": reason,
            "count": 1,
        }
        try:
            await self._client.create(resource_path("v1", "events", record.namespace), event)
        except KubetunnelError as exc:
            log.warning("tunnel.event_failed", namespace=record.namespace, tunnel=record.name,
                        reason=reason, error=str(exc))
