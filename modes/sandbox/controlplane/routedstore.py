"""One NodeStore over two identities, as a node has them: the kubelet's and kube-proxy's.

The Node authorizer lets a kubelet read Services but not list Endpoints; kube-proxy reads those
as ``system:kube-proxy`` (bound to ``system:node-proxier`` by kube-apiserver's default RBAC).
The node agent watches all three through one store, so requests are routed by resource.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from modes.sandbox.controlplane.httpstore import HttpStore
from modes.sandbox.node.store import ENDPOINTS, ENDPOINTSLICES, Key

Obj = dict[str, Any]
PROXY_KEYS = {ENDPOINTS, ENDPOINTSLICES}


class RoutedStore:
    def __init__(self, kubelet: HttpStore, proxy: HttpStore) -> None:
        self.kubelet = kubelet
        self.proxy = proxy

    def _for(self, key: Key) -> HttpStore:
        return self.proxy if key in PROXY_KEYS else self.kubelet

    async def get(self, key: Key, namespace: str, name: str) -> Obj | None:
        return await self._for(key).get(key, namespace, name)

    async def list(self, key: Key, namespace: str | None = None) -> list[Obj]:
        return await self._for(key).list(key, namespace)

    def watch(self, key: Key, namespace: str | None = None) -> AsyncIterator[tuple[str, Obj]]:
        return self._for(key).watch(key, namespace)

    async def update_status(self, key: Key, namespace: str, name: str, status: Obj
                            ) -> Obj | None:
        return await self.kubelet.update_status(key, namespace, name, status)

    async def delete(self, key: Key, namespace: str, name: str) -> None:
        await self.kubelet.delete(key, namespace, name)

    async def bind(self, namespace: str, name: str, node: str) -> None:
        await self.kubelet.bind(namespace, name, node)
