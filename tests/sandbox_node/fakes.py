"""An in-memory NodeStore: the node components' contract, without the API server.

It behaves like the sandbox store where the node can observe it: a synthetic ADDED per existing
object on watch, MODIFIED/DELETED afterwards, status writes that bump the resourceVersion, and
a graceful pod deletion that only sets deletionTimestamp until the kubelet confirms.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

Obj = dict[str, Any]
Key = tuple[str, str]


class FakeStore:
    def __init__(self) -> None:
        self.objects: dict[tuple[Key, str, str], Obj] = {}
        self._watchers: list[tuple[Key, str | None, asyncio.Queue[tuple[str, Obj]]]] = []
        self._rv = itertools.count(1)
        self.changed = asyncio.Event()

    # -- the NodeStore protocol -------------------------------------------------------------

    async def get(self, key: Key, namespace: str, name: str) -> Obj | None:
        obj = self.objects.get((key, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def list(self, key: Key, namespace: str | None = None) -> list[Obj]:
        return [copy.deepcopy(o) for (k, ns, _), o in self.objects.items()
                if k == key and namespace in (None, ns)]

    async def watch(self, key: Key, namespace: str | None = None) -> AsyncIterator[tuple[str, Obj]]:
        queue: asyncio.Queue[tuple[str, Obj]] = asyncio.Queue()
        entry = (key, namespace, queue)
        for obj in await self.list(key, namespace):
            queue.put_nowait(("ADDED", obj))
        self._watchers.append(entry)
        try:
            while True:
                yield await queue.get()
        finally:
            self._watchers.remove(entry)

    async def update_status(self, key: Key, namespace: str, name: str, status: Obj) -> Obj | None:
        obj = self.objects.get((key, namespace, name))
        if obj is None:
            return None
        obj["status"] = copy.deepcopy(status)
        self._publish("MODIFIED", key, obj)
        return copy.deepcopy(obj)

    async def delete(self, key: Key, namespace: str, name: str) -> None:
        obj = self.objects.pop((key, namespace, name), None)
        if obj is not None:
            self._publish("DELETED", key, obj)

    async def create(self, key: Key, namespace: str, obj: Obj) -> Obj | None:
        name = obj["metadata"]["name"]
        if (key, namespace, name) in self.objects:
            return None
        obj = copy.deepcopy(obj)
        obj["metadata"]["namespace"] = namespace
        return copy.deepcopy(self.put(key, obj))

    async def replace(self, key: Key, namespace: str, name: str, obj: Obj) -> Obj | None:
        current = self.objects.get((key, namespace, name))
        if current is None:
            return None
        obj = copy.deepcopy(obj)
        obj["metadata"]["uid"] = current["metadata"]["uid"]
        if "status" in current and "status" not in obj:
            obj["status"] = current["status"]
        return copy.deepcopy(self.put(key, obj))

    async def bind(self, namespace: str, name: str, node: str) -> None:
        obj = self.objects.get((("", "pods"), namespace, name))
        if obj is not None and not obj.get("spec", {}).get("nodeName"):
            obj.setdefault("spec", {})["nodeName"] = node
            self._publish("MODIFIED", ("", "pods"), obj)

    # -- what a test (standing in for API clients) does ------------------------------------

    def put(self, key: Key, obj: Obj) -> Obj:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        meta.setdefault("uid", str(uuid.uuid4()))
        stored_key = (key, meta["namespace"], meta["name"])
        kind = "MODIFIED" if stored_key in self.objects else "ADDED"
        self.objects[stored_key] = obj
        self._publish(kind, key, obj)
        return obj

    def request_delete(self, key: Key, namespace: str, name: str, grace: int) -> None:
        """A graceful API delete: mark it, and let the kubelet finish the job."""
        obj = self.objects[(key, namespace, name)]
        obj["metadata"]["deletionTimestamp"] = datetime.datetime.now(datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        obj["metadata"]["deletionGracePeriodSeconds"] = grace
        self._publish("MODIFIED", key, obj)

    def current(self, key: Key, namespace: str, name: str) -> Obj | None:
        return self.objects.get((key, namespace, name))

    def _publish(self, kind: str, key: Key, obj: Obj) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        for watched, namespace, queue in self._watchers:
            if watched == key and namespace in (None, obj["metadata"]["namespace"]):
                queue.put_nowait((kind, copy.deepcopy(obj)))
        self.changed.set()
        self.changed = asyncio.Event()

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        """Until ``predicate()`` is true after some write; fails the test on timeout."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await self.changed.wait()
