"""A ``default`` ServiceAccount in every namespace, re-created if deleted, as Kubernetes does.

Pods name ``default`` implicitly, and a pod's kubeconfig is minted for its account, so the
account has to exist before anyone asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib

from kubetunnel.logging import get_logger
from modes.sandbox.node.store import NAMESPACES, SERVICEACCOUNTS, ControllerStore

log = get_logger(__name__)


class ServiceAccountController:
    def __init__(self, store: ControllerStore) -> None:
        self.store = store
        self.active: set[str] = set()

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._namespaces(), name="sa-watch-namespaces"),
                 asyncio.create_task(self._accounts(), name="sa-watch-serviceaccounts")]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _ensure(self, namespace: str) -> None:
        created = await self.store.create(SERVICEACCOUNTS, namespace, {
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": namespace}})
        if created is not None:
            log.debug("serviceaccount.created", namespace=namespace, name="default")

    async def _namespaces(self) -> None:
        async for kind, ns in self.store.watch(NAMESPACES):
            name = ns["metadata"]["name"]
            if kind == "DELETED" or ns["metadata"].get("deletionTimestamp"):
                self.active.discard(name)
                continue
            if name not in self.active:
                self.active.add(name)
                await self._ensure(name)

    async def _accounts(self) -> None:
        async for kind, sa in self.store.watch(SERVICEACCOUNTS):
            meta = sa["metadata"]
            if kind == "DELETED" and meta["name"] == "default" and meta["namespace"] in self.active:
                await self._ensure(meta["namespace"])
