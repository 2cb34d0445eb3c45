"""Endpoints and EndpointSlices for Services with a selector.

Pods matching the selector are listed by readiness: Ready pods in ``addresses`` (slices:
``ready: true``), the rest in ``notReadyAddresses``. Terminating pods are left out of Endpoints
but kept in the slices as ``ready: false, terminating: true`` with ``serving`` following their
Ready condition, as the EndpointSlice controller does (kube-proxy falls back to them while a
Service has no ready endpoint). A named ``targetPort`` is resolved per pod against its container
ports, so pods exposing the name on different numbers land in different subsets.

A Service without a selector has the Endpoints its user writes; like kube-controller-manager's
mirroring controller, this one copies them into slices, because the proxy reads only slices,
as kube-proxy does. A selector change reaches new connections as soon as this controller has
written, well within the 100 ms the sandbox promises.
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
MIRRORED_BY = "endpointslicemirroring-controller.k8s.io"
Group = tuple[list[Obj], list[Obj], list[Obj], list[tuple[Obj, bool]]]
"""Ports, then ready, not-ready and terminating (address, serving) endpoints."""


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


def desired(service: Obj, pods: list[Obj]) -> list[Group]:
    """The endpoints of each distinct resolved port set."""
    selector = (service.get("spec") or {}).get("selector") or {}
    groups: dict[str, Group] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        meta, status = pod["metadata"], pod.get("status") or {}
        if not _selects(selector, pod) or not status.get("podIP"):
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
        group = groups.setdefault(json.dumps(ports, sort_keys=True), (ports, [], [], []))
        if meta.get("deletionTimestamp"):
            group[3].append((address, _ready(pod)))
        elif _ready(pod):
            group[1].append(address)
        else:
            group[2].append(address)
    return list(groups.values())


def endpoints_object(service: Obj, groups: list[Group]) -> Obj:
    meta = service["metadata"]
    subsets = []
    for ports, ready, not_ready, _ in groups:
        if not ready and not not_ready:
            continue
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


def slice_objects(service: Obj, groups: list[Group], managed_by: str = MANAGED_BY) -> list[Obj]:
    meta = service["metadata"]
    slices = []
    for ports, ready, not_ready, terminating in groups:
        digest = hashlib.sha256(json.dumps(ports, sort_keys=True).encode()).hexdigest()[:5]
        listed = [*((a, True, True, False) for a in ready),
                  *((a, False, False, False) for a in not_ready),
                  *((a, False, serving, True) for a, serving in terminating)]
        endpoints = [{"addresses": [a["ip"]],
                      **{k: a[k] for k in ("nodeName", "targetRef") if a.get(k)},
                      "conditions": {"ready": ok, "serving": serving, "terminating": leaving}}
                     for a, ok, serving, leaving in listed]
        slices.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": f"{meta['name']}-{digest}", "namespace": meta["namespace"],
                "labels": {**(meta.get("labels") or {}),
                           "kubernetes.io/service-name": meta["name"],
                           "endpointslice.kubernetes.io/managed-by": managed_by},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": meta["name"],
                                     "uid": meta.get("uid"), "controller": True,
                                     "blockOwnerDeletion": True}]},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        })
    return slices


def mirrored(endpoints: Obj) -> list[Group]:
    """A user's Endpoints as slice groups (one per subset), unless marked skip-mirror."""
    labels = (endpoints.get("metadata") or {}).get("labels") or {}
    if labels.get("endpointslice.kubernetes.io/skip-mirror") == "true":
        return []
    return [([{k: port[k] for k in ("name", "port", "protocol") if k in port}
              for port in subset.get("ports") or []],
             list(subset.get("addresses") or []), list(subset.get("notReadyAddresses") or []), [])
            for subset in endpoints.get("subsets") or [] if subset.get("ports")]


class EndpointsController(Reconciler):
    watched = (SERVICES, PODS, ENDPOINTS)
    name = "endpoints"

    def __init__(self, store: ControllerStore) -> None:
        super().__init__(store)
        # What was written per Service: our Endpoints ({} when they are the user's) and slices.
        self._written: dict[tuple[str, str], tuple[Obj, list[Obj]]] = {}

    def affected(self, key: Key, obj: Obj) -> Iterable[Name]:
        namespace = obj["metadata"].get("namespace", "")
        if key in (SERVICES, ENDPOINTS):
            return [(namespace, obj["metadata"]["name"])]
        # Any Service of the namespace may select the pod, before or after the change.
        return [s for s in self.cache[SERVICES] if s[0] == namespace]

    async def reconcile(self, name: Name) -> None:
        await self._sync(name)

    async def _sync(self, key: tuple[str, str]) -> None:
        namespace, name = key
        service = self.cache[SERVICES].get(key)
        ours, previous = self._written.get(key, ({}, []))
        if service is None:
            self._written.pop(key, None)
            await self._write(namespace, {} if not ours else None, [], previous, name)
            return
        if not (service.get("spec") or {}).get("selector"):
            # Its Endpoints are the user's: remove ours (a selector was dropped), mirror theirs.
            user = self.cache[ENDPOINTS].get(key) if not ours else None
            slices = slice_objects(service, mirrored(user) if user else [], MIRRORED_BY)
            if ours or slices != previous:
                await self._write(namespace, None if ours else {}, slices, previous, name)
                self._written[key] = ({}, slices)
            return
        groups = desired(service, self.in_namespace(PODS, namespace))
        endpoints, slices = endpoints_object(service, groups), slice_objects(service, groups)
        if (ours, previous) == (endpoints, slices):
            return
        await self._write(namespace, endpoints, slices, previous, name)
        self._written[key] = (endpoints, slices)
        log.debug("endpoints.synced", namespace=namespace, service=name,
                  ready=sum(len(g[1]) for g in groups))

    async def _write(self, namespace: str, endpoints: Obj | None, slices: list[Obj],
                     previous: list[Obj], name: str = "") -> None:
        """Endpoints: an object to write, ``None`` to delete ours, ``{}`` to leave alone."""
        if endpoints is None:
            await self.store.delete(ENDPOINTS, namespace, name)
        elif endpoints and await self.store.replace(ENDPOINTS, namespace, name, endpoints) is None:
            await self.store.create(ENDPOINTS, namespace, endpoints)
        for piece in slices:
            slice_name = piece["metadata"]["name"]
            if await self.store.replace(ENDPOINTSLICES, namespace, slice_name, piece) is None:
                await self.store.create(ENDPOINTSLICES, namespace, piece)
        kept = {s["metadata"]["name"] for s in slices}
        for old in previous:
            if old["metadata"]["name"] not in kept:
                await self.store.delete(ENDPOINTSLICES, namespace, old["metadata"]["name"])
