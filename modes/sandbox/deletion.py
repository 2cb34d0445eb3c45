"""Deletion as kube-apiserver and its garbage collector do it: preconditions, finalizers and
deletionTimestamp, propagation (Background, Foreground, Orphan), namespace termination.

The garbage collector runs synchronously after each deletion instead of as a separate
controller; clients observe the same sequence of watch events, only sooner.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
from typing import TYPE_CHECKING, Any

from modes.sandbox.errors import bad_request, conflict, not_found
from modes.sandbox.resources import ResourceType
from modes.sandbox.selectors import Selector

if TYPE_CHECKING:
    from modes.sandbox.storing import StoreCore

Obj = dict[str, Any]
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
POLICIES = ("Background", "Foreground", "Orphan")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def policy_of(options: Obj) -> str:
    policy = options.get("propagationPolicy")
    if policy is None and options.get("orphanDependents") is not None:
        policy = "Orphan" if options["orphanDependents"] else "Background"
    policy = policy or "Background"
    if policy not in POLICIES:
        raise bad_request(
            f'propagationPolicy: Unsupported value: "{policy}": supported values: '
            + ", ".join(f'"{p}"' for p in POLICIES)
        )
    return str(policy)


def delete(
    store: StoreCore,
    rt: ResourceType,
    namespace: str,
    name: str,
    options: Obj | None = None,
    *,
    dry_run: bool = False,
) -> tuple[Obj, bool]:
    """Delete or start deleting; returns (the object as it now is or was last, gone now?)."""
    options = options or {}
    stored = store.peek(rt, namespace, name)
    if stored is None:
        raise not_found(rt.plural, rt.group, name)
    pre = options.get("preconditions") or {}
    meta = stored["metadata"]
    if pre.get("uid") and pre["uid"] != meta.get("uid"):
        raise conflict(
            rt.plural,
            rt.group,
            name,
            f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
            f"{meta.get('uid')}",
        )
    if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
        raise conflict(
            rt.plural,
            rt.group,
            name,
            f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
            f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
        )
    policy = policy_of(options)
    obj = copy.deepcopy(stored)
    if dry_run:
        return obj, True
    finalizers = list(obj["metadata"].get("finalizers") or [])
    if policy == "Foreground" and FOREGROUND not in finalizers:
        finalizers.append(FOREGROUND)
    if policy == "Orphan" and ORPHAN not in finalizers:
        finalizers.append(ORPHAN)
    grace = _grace(rt, obj, options)
    if rt.key == ("", "namespaces"):
        finalizers_spec = (obj.get("spec") or {}).get("finalizers") or []
        if finalizers_spec or finalizers:
            obj.setdefault("status", {})["phase"] = "Terminating"
    if (
        finalizers
        or grace
        or (rt.key == ("", "namespaces") and (obj.get("spec") or {}).get("finalizers"))
    ):
        if (
            obj["metadata"].get("deletionTimestamp")
            and finalizers == obj["metadata"].get("finalizers", [])
            and not grace
        ):
            return obj, False
        obj["metadata"]["finalizers"] = finalizers
        if not finalizers:
            obj["metadata"].pop("finalizers")
        if not obj["metadata"].get("deletionTimestamp"):
            obj["metadata"]["deletionTimestamp"] = _now()
            obj["metadata"]["deletionGracePeriodSeconds"] = grace
            if rt.generation:
                obj["metadata"]["generation"] = int(obj["metadata"].get("generation", 1)) + 1
        result = store.put_raw(rt, obj, "MODIFIED", stored)
        if rt.key == ("", "namespaces"):
            _schedule_namespace_cleanup(store, name)
        collect_garbage(store)
        return copy.deepcopy(result), False
    result = store.put_raw(rt, obj, "DELETED", stored)
    collect_garbage(store)
    return copy.deepcopy(result), True


def _schedule_namespace_cleanup(store: StoreCore, name: str) -> None:
    """Empty a terminating namespace a little later, as kube's namespace controller does.

    The delay is observable on purpose: ``kubectl delete -k`` deletes a namespace and then the
    objects in it, and on a real cluster those are still there to be deleted.
    """

    def due() -> None:
        store.namespaces_due.add(name)
        collect_garbage(store)

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # used without an event loop (scripts, sync tests): at once
        store.namespaces_due.add(name)
        return
    loop.call_later(store.namespace_cleanup_delay, due)


def _grace(rt: ResourceType, obj: Obj, options: Obj) -> int:
    """Seconds a pod on a node gets to stop; unscheduled pods go at once, as in kube."""
    if rt.key != ("", "pods") or not (obj.get("spec") or {}).get("nodeName"):
        return 0
    grace = options.get("gracePeriodSeconds")
    if grace is None:
        grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
    if obj["metadata"].get("deletionTimestamp") and grace == 0:
        return 0
    return max(int(grace), 0)


def delete_collection(
    store: StoreCore,
    rt: ResourceType,
    namespace: str | None,
    selector: Selector,
    options: Obj | None = None,
    *,
    dry_run: bool = False,
) -> list[Obj]:
    deleted = []
    for obj in list(store.select(rt, namespace, selector)):
        meta = obj["metadata"]
        if store.peek(rt, meta.get("namespace", ""), meta["name"]) is None:
            continue  # removed by the garbage collector meanwhile
        result, _ = delete(
            store, rt, meta.get("namespace", ""), meta["name"], options, dry_run=dry_run
        )
        deleted.append(result)
    return deleted


def _remove_finalizer(store: StoreCore, rt: ResourceType, obj: Obj, finalizer: str) -> None:
    new = copy.deepcopy(obj)
    new["metadata"]["finalizers"] = [
        f for f in obj["metadata"].get("finalizers", []) if f != finalizer
    ]
    if not new["metadata"]["finalizers"]:
        del new["metadata"]["finalizers"]
        store.put_raw(rt, new, "DELETED", obj)
    else:
        store.put_raw(rt, new, "MODIFIED", obj)


_collecting = False


def collect_garbage(store: StoreCore) -> None:
    """Run the garbage collector and the namespace finalizer until nothing changes."""
    global _collecting
    if _collecting:
        return
    _collecting = True
    try:
        while _collect_once(store):
            pass
    finally:
        _collecting = False


def _collect_once(store: StoreCore) -> bool:
    live_uids = store.uids
    owned = _resolve(store, store.owned)
    for rt, obj in _resolve(store, store.terminating):
        meta = obj["metadata"]
        finalizers = meta.get("finalizers") or []
        if ORPHAN in finalizers:
            for dep_rt, dep in owned:
                refs = dep["metadata"]["ownerReferences"]
                if any(r.get("uid") == meta["uid"] for r in refs):
                    new = copy.deepcopy(dep)
                    new["metadata"]["ownerReferences"] = [
                        r for r in refs if r.get("uid") != meta["uid"]
                    ]
                    if not new["metadata"]["ownerReferences"]:
                        del new["metadata"]["ownerReferences"]
                    store.put_raw(dep_rt, new, "MODIFIED", dep)
            _remove_finalizer(store, rt, obj, ORPHAN)
            return True
        if FOREGROUND in finalizers:
            dependents = [
                (d_rt, d)
                for d_rt, d in owned
                if any(r.get("uid") == meta["uid"] for r in d["metadata"]["ownerReferences"])
            ]
            if not dependents:
                _remove_finalizer(store, rt, obj, FOREGROUND)
                return True
            changed = False
            for d_rt, d in dependents:
                if not d["metadata"].get("deletionTimestamp"):
                    delete(
                        store,
                        d_rt,
                        d["metadata"].get("namespace", ""),
                        d["metadata"]["name"],
                        {"propagationPolicy": "Foreground"},
                    )
                    changed = True
            if changed:
                return True
        if (
            rt.key == ("", "namespaces")
            and meta["name"] in store.namespaces_due
            and (obj.get("spec") or {}).get("finalizers")
        ):
            if _start_emptying(store, meta["name"]):
                return True  # deleted some; the next pass finalizes if that was the last
            if _namespace_has_content(store, meta["name"]):
                continue  # graceful pods, finalizers: their deletion runs the collector again
            new = copy.deepcopy(obj)
            new["spec"]["finalizers"] = []
            kind = "MODIFIED" if new["metadata"].get("finalizers") else "DELETED"
            store.put_raw(rt, new, kind, obj)
            return True
    for rt, obj in owned:
        refs = obj["metadata"]["ownerReferences"]
        if obj["metadata"].get("deletionTimestamp"):
            continue
        if all(r.get("uid") not in live_uids for r in refs):
            meta = obj["metadata"]
            if store.peek(rt, meta.get("namespace", ""), meta["name"]) is obj:
                delete(
                    store,
                    rt,
                    meta.get("namespace", ""),
                    meta["name"],
                    {"propagationPolicy": "Background"},
                )
                return True
    return False


def _resolve(
    store: StoreCore, where: set[tuple[tuple[str, str], tuple[str, str]]]
) -> list[tuple[ResourceType, Obj]]:
    found = []
    for key, location in sorted(where):
        rt = store.registry.get(*key)
        obj = store.bucket(rt).get(location) if rt is not None else None
        if rt is not None and obj is not None:
            found.append((rt, obj))
    return found


def _start_emptying(store: StoreCore, namespace: str) -> bool:
    """Start deleting what is left in a terminating namespace; True if anything was."""
    started = False
    for rt in store.registry:
        if not rt.namespaced:
            continue
        for obj in list(store.select(rt, namespace)):
            if not obj["metadata"].get("deletionTimestamp"):
                delete(
                    store,
                    rt,
                    namespace,
                    obj["metadata"]["name"],
                    {"propagationPolicy": "Background"},
                )
                started = True
    return started


def _namespace_has_content(store: StoreCore, namespace: str) -> bool:
    return any(store.select(rt, namespace) for rt in store.registry if rt.namespaced)
