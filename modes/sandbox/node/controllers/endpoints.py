"""Endpoints and EndpointSlices for Services with a selector.

Pods matching the selector are listed by readiness: Ready pods in ``addresses`` (slices:
``ready: true``), the rest in ``notReadyAddresses``, terminating pods nowhere (slices keep them
as ``terminating``). A named ``targetPort`` is resolved per pod against its container ports, so
pods exposing the name on different numbers land in different subsets, as in Kubernetes.
The loopback proxy reads Endpoints, so a selector change reaches new connections as soon as
this controller has written, well within the 100 ms the sandbox promises.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from kubetunnel.logging import get_logger
from modes.sandbox.node.controllers.base import Name, Reconciler
from modes.sandbox.node.store import (
    ENDPOINTS,
    ENDPOINTSLICES,
    PODS,
    SERVICES,
    ControllerStore,
    Key,
)

Obj = dict[str, Any]
log = get_logger(__name__)
MANAGED_BY = "endpointslice-controller.k8s.io"


def _ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _target_port(port: Obj, pod: Obj) -> int | None:
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for declared in container.get("ports") or []:
            if declared.get("name") == target and \
                    declared.get("protocol", "TCP") == port.get("protocol", "TCP"):
                return int(declared["containerPort"])
    return None


def _selects(selector: dict[str, str], pod: Obj) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def desired(service: Obj, pods: list[Obj]) -> list[tuple[list[Obj], list[Obj], list[Obj]]]:
    """(ports, ready addresses, not-ready addresses) per distinct resolved port set."""
    selector = (service.get("spec") or {}).get("selector") or {}
    groups: dict[str, tuple[list[Obj], list[Obj], list[Obj]]] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        meta, status = pod["metadata"], pod.get("status") or {}
        if not _selects(selector, pod) or not status.get("podIP") or meta.get("deletionTimestamp"):
            continue
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        ports = []
        for port in (service.get("spec") or {}).get("ports") or []:
            number = _target_port(port, pod)
            if number is not None:
                entry = {"port": number, "protocol": port.get("protocol", "TCP")}
                if port.get("name"):
                    entry["name"] = port["name"]
                ports.append(entry)
        if not ports:
            continue
        address = {"ip": status["podIP"], "nodeName": (pod.get("spec") or {}).get("nodeName"),
                   "targetRef": {"kind": "Pod", "namespace": meta["namespace"],
                                 "name": meta["name"], "uid": meta.get("uid")}}
        group = groups.setdefault(json.dumps(ports, sort_keys=True), (ports, [], []))
        group[1 if _ready(pod) else 2].append(address)
    return list(groups.values())


def endpoints_object(service: Obj, groups: list[tuple[list[Obj], list[Obj], list[Obj]]]) -> Obj:
    meta = service["metadata"]
    subsets = []
    for ports, ready, not_ready in groups:
        subset: Obj = {"ports": ports}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        subsets.append(subset)
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "labels": dict(meta.get("labels") or {})},
            "subsets": subsets}


def slice_objects(service: Obj, groups: list[tuple[list[Obj], list[Obj], list[Obj]]]) -> list[Obj]:
    meta = service["metadata"]
    slices = []
    for ports, ready, not_ready in groups:
        digest = hashlib.sha256(json.dumps(ports, sort_keys=True).encode()).hexdigest()[:5]
        endpoints = [{"addresses": [a["ip"]], "nodeName": a["nodeName"],
                      "targetRef": a["targetRef"],
                      "conditions": {"ready": ok, "serving": ok, "terminating": False}}
                     for ok, addresses in ((True, ready), (False, not_ready))
                     for a in addresses]
        slices.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": f"{meta['name']}-{digest}", "namespace": meta["namespace"],
                "labels": {**(meta.get("labels") or {}),
                           "kubernetes.io/service-name": meta["name"],
                           "endpointslice.kubernetes.io/managed-by": MANAGED_BY},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": meta["name"],
                                     "uid": meta.get("uid"), "controller": True,
                                     "blockOwnerDeletion": True}]},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        })
    return slices


class EndpointsController(Reconciler):
    watched = (SERVICES, PODS)
    name = "endpoints"

    def __init__(self, store: ControllerStore) -> None:
        super().__init__(store)
        self._written: dict[tuple[str, str], tuple[Obj, list[Obj]]] = {}

    def affected(self, key: Key, obj: Obj) -> Iterable[Name]:
        namespace = obj["metadata"].get("namespace", "")
        if key == SERVICES:
            return [(namespace, obj["metadata"]["name"])]
        # Any Service of the namespace may select the pod, before or after the change.
        return [s for s in self.cache[SERVICES] if s[0] == namespace]

    async def reconcile(self, name: Name) -> None:
        await self._sync(name)

    async def _sync(self, key: tuple[str, str]) -> None:
        namespace, name = key
        service = self.cache[SERVICES].get(key)
        if service is None or not (service.get("spec") or {}).get("selector"):
            # Gone, or without a selector (its Endpoints are the user's): remove only ours.
            if self._written.pop(key, None) is not None:
                await self.store.delete(ENDPOINTS, namespace, name)
            return
        pods = self.in_namespace(PODS, namespace)
        groups = desired(service, pods)
        endpoints, slices = endpoints_object(service, groups), slice_objects(service, groups)
        if self._written.get(key) == (endpoints, slices):
            return
        previous = self._written.get(key, ({}, []))[1]
        if await self.store.replace(ENDPOINTS, namespace, name, endpoints) is None:
            await self.store.create(ENDPOINTS, namespace, endpoints)
        for piece in slices:
            slice_name = piece["metadata"]["name"]
            if await self.store.replace(ENDPOINTSLICES, namespace, slice_name, piece) is None:
                await self.store.create(ENDPOINTSLICES, namespace, piece)
        kept = {s["metadata"]["name"] for s in slices}
        for old in previous:
            if old["metadata"]["name"] not in kept:
                await self.store.delete(ENDPOINTSLICES, namespace, old["metadata"]["name"])
        self._written[key] = (endpoints, slices)
        log.debug("endpoints.synced", namespace=namespace, service=name,
                  ready=sum(len(g[1]) for g in groups))
