""":class:`NodeStore` on the sandbox's own storage (``modes.sandbox.storage.Store``).

The store is synchronous and in-process; the node calls it directly, never over HTTP, so a pod
status write costs a dict update and a watch event rather than a request. Objects handed out
are copies: the node may keep and change them without touching what the API serves.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

from modes.sandbox import deletion
from modes.sandbox.errors import ApiError
from modes.sandbox.node.store import PODS, Key
from modes.sandbox.resources import ResourceType
from modes.sandbox.selectors import Selector
from modes.sandbox.storage import Store

Obj = dict[str, Any]
CONFLICT_RETRIES = 5


class SandboxStore:
    """The NodeStore Protocol over a sandbox ``Store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _rt(self, key: Key) -> ResourceType:
        rt = self.store.registry.get(*key)
        if rt is None:
            raise LookupError(f"the sandbox serves no {key[1]}.{key[0]}")
        return rt

    async def get(self, key: Key, namespace: str, name: str) -> Obj | None:
        obj = self.store.peek(self._rt(key), namespace, name)
        return copy.deepcopy(obj) if obj is not None else None

    async def list(self, key: Key, namespace: str | None = None) -> list[Obj]:
        return self.store.list(self._rt(key), namespace)

    async def watch(self, key: Key, namespace: str | None = None) -> AsyncIterator[tuple[str, Obj]]:
        watcher = self.store.watch(self._rt(key), namespace, Selector(), None)
        try:
            while (item := await watcher.next(None)) is not None:
                _, kind, obj = item
                yield kind, copy.deepcopy(obj)
        finally:
            watcher.close()

    async def update_status(self, key: Key, namespace: str, name: str, status: Obj) -> Obj | None:
        rt = self._rt(key)
        for _ in range(CONFLICT_RETRIES):
            current = self.store.peek(rt, namespace, name)
            if current is None:
                return None
            body = copy.deepcopy(current)
            body["status"] = copy.deepcopy(status)
            try:
                return self.store.update(rt, body, namespace, name, subresource="status")
            except ApiError as exc:
                if exc.code == 404:
                    return None
                if exc.code != 409:
                    raise
        return None

    async def create(self, key: Key, namespace: str, obj: Obj) -> Obj | None:
        try:
            return self.store.create(self._rt(key), copy.deepcopy(obj), namespace)
        except ApiError as exc:
            if exc.reason == "AlreadyExists":
                return None
            raise

    async def replace(self, key: Key, namespace: str, name: str, obj: Obj) -> Obj | None:
        body = copy.deepcopy(obj)
        body.setdefault("metadata", {}).pop("resourceVersion", None)  # unconditional
        try:
            return self.store.update(self._rt(key), body, namespace, name)
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    async def delete(self, key: Key, namespace: str, name: str) -> None:
        try:
            deletion.delete(self.store, self._rt(key), namespace, name, {"gracePeriodSeconds": 0})
        except ApiError as exc:
            if exc.code != 404:
                raise

    async def bind(self, namespace: str, name: str, node: str) -> None:
        rt = self._rt(PODS)
        current = self.store.peek(rt, namespace, name)
        if current is None or (current.get("spec") or {}).get("nodeName"):
            return
        bound = copy.deepcopy(current)
        bound.setdefault("spec", {})["nodeName"] = node
        # As the binding subresource does: only spec.nodeName changes, without re-validating
        # a pod spec that is otherwise immutable.
        self.store.put_raw(rt, bound, "MODIFIED", current)
