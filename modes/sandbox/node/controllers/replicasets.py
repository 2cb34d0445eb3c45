"""ReplicaSets: keep ``spec.replicas`` live pods from the template, report how many are ready.

Pods are created with the ReplicaSet as their controlling ownerReference and removed, when
there are too many, starting with those least useful: not yet scheduled, not ready, newest.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterable

from kubetunnel.logging import get_logger
from modes.sandbox.node.controllers.base import (
    Name,
    Obj,
    Reconciler,
    controller_ref,
    owned_by,
)
from modes.sandbox.node.store import PODS, REPLICASETS, Key

log = get_logger(__name__)
# The alphabet Kubernetes uses for generated name suffixes: no vowels, no look-alikes.
ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def suffix(length: int = 5) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def pod_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def active(pod: Obj) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and \
        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _removal_order(pod: Obj) -> tuple[int, int, str]:
    status = pod.get("status") or {}
    return (0 if not status.get("podIP") else 1, 1 if pod_ready(pod) else 0,
            # newest first: reverse the creation time by sorting on its negation's proxy
            "".join(chr(0x10FFFF - ord(c)) for c in pod["metadata"].get("creationTimestamp", "")))


class ReplicaSetController(Reconciler):
    watched = (REPLICASETS, PODS)
    name = "replicaset"

    def affected(self, key: Key, obj: Obj) -> Iterable[Name]:
        return self.owners_affected(REPLICASETS, key, obj)

    async def reconcile(self, name: Name) -> None:
        rs = self.cache[REPLICASETS].get(name)
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return
        namespace = name[0]
        pods = [p for p in self.in_namespace(PODS, namespace) if owned_by(p, rs) and active(p)]
        wanted = int((rs.get("spec") or {}).get("replicas", 1))
        if len(pods) < wanted:
            for _ in range(wanted - len(pods)):
                created = await self.store.create(PODS, namespace, self._pod(rs))
                if created is not None:
                    pods.append(created)
                    # Into the cache now, not when the watch brings it: a reconcile in between
                    # must not count it missing and create another (kube's "expectations").
                    self.cache[PODS][(namespace, created["metadata"]["name"])] = created
            log.info("replicaset.scaled_up", namespace=namespace, replicaset=name[1],
                     replicas=wanted)
        elif len(pods) > wanted:
            extra = sorted(pods, key=_removal_order)[: len(pods) - wanted]
            for pod in extra:
                await self.store.delete(PODS, namespace, pod["metadata"]["name"])
                self.cache[PODS].pop((namespace, pod["metadata"]["name"]), None)
            pods = [p for p in pods if p not in extra]
            log.info("replicaset.scaled_down", namespace=namespace, replicaset=name[1],
                     replicas=wanted)
        ready = sum(1 for p in pods if pod_ready(p))
        labels = ((rs.get("spec") or {}).get("template") or {}).get("metadata", {}).get(
            "labels") or {}
        status = {
            "replicas": len(pods),
            "fullyLabeledReplicas": sum(
                1 for p in pods
                if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        if (rs.get("status") or {}) != status:
            await self.store.update_status(REPLICASETS, namespace, name[1], status)

    def _pod(self, rs: Obj) -> Obj:
        template = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
        meta = template.get("metadata") or {}
        meta.pop("name", None)
        meta["name"] = f"{rs['metadata']['name']}-{suffix()}"
        meta["namespace"] = rs["metadata"]["namespace"]
        meta["ownerReferences"] = [controller_ref(rs, "apps/v1", "ReplicaSet")]
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                "spec": template.get("spec") or {}}
