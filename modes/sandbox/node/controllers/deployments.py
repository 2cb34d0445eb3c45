"""Deployments: one ReplicaSet per pod template, rolled from old to new within the strategy.

The template's hash names the ReplicaSet and labels its pods (``pod-template-hash``), so a
template change makes a new ReplicaSet and a scale change does not. RollingUpdate keeps at most
replicas+maxSurge pods and at least replicas-maxUnavailable ready ones; Recreate removes the old
pods before the new ones start. Status carries what ``kubectl rollout status`` and
``kubectl wait --for=condition=Available`` read.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import math
from collections.abc import Iterable
from typing import Any

from kubetunnel.logging import get_logger
from modes.sandbox.node.controllers.base import (
    Name,
    Obj,
    Reconciler,
    controller_ref,
    owned_by,
)
from modes.sandbox.node.controllers.replicasets import ALPHABET
from modes.sandbox.node.store import DEPLOYMENTS, REPLICASETS, Key

log = get_logger(__name__)
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"


def template_hash(template: Obj) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(ALPHABET[b % len(ALPHABET)] for b in digest[:10])


def _scaled(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        exact = int(value[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value)


def surge_and_unavailable(deployment: Obj, replicas: int) -> tuple[int, int]:
    rolling = ((deployment.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}
    surge = _scaled(rolling.get("maxSurge", "25%"), replicas, True)
    unavailable = _scaled(rolling.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # as Kubernetes: a rollout must be able to make progress
    return surge, unavailable


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _replicas(rs: Obj) -> int:
    return int((rs.get("spec") or {}).get("replicas", 0))


def _status(rs: Obj, field: str) -> int:
    return int((rs.get("status") or {}).get(field, 0))


class DeploymentController(Reconciler):
    watched = (DEPLOYMENTS, REPLICASETS)
    name = "deployment"

    def affected(self, key: Key, obj: Obj) -> Iterable[Name]:
        return self.owners_affected(DEPLOYMENTS, key, obj)

    async def reconcile(self, name: Name) -> None:
        deployment = self.cache[DEPLOYMENTS].get(name)
        if deployment is None or deployment["metadata"].get("deletionTimestamp"):
            return
        namespace = name[0]
        spec = deployment.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        owned = [rs for rs in self.in_namespace(REPLICASETS, namespace)
                 if owned_by(rs, deployment) and not rs["metadata"].get("deletionTimestamp")]
        pod_hash = template_hash(spec.get("template") or {})
        new = next((rs for rs in owned if rs["metadata"].get("labels", {}).get(HASH_LABEL)
                    == pod_hash), None)
        old = [rs for rs in owned if rs is not new]
        created = False
        if new is None:
            new = await self._create_replicaset(deployment, pod_hash, old)
            created = True
        if not spec.get("paused"):
            await self._roll(deployment, replicas, new, old)
            old = await self._prune(deployment, old)
        await self._write_status(deployment, replicas, new, old, created)

    async def _prune(self, deployment: Obj, old: list[Obj]) -> list[Obj]:
        """Keep ``revisionHistoryLimit`` (default 10) scaled-down old ReplicaSets, newest first."""
        limit = int((deployment.get("spec") or {}).get("revisionHistoryLimit", 10))
        idle = [rs for rs in old if _replicas(rs) == 0 and _status(rs, "replicas") == 0]
        idle.sort(key=lambda rs: int(rs["metadata"].get("annotations", {}).get(REVISION, 0)))
        doomed = idle[: max(0, len(idle) - limit)]
        for rs in doomed:
            key = (rs["metadata"]["namespace"], rs["metadata"]["name"])
            await self.store.delete(REPLICASETS, *key)
            self.cache[REPLICASETS].pop(key, None)
        return [rs for rs in old if rs not in doomed]

    async def _create_replicaset(self, deployment: Obj, pod_hash: str, old: list[Obj]) -> Obj:
        spec = deployment.get("spec") or {}
        template: Obj = copy.deepcopy(spec.get("template") or {})
        labels: dict[str, str] = template.setdefault("metadata", {}).setdefault("labels", {})
        labels[HASH_LABEL] = pod_hash
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        revision = 1 + max((int(rs["metadata"].get("annotations", {}).get(REVISION, 0))
                            for rs in old), default=0)
        meta = deployment["metadata"]
        body: Obj = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{meta['name']}-{pod_hash}", "namespace": meta["namespace"],
                         "labels": dict(labels),
                         "annotations": {REVISION: str(revision)},
                         "ownerReferences": [controller_ref(deployment, "apps/v1", "Deployment")]},
            "spec": {"replicas": 0, "selector": selector, "template": template,
                     "minReadySeconds": spec.get("minReadySeconds", 0)},
        }
        created = await self.store.create(REPLICASETS, meta["namespace"], body)
        if created is None:  # it exists but the watch has not brought it yet
            created = await self.store.get(REPLICASETS, meta["namespace"], body["metadata"]["name"])
        assert created is not None
        self.cache[REPLICASETS][(meta["namespace"], created["metadata"]["name"])] = created
        log.info("deployment.replicaset_created", namespace=meta["namespace"],
                 deployment=meta["name"], replicaset=created["metadata"]["name"])
        return created

    async def _scale(self, rs: Obj, replicas: int) -> None:
        if _replicas(rs) == replicas:
            return
        body = copy.deepcopy(rs)
        body["spec"]["replicas"] = replicas
        updated = await self.store.replace(REPLICASETS, rs["metadata"]["namespace"],
                                           rs["metadata"]["name"], body)
        if updated is not None:
            self.cache[REPLICASETS][(rs["metadata"]["namespace"], rs["metadata"]["name"])] = updated
            rs.clear()
            rs.update(updated)

    async def _roll(self, deployment: Obj, replicas: int, new: Obj, old: list[Obj]) -> None:
        strategy = ((deployment.get("spec") or {}).get("strategy") or {}).get("type",
                                                                            "RollingUpdate")
        if strategy == "Recreate":
            for rs in old:
                await self._scale(rs, 0)
            if all(_status(rs, "replicas") == 0 for rs in old):
                await self._scale(new, replicas)
            return
        surge, unavailable = surge_and_unavailable(deployment, replicas)
        old_total = sum(_replicas(rs) for rs in old)
        if not old_total:
            await self._scale(new, replicas)
            return
        # Up: the new ReplicaSet grows as far as the surge allows.
        room = replicas + surge - old_total - _replicas(new)
        if room > 0 and _replicas(new) < replicas:
            await self._scale(new, min(replicas, _replicas(new) + room))
        # Down: old pods go while enough ready pods remain; unready old pods go first.
        ready = _status(new, "readyReplicas") + sum(_status(rs, "readyReplicas") for rs in old)
        removable = ready - (replicas - unavailable)
        for rs in sorted(old, key=lambda r: r["metadata"].get("creationTimestamp", "")):
            unready = max(0, _replicas(rs) - _status(rs, "readyReplicas"))
            take = min(_replicas(rs), unready + max(0, removable))
            if take:
                removable -= max(0, take - unready)
                await self._scale(rs, _replicas(rs) - take)

    async def _write_status(self, deployment: Obj, replicas: int, new: Obj, old: list[Obj],
                            created: bool) -> None:
        every = [new, *old]
        total = sum(_status(rs, "replicas") for rs in every)
        ready = sum(_status(rs, "readyReplicas") for rs in every)
        available = sum(_status(rs, "availableReplicas") for rs in every)
        updated = _status(new, "replicas")
        _, unavailable = surge_and_unavailable(deployment, replicas)
        complete = (updated == replicas == total == available
                    and _status(new, "observedGeneration") >= new["metadata"].get("generation", 1))
        previous = {c["type"]: c for c in (deployment.get("status") or {}).get("conditions") or []}
        now = _now()

        def condition(kind: str, ok: bool, reason: str, message: str) -> Obj:
            before = previous.get(kind) or {}
            status = "True" if ok else "False"
            changed = before.get("status") != status
            return {"type": kind, "status": status, "reason": reason, "message": message,
                    "lastUpdateTime": now if changed or before.get("reason") != reason
                    else before.get("lastUpdateTime", now),
                    "lastTransitionTime": now if changed else before.get("lastTransitionTime", now)}

        rs_name = new["metadata"]["name"]
        has_minimum = available >= replicas - unavailable
        if complete:
            progress = ("NewReplicaSetAvailable",
                        f'ReplicaSet "{rs_name}" has successfully progressed.')
        elif created:
            progress = ("NewReplicaSetCreated", f'Created new replica set "{rs_name}"')
        else:
            progress = ("ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        status: Obj = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": total, "updatedReplicas": updated, "readyReplicas": ready,
            "availableReplicas": available, "unavailableReplicas": max(0, replicas - available),
            "conditions": [
                condition("Available", has_minimum,
                          "MinimumReplicasAvailable" if has_minimum
                          else "MinimumReplicasUnavailable",
                          "Deployment has minimum availability." if has_minimum
                          else "Deployment does not have minimum availability."),
                condition("Progressing", True, *progress),
            ],
        }
        # Kubernetes omits zero counts; clients read a missing field as 0.
        status = {k: v for k, v in status.items() if v != 0 or k == "observedGeneration"}
        current = deployment.get("status") or {}
        comparable = {k: v for k, v in current.items() if k != "conditions"}
        if comparable == {k: v for k, v in status.items() if k != "conditions"} and \
                [(c["type"], c["status"], c["reason"]) for c in current.get("conditions") or []] \
                == [(c["type"], c["status"], c["reason"]) for c in status["conditions"]]:
            return
        meta = deployment["metadata"]
        await self.store.update_status(DEPLOYMENTS, meta["namespace"], meta["name"], status)
