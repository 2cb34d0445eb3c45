"""The node's store over HTTP: what the process kubelet and kube-proxy need from a real
kube-apiserver, in the shape of ``modes.sandbox.node.store.NodeStore``.

The builtin sandbox hands the node its in-process storage; a real API server is reached the way
a kubelet reaches it: HTTPS with the node's client certificate, list-then-watch with a
resourceVersion, relist on 410 Gone, status written to the /status subresource, and pods
watched only where ``spec.nodeName`` is this node (the scheduler binds them, not the kubelet).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from kubetunnel.logging import get_logger
from modes.sandbox.node.store import PODS, Key

Obj = dict[str, Any]
log = get_logger(__name__)

# (group, plural) -> (apiVersion, kind); the resources the node reads.
RESOURCES: dict[Key, tuple[str, str]] = {
    ("", "pods"): ("v1", "Pod"),
    ("", "services"): ("v1", "Service"),
    ("", "endpoints"): ("v1", "Endpoints"),
    ("", "secrets"): ("v1", "Secret"),
    ("", "configmaps"): ("v1", "ConfigMap"),
    ("", "serviceaccounts"): ("v1", "ServiceAccount"),
    ("", "namespaces"): ("v1", "Namespace"),
    ("", "nodes"): ("v1", "Node"),
    ("discovery.k8s.io", "endpointslices"): ("discovery.k8s.io/v1", "EndpointSlice"),
    ("coordination.k8s.io", "leases"): ("coordination.k8s.io/v1", "Lease"),
}
RETRY_SECONDS = 0.5
WATCH_SECONDS = 290


class ApiStatusError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def path_of(key: Key, namespace: str | None, name: str | None = None,
            subresource: str | None = None) -> str:
    api_version, _ = RESOURCES[key]
    base = "/api/v1" if key[0] == "" else f"/apis/{api_version}"
    parts = [base]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(key[1])
    if name:
        parts.append(name)
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


class HttpStore:
    """NodeStore over a real API server. ``close()`` at exit."""

    def __init__(self, server: str, ssl_context: ssl.SSLContext, node_name: str) -> None:
        self.server = server.rstrip("/")
        self.node_name = node_name
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context, limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )

    async def close(self) -> None:
        await self._session.close()

    async def request(self, method: str, path: str, *, body: Obj | None = None,
                      params: dict[str, str] | None = None,
                      content_type: str = "application/json") -> Obj | None:
        """The decoded answer; None on 404; ApiStatusError for any other failure."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        async with self._session.request(method, self.server + path, data=data,
                                         params=params, headers=headers) as response:
            text = await response.text()
            if response.status == 404:
                return None
            if response.status >= 400:
                try:
                    message = json.loads(text).get("message", text)
                except ValueError:
                    message = text
                raise ApiStatusError(response.status, str(message))
            result: Obj = json.loads(text) if text else {}
            return result

    def _typed(self, key: Key, obj: Obj) -> Obj:
        api_version, kind = RESOURCES[key]
        obj.setdefault("apiVersion", api_version)
        obj.setdefault("kind", kind)
        return obj

    async def get(self, key: Key, namespace: str, name: str) -> Obj | None:
        found = await self.request("GET", path_of(key, namespace, name))
        return self._typed(key, found) if found is not None else None

    def _selectors(self, key: Key) -> dict[str, str]:
        return {"fieldSelector": f"spec.nodeName={self.node_name}"} if key == PODS else {}

    async def _list(self, key: Key, namespace: str | None) -> tuple[list[Obj], str]:
        listed = await self.request("GET", path_of(key, namespace), params=self._selectors(key))
        if listed is None:
            return [], ""
        items = [self._typed(key, item) for item in listed.get("items") or []]
        return items, str(listed.get("metadata", {}).get("resourceVersion", ""))

    async def list(self, key: Key, namespace: str | None = None) -> list[Obj]:
        items, _ = await self._list(key, namespace)
        return items

    async def watch(self, key: Key, namespace: str | None = None
                    ) -> AsyncIterator[tuple[str, Obj]]:
        """List, then follow; after a 410 or a broken watch, relist and send the difference."""
        known: dict[str, Obj] = {}
        while True:
            try:
                items, version = await self._list(key, namespace)
            except (aiohttp.ClientError, ApiStatusError, OSError) as exc:
                log.info("node.list_failed", resource=key[1], error=str(exc))
                await asyncio.sleep(RETRY_SECONDS)
                continue
            current = {_uid(item): item for item in items}
            for uid, item in known.items():
                if uid not in current:
                    yield "DELETED", item
            for uid, item in current.items():
                yield ("MODIFIED" if uid in known else "ADDED"), item
            known = current
            async for kind, obj in self._follow(key, namespace, version):
                if kind == "DELETED":
                    known.pop(_uid(obj), None)
                else:
                    known[_uid(obj)] = obj
                yield kind, obj

    async def _follow(self, key: Key, namespace: str | None, version: str
                      ) -> AsyncIterator[tuple[str, Obj]]:
        params = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(WATCH_SECONDS), **self._selectors(key)}
        while True:
            try:
                async with self._session.get(self.server + path_of(key, namespace),
                                             params=params) as response:
                    if response.status != 200:
                        return  # relist
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            return  # 410 Gone and friends: relist
                        version = str(obj.get("metadata", {}).get("resourceVersion", version))
                        params["resourceVersion"] = version
                        if kind in ("ADDED", "MODIFIED", "DELETED"):
                            yield kind, self._typed(key, obj)
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                log.info("node.watch_broken", resource=key[1], error=str(exc))
                await asyncio.sleep(RETRY_SECONDS)
                return

    async def update_status(self, key: Key, namespace: str, name: str, status: Obj
                            ) -> Obj | None:
        return await self.request(
            "PATCH", path_of(key, namespace, name, "status"), body={"status": status},
            content_type="application/merge-patch+json")

    async def delete(self, key: Key, namespace: str, name: str) -> None:
        with contextlib.suppress(ApiStatusError):
            await self.request("DELETE", path_of(key, namespace, name),
                               body={"kind": "DeleteOptions", "apiVersion": "v1",
                                     "gracePeriodSeconds": 0})

    async def bind(self, namespace: str, name: str, node: str) -> None:
        await self.request("POST", path_of(PODS, namespace, name, "binding"), body={
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        })


def _uid(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
