"""The ``memory`` store: records in a dict with change notifications, for one process.

It keeps the store protocol's Kubernetes semantics exactly (resource versions, conflicts,
generation, finalizers), so code tested against it meets no surprise on the ``crd`` store.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator

from kubetunnel.errors import AlreadyExists, Conflict, NotFound
from kubetunnel.plugins import StoreEvent, StoreEventType, StoreSettings
from kubetunnel.records import TunnelRecord, TunnelStatus, now

_WATCH_QUEUE = 1024


class MemoryStore:
    """Store plugin ``memory``. Watchers that fall more than 1,024 events behind are ended."""

    def __init__(self, settings: StoreSettings | None = None) -> None:
        self._records: dict[tuple[str, str], TunnelRecord] = {}
        self._versions = itertools.count(1)
        self._watchers: set[asyncio.Queue[StoreEvent | None]] = set()

    def _stamp(self, record: TunnelRecord) -> TunnelRecord:
        return record.replace(resource_version=str(next(self._versions)))

    def _publish(self, kind: StoreEventType, record: TunnelRecord) -> None:
        for queue in list(self._watchers):
            try:
                queue.put_nowait(StoreEvent(kind, record))
            except asyncio.QueueFull:
                # A watcher this far behind must re-list; ending its watch tells it so.
                self._watchers.discard(queue)
                queue.get_nowait()
                queue.put_nowait(None)

    def _current(self, record: TunnelRecord) -> TunnelRecord:
        key = (record.namespace, record.name)
        current = self._records.get(key)
        if current is None:
            raise NotFound(f"tunnel {record.namespace}/{record.name} not found")
        if record.resource_version and record.resource_version != current.resource_version:
            raise Conflict(
                f"tunnel {record.namespace}/{record.name} was changed by someone else; "
                "read it again and retry"
            )
        return current

    async def create(self, record: TunnelRecord) -> TunnelRecord:
        key = (record.namespace, record.name)
        if key in self._records:
            raise AlreadyExists(f"tunnel {record.namespace}/{record.name} already exists")
        stored = self._stamp(
            record.replace(
                uid=str(uuid.uuid4()),
                generation=1,
                created_at=now(),
                deleting=False,
                status=TunnelStatus(),
            )
        )
        self._records[key] = stored
        self._publish("ADDED", stored)
        return stored

    async def get(self, namespace: str, name: str) -> TunnelRecord | None:
        return self._records.get((namespace, name))

    async def list(self, namespace: str | None = None) -> list[TunnelRecord]:
        return [
            r for (ns, _), r in sorted(self._records.items()) if namespace in (None, ns)
        ]

    async def replace(self, record: TunnelRecord) -> TunnelRecord:
        current = self._current(record)
        spec_changed = record.spec_dict() != current.spec_dict()
        updated = record.replace(
            uid=current.uid,
            created_at=current.created_at,
            deleting=current.deleting,
            status=current.status,
            generation=current.generation + (1 if spec_changed else 0),
        )
        if current.deleting and not updated.finalizers:
            return self._remove(updated)
        return self._store(updated)

    async def replace_status(self, record: TunnelRecord) -> TunnelRecord:
        current = self._current(record)
        return self._store(current.replace(status=record.status))

    def _store(self, record: TunnelRecord) -> TunnelRecord:
        stored = self._stamp(record)
        self._records[(record.namespace, record.name)] = stored
        self._publish("MODIFIED", stored)
        return stored

    def _remove(self, record: TunnelRecord) -> TunnelRecord:
        stored = self._stamp(record.replace(deleting=True))
        del self._records[(record.namespace, record.name)]
        self._publish("DELETED", stored)
        return stored

    async def delete(self, namespace: str, name: str) -> None:
        current = self._records.get((namespace, name))
        if current is None:
            raise NotFound(f"tunnel {namespace}/{name} not found")
        if current.finalizers:
            if not current.deleting:
                self._store(current.replace(deleting=True))
            return
        self._remove(current)

    async def watch(self, namespace: str | None = None) -> AsyncIterator[StoreEvent]:
        existing = await self.list(namespace)
        queue: asyncio.Queue[StoreEvent | None] = asyncio.Queue(_WATCH_QUEUE + len(existing))
        for record in existing:
            queue.put_nowait(StoreEvent("ADDED", record))
        self._watchers.add(queue)
        try:
            while (event := await queue.get()) is not None:
                if namespace in (None, event.record.namespace):
                    yield event
        finally:
            self._watchers.discard(queue)

    async def aclose(self) -> None:
        for queue in list(self._watchers):
            self._watchers.discard(queue)
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)
