"""The object store: every object of every type, one global resourceVersion, and the write path
(admission, defaulting, validation, metadata) that the HTTP API and in-process controllers share.

All methods are synchronous and run on the event loop's thread, so each write is atomic with
respect to every other request and to the watch fan-out, without locks.
"""

from __future__ import annotations

import builtins
import copy
import datetime
import secrets
import uuid
from collections.abc import Callable
from typing import Any

from modes.sandbox import admission, decoding, defaulting, deletion, ownership
from modes.sandbox.errors import (
    STALE,
    ApiError,
    already_exists,
    bad_request,
    cause,
    conflict,
    forbidden,
    invalid,
    not_found,
)
from modes.sandbox.resources import ResourceRegistry, ResourceType
from modes.sandbox.selectors import Selector
from modes.sandbox.storing import WriteOptions as WriteOptions  # re-exported for importers
from modes.sandbox.watching import Event, Watcher, WatchHub, parse_rv

Obj = dict[str, Any]
Location = tuple[str, str]  # (namespace, name); namespace is "" for cluster-scoped objects
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    def __init__(
        self, registry: ResourceRegistry | None = None, *, history: int = 10_000,
        service_cidr: str | None = None,
    ) -> None:
        self.registry = registry or ResourceRegistry()
        self.hub = WatchHub(history)
        self.alloc = defaulting.Allocator(service_cidr)
        self.rv = 1
        self._objects: dict[tuple[str, str], dict[Location, Obj]] = {}
        # Indexes for the garbage collector: uid -> where, and who has owners or is terminating.
        self.uids: dict[str, tuple[tuple[str, str], Location]] = {}
        self.owned: set[tuple[tuple[str, str], Location]] = set()
        self.terminating: set[tuple[tuple[str, str], Location]] = set()
        # Terminating namespaces whose content may now be deleted (see deletion.py).
        self.namespaces_due: set[str] = set()
        self.namespace_cleanup_delay = 0.5
        # Called after each committed event (CRD serving, garbage collection, part 2 controllers).
        self.listeners: list[Callable[[Event], None]] = []
        # Extra per-type validation (CRDs, part 2's admission): (new, old or None) -> causes.
        self.validators: dict[tuple[str, str], list[Callable[[Obj, Obj | None], list[Obj]]]] = {}

    # --- reading ------------------------------------------------------------------------

    def bucket(self, rt: ResourceType) -> dict[Location, Obj]:
        return self._objects.setdefault(rt.key, {})

    def peek(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        """The stored object itself (do not mutate), or None."""
        return self.bucket(rt).get((namespace if rt.namespaced else "", name))

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.peek(rt, namespace, name)
        if obj is None:
            raise not_found(rt.plural, rt.group, name)
        return copy.deepcopy(obj)

    def select(
        self, rt: ResourceType, namespace: str | None = None, selector: Selector | None = None
    ) -> list[Obj]:
        """Stored objects (not copies) in key order, filtered by namespace and selector."""
        bucket = self.bucket(rt)
        keys = sorted(bucket)
        if namespace and rt.namespaced:
            keys = [k for k in keys if k[0] == namespace]
        objs = [bucket[k] for k in keys]
        if selector is not None and not selector.empty:
            objs = [o for o in objs if selector.matches(o)]
        return objs

    def list(
        self, rt: ResourceType, namespace: str | None = None, selector: Selector | None = None
    ) -> list[Obj]:
        return copy.deepcopy(self.select(rt, namespace, selector))

    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        selector: Selector,
        resource_version: str | None,
    ) -> Watcher:
        """Unset or "0": synthetic ADDED for what exists now, then changes; N: changes after N."""
        if resource_version not in (None, "", "0"):
            since = parse_rv(resource_version)
            return self.hub.subscribe(rt.key, namespace, selector, since, self.rv)
        watcher = self.hub.subscribe(rt.key, namespace, selector, None, self.rv)
        for obj in self.select(rt, namespace, selector):
            watcher.push_initial(int(obj["metadata"]["resourceVersion"]), obj)
        return watcher

    # --- writing ------------------------------------------------------------------------

    def _commit(self, rt: ResourceType, kind: str, obj: Obj, old: Obj | None) -> Obj:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        location = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        where = (rt.key, location)
        meta = obj["metadata"]
        if kind == "DELETED":
            self.bucket(rt).pop(location, None)
            self.uids.pop(meta.get("uid", ""), None)
            self.owned.discard(where)
            self.terminating.discard(where)
            if rt.key == ("", "namespaces"):
                self.namespaces_due.discard(location[1])
            if rt.key == ("", "services"):
                self.alloc.release(obj)
        else:
            self.bucket(rt)[location] = obj
            self.uids[meta["uid"]] = where
            (self.owned.add if meta.get("ownerReferences") else self.owned.discard)(where)
            (self.terminating.add if meta.get("deletionTimestamp") else self.terminating.discard)(
                where
            )
        event = Event(self.rv, kind, rt.key, location[0], obj, old)
        self.hub.publish(event)
        for listener in list(self.listeners):
            listener(event)
        return obj

    def _check_namespace(self, rt: ResourceType, namespace: str, name: str) -> None:
        if not rt.namespaced:
            return
        ns = self.bucket(self.registry.get("", "namespaces")).get(("", namespace))  # type: ignore[arg-type]
        if ns is None:
            raise not_found("namespaces", "", namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise forbidden(
                rt.plural,
                rt.group,
                name,
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
            )

    def create(
        self, rt: ResourceType, obj: Obj, namespace: str = "", opts: WriteOptions | None = None
    ) -> Obj:
        opts = opts or WriteOptions()
        if "create" not in rt.verbs:
            raise ApiError(405, "MethodNotAllowed", f"create is not supported on {rt.plural}")
        obj = decoding.check_kind(self.registry, rt, copy.deepcopy(obj))
        decoding.check_metadata_types(rt, obj)
        meta = obj["metadata"]
        if rt.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the "
                    "namespace sent on the request"
                )
            meta["namespace"] = namespace or meta.get("namespace") or ""
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise bad_request("resourceVersion should not be set on objects to be created")
        if rt.verbs == ("create",):  # reviews are answered, never stored
            admission.prepare_create(rt, obj)
            return obj
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(
                    secrets.choice(_NAME_CHARS) for _ in range(5)
                )
            else:
                raise invalid(
                    rt.kind,
                    rt.group,
                    "",
                    [
                        cause(
                            "metadata.name",
                            "FieldValueRequired",
                            "Required value: name or generateName is required",
                        )
                    ],
                )
        name = meta["name"]
        admission.prepare_create(rt, obj)
        self._check_namespace(rt, meta.get("namespace", ""), name)
        decoding.prepare(self, rt, obj, None, opts)
        if opts.field_manager and not opts.applying:
            self._track(rt, None, obj, opts.field_manager, None)
        if self.peek(rt, meta.get("namespace", ""), name) is not None:
            raise already_exists(rt.plural, rt.group, name)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(key, None)
        if rt.generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if opts.dry_run:
            return obj
        result = copy.deepcopy(self._commit(rt, "ADDED", obj, None))
        if any(r.get("uid") not in self.uids for r in meta.get("ownerReferences") or []):
            deletion.collect_garbage(self)  # an object whose owners are all gone is collected
        return result

    def update(
        self,
        rt: ResourceType,
        obj: Obj,
        namespace: str,
        name: str,
        opts: WriteOptions | None = None,
        *,
        subresource: str | None = None,
    ) -> Obj:
        opts = opts or WriteOptions()
        old = self.peek(rt, namespace, name)
        if old is None:
            raise not_found(rt.plural, rt.group, name)
        obj = decoding.check_kind(self.registry, rt, copy.deepcopy(obj))
        decoding.check_metadata_types(rt, obj)
        meta = obj["metadata"]
        if meta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the "
                f"name on the URL ({name})"
            )
        if rt.namespaced and meta.get("namespace", namespace) != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        if (
            meta.get("resourceVersion")
            and meta["resourceVersion"] != old["metadata"]["resourceVersion"]
        ):
            raise conflict(rt.plural, rt.group, name, STALE)
        if meta.get("uid") and meta["uid"] != old["metadata"]["uid"]:
            raise conflict(
                rt.plural,
                rt.group,
                name,
                f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: "
                f"{old['metadata']['uid']}",
            )
        obj, explicit = decoding.carry_over(rt, obj, old, namespace, name, subresource)
        meta = obj["metadata"]
        if old["metadata"].get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
            if added:
                raise invalid(
                    rt.kind,
                    rt.group,
                    name,
                    [
                        cause(
                            "metadata.finalizers",
                            "FieldValueForbidden",
                            "Forbidden: no new finalizers can be added if the object is being "
                            "deleted",
                        )
                    ],
                )
        admission.carry_over(rt, obj, old)
        decoding.prepare(self, rt, obj, old, opts)
        if opts.field_manager and not opts.applying and not explicit:
            self._track(rt, old, obj, opts.field_manager, subresource)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if rt.generation and _spec_of(obj) != _spec_of(old):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        if obj == old:  # kube-apiserver skips no-op writes: same resourceVersion, no event
            return copy.deepcopy(old)
        if opts.dry_run:
            return obj
        if (
            meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and not _graceful_pending(rt, obj)
        ):
            result = self._commit(rt, "DELETED", obj, old)
        else:
            result = self._commit(rt, "MODIFIED", obj, old)
        if meta.get("deletionTimestamp") or meta.get("ownerReferences") != old["metadata"].get(
            "ownerReferences"
        ):
            deletion.collect_garbage(self)
        return copy.deepcopy(result)

    def _track(
        self, rt: ResourceType, old: Obj | None, obj: Obj, manager: str, subresource: str | None
    ) -> None:
        from modes.sandbox.applying import schema_node  # applying builds on this module

        managed = ownership.track_update(
            old, obj, schema_node(rt), manager, rt.api_version(), subresource
        )
        if managed:
            obj["metadata"]["managedFields"] = managed
        else:
            obj["metadata"].pop("managedFields", None)

    def put_raw(self, rt: ResourceType, obj: Obj, kind: str, old: Obj | None) -> Obj:
        """Commit an already prepared object (deletion and garbage collection use this)."""
        return self._commit(rt, kind, obj, old)

    # --- the in-process API for controllers (part 2): same semantics as over HTTP --------

    def resource(self, name: str) -> ResourceType:
        """A served type by ``plural`` or ``plural.group`` (``pods``, ``deployments.apps``)."""
        plural, _, group = name.partition(".")
        rt = self.registry.get(group, plural)
        if rt is None:
            raise not_found("resources", "", name)
        return rt

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        body: bytes,
        opts: WriteOptions | None = None,
        *,
        subresource: str | None = None,
    ) -> Obj:
        """PATCH with a Content-Type of the API (json-patch, merge-patch, strategic, apply)."""
        from modes.sandbox import applying  # applying builds on this module

        return applying.patch(
            self, rt, namespace, name, content_type, body, opts or WriteOptions(), subresource
        )

    def delete(
        self, rt: ResourceType, namespace: str, name: str, options: Obj | None = None
    ) -> tuple[Obj, bool]:
        """DeleteOptions as a dict; returns (object as it now is, gone already?)."""
        return deletion.delete(self, rt, namespace, name, options)

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        selector: Selector | None = None,
        options: Obj | None = None,
    ) -> builtins.list[Obj]:
        return deletion.delete_collection(self, rt, namespace, selector or Selector(), options)


def _spec_of(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _graceful_pending(rt: ResourceType, obj: Obj) -> bool:
    """A pod on a node stays until its kubelet confirms with a zero grace period."""
    return rt.key == ("", "pods") and bool(obj["metadata"].get("deletionGracePeriodSeconds"))
