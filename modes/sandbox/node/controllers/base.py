"""The loop every controller shares: watch into caches, mark keys dirty, reconcile them.

Reconciling reads only the caches and is idempotent, so a burst of events costs one pass per
key, and a failure in one key is logged without stopping the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

from kubetunnel.logging import get_logger
from modes.sandbox.node.store import ControllerStore, Key

Obj = dict[str, Any]
Name = tuple[str, str]  # (namespace, name)
log = get_logger(__name__)


def owned_by(obj: Obj, owner: Obj) -> bool:
    """Whether ``owner`` is ``obj``'s controller (ownerReference with controller: true)."""
    uid = owner["metadata"].get("uid")
    return any(ref.get("uid") == uid and ref.get("controller")
               for ref in obj["metadata"].get("ownerReferences") or [])


def controller_ref(owner: Obj, api_version: str, kind: str) -> Obj:
    return {"apiVersion": api_version, "kind": kind, "name": owner["metadata"]["name"],
            "uid": owner["metadata"].get("uid"), "controller": True, "blockOwnerDeletion": True}


def owner_uids(obj: Obj) -> list[str]:
    return [str(ref.get("uid")) for ref in obj["metadata"].get("ownerReferences") or []
            if ref.get("controller")]


class Reconciler:
    """Subclasses say what they watch, which keys an event dirties, and how to reconcile."""

    watched: tuple[Key, ...] = ()
    name = "controller"

    def __init__(self, store: ControllerStore) -> None:
        self.store = store
        self.cache: dict[Key, dict[Name, Obj]] = {key: {} for key in self.watched}
        self._dirty: set[Name] = set()
        self._wake = asyncio.Event()

    def affected(self, key: Key, obj: Obj) -> Iterable[Name]:
        raise NotImplementedError

    async def reconcile(self, name: Name) -> None:
        raise NotImplementedError

    def in_namespace(self, key: Key, namespace: str) -> list[Obj]:
        return [o for (ns, _), o in self.cache[key].items() if ns == namespace]

    def owners_affected(self, owner_key: Key, key: Key, obj: Obj) -> list[Name]:
        """The owner itself when ``obj`` is one, else the owners of that kind that ``obj``'s
        ownerReferences name: what a change to an owner or to something it owns affects."""
        ns = obj["metadata"].get("namespace", "")
        if key == owner_key:
            return [(ns, obj["metadata"]["name"])]
        owners = owner_uids(obj)
        return [(ns, o["metadata"]["name"]) for o in self.in_namespace(owner_key, ns)
                if o["metadata"].get("uid") in owners]

    def by_uid(self, key: Key, uid: str) -> Obj | None:
        return next((o for o in self.cache[key].values() if o["metadata"].get("uid") == uid),
                    None)

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._follow(key), name=f"{self.name}-watch-{key[1]}")
                 for key in self.watched]
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                dirty, self._dirty = self._dirty, set()
                for name in sorted(dirty):
                    try:
                        await self.reconcile(name)
                    except Exception:
                        log.exception("controller.reconcile_failed", controller=self.name,
                                      namespace=name[0], name=name[1])
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _follow(self, key: Key) -> None:
        async for kind, obj in self.store.watch(key):
            meta = obj["metadata"]
            name = (meta.get("namespace", ""), meta["name"])
            old = self.cache[key].get(name)
            if kind == "DELETED":
                self.cache[key].pop(name, None)
            else:
                self.cache[key][name] = obj
            self._dirty.update(self.affected(key, obj))
            if old is not None:
                self._dirty.update(self.affected(key, old))
            self._wake.set()
