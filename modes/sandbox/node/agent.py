"""The node inside the sandbox process: follows Pods, Services and EndpointSlices through the
store and drives the kubelet and kube-proxy (a child process: :mod:`.proxyprocess`; it reads
slices, not Endpoints).

One watch loop per resource type, each applying events in order. A failing event is logged and
skipped rather than stopping the loop: one odd object must not stall every other pod.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from kubetunnel.logging import get_logger
from modes.sandbox.node.kubelet import Kubelet, KubeletConfig
from modes.sandbox.node.logbuffer import ContainerLog
from modes.sandbox.node.proxy import Backend
from modes.sandbox.node.proxyprocess import ProxyProcess
from modes.sandbox.node.store import ENDPOINTSLICES, PODS, SERVICES, Key, NodeStore

Obj = dict[str, Any]
log = get_logger(__name__)


def service_ports(service: Obj) -> tuple[str | None, dict[str, int]]:
    """ClusterIP and TCP ports (name -> port) the proxy serves for a Service."""
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return None, {}
    ports = {
        str(p.get("name") or ""): int(p["port"])
        for p in spec.get("ports") or []
        if p.get("protocol", "TCP") == "TCP"
    }
    return spec.get("clusterIP"), ports


SERVICE_NAME = "kubernetes.io/service-name"


def slice_backends(slices: list[Obj]) -> dict[str, list[Backend]]:
    """Backends per port name over all of a Service's slices, as kube-proxy picks them: the
    ready endpoints; while a port has none, the serving terminating ones (KEP-1669), so a pod
    draining after SIGTERM still gets the connections nobody else can take."""
    ready: dict[str, list[Backend]] = {}
    leaving: dict[str, list[Backend]] = {}
    for piece in slices:
        if piece.get("addressType", "IPv4") != "IPv4":
            continue
        for port in piece.get("ports") or []:
            if port.get("protocol", "TCP") != "TCP" or port.get("port") is None:
                continue
            name = str(port.get("name") or "")
            for endpoint in piece.get("endpoints") or []:
                conditions = endpoint.get("conditions") or {}
                # Unset conditions count as true, as the API documents.
                if conditions.get("ready") is not False:
                    target = ready
                elif conditions.get("serving") is not False and conditions.get("terminating"):
                    target = leaving
                else:
                    continue
                target.setdefault(name, []).extend(
                    (address, int(port["port"])) for address in endpoint.get("addresses") or [])
    return {name: ready.get(name) or leaving.get(name, []) for name in {*ready, *leaving}}


class NodeAgent:
    """``start(store)`` / ``stop()``: the kubelet and kube-proxy of the sandbox's one node."""

    def __init__(self, config: KubeletConfig) -> None:
        self.config = config
        self.proxy = ProxyProcess()
        self.kubelet: Kubelet | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Open port-forward sessions (websockets, upgraded SPDY connections: anything with an
        # async close()), closed on stop, since clients may never hang up themselves.
        self.sessions: set[Any] = set()
        self._slices: dict[tuple[str, str], dict[str, Obj]] = {}  # by Service, by slice name

    async def start(self, store: NodeStore) -> None:
        await self.proxy.start()
        self.kubelet = Kubelet(store, self.config)
        loops: list[tuple[Key, Callable[[str, Obj], Awaitable[None]]]] = [
            (PODS, self.kubelet.handle),
            (SERVICES, self._service),
            (ENDPOINTSLICES, self._endpoint_slice),
        ]
        for key, handler in loops:
            self._tasks.append(
                asyncio.create_task(self._follow(store, key, handler), name=f"node-watch-{key[1]}")
            )
        log.info("node.started", node=self.config.node_name)

    async def stop(self) -> None:
        """Stop watching, terminate every pod (no process survives), close every listener."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await asyncio.gather(*(s.close() for s in list(self.sessions)), return_exceptions=True)
        if self.kubelet is not None:
            await self.kubelet.shutdown()
        await self.proxy.stop()
        log.info("node.stopped", node=self.config.node_name)

    async def _follow(
        self, store: NodeStore, key: Key, handler: Callable[[str, Obj], Awaitable[None]]
    ) -> None:
        async for kind, obj in store.watch(key):
            try:
                await handler(kind, obj)
            except Exception:
                meta = obj.get("metadata") or {}
                log.exception(
                    "node.event_failed",
                    resource=key[1],
                    type=kind,
                    namespace=meta.get("namespace"),
                    name=meta.get("name"),
                )

    async def _service(self, kind: str, service: Obj) -> None:
        meta = service["metadata"]
        if kind == "DELETED":
            await self.proxy.remove_service(meta["namespace"], meta["name"])
            return
        cluster_ip, ports = service_ports(service)
        await self.proxy.set_service(meta["namespace"], meta["name"], cluster_ip, ports)

    async def _endpoint_slice(self, kind: str, piece: Obj) -> None:
        meta = piece["metadata"]
        service = (meta.get("labels") or {}).get(SERVICE_NAME)
        if not service:
            return
        key = (meta["namespace"], service)
        slices = self._slices.setdefault(key, {})
        if kind == "DELETED":
            slices.pop(meta["name"], None)
        else:
            slices[meta["name"]] = piece
        if not slices:
            del self._slices[key]
            self.proxy.remove_endpoints(*key)
            return
        self.proxy.set_endpoints(*key, slice_backends(list(slices.values())))

    # -- what the node's HTTP handlers read -------------------------------------------------

    def pod_ip(self, namespace: str, name: str) -> str | None:
        worker = self.kubelet.find(namespace, name) if self.kubelet else None
        return worker.pod_ip if worker else None

    def log_of(self, namespace: str, name: str) -> Callable[[str, bool], ContainerLog | None]:
        worker = self.kubelet.find(namespace, name) if self.kubelet else None

        def lookup(container: str, previous: bool) -> ContainerLog | None:
            return worker.container_log(container, previous) if worker else None

        return lookup
