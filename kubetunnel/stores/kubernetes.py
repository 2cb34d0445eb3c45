"""What the ``crd`` and ``configmap`` stores share: Kubernetes errors turned into store errors,
and a list-then-watch that survives what real API servers do to long watches.

A watch on a real API server ends (timeouts, load balancers, API server restarts) and may answer
410 Gone when the resource version it resumes from has been compacted. :func:`follow` hides all
of that: it lists, watches from the list's resource version, resumes after an end, re-lists after
410 and reports the difference between what it knew and what the re-list shows. Its consumers
therefore see *level* events: after any outage the last event per object is its current state.
"""

from __future__ import annotations

import asyncio
import builtins
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, TypeVar

from kubetunnel.errors import AlreadyExists, Conflict, KubetunnelError, NotFound
from kubetunnel.kube import ApiError, KubeClient
from kubetunnel.logging import get_logger
from kubetunnel.plugins import StoreEvent
from kubetunnel.records import TunnelRecord, parse_time

log = get_logger(__name__)

T = TypeVar("T")
EventType = Literal["ADDED", "MODIFIED", "DELETED"]
Key = tuple[str, str]

WATCH_TIMEOUT_SECONDS = 240
BACKOFF_START = 0.1
BACKOFF_CAP = 5.0


def store_error(exc: ApiError, what: str) -> KubetunnelError:
    """The store protocol's errors for the API's reasons; anything else stays an ApiError."""
    if exc.status == 404:
        return NotFound(f"{what} not found")
    if exc.status == 409 and exc.reason == "AlreadyExists":
        return AlreadyExists(f"{what} already exists")
    if exc.status == 409:
        return Conflict(f"{what} was changed by someone else; read it again and retry")
    return exc


async def translated(call: Awaitable[T], what: str) -> T:
    """Await one API call, raising store errors instead of ApiError."""
    try:
        return await call
    except ApiError as exc:
        raise store_error(exc, what) from exc


def object_key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta["name"]))


def resource_version(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class Backoff:
    """Capped exponential back-off with jitter; :meth:`reset` after a success."""

    def __init__(self, start: float = BACKOFF_START, cap: float = BACKOFF_CAP) -> None:
        self.start, self.cap = start, cap
        self._next = start

    def reset(self) -> None:
        self._next = self.start

    def delay(self) -> float:
        # Jitter: many watchers cut by the same API server restart must not return in lockstep.
        current = self._next * (0.5 + random.random() / 2)  # noqa: S311 - not cryptographic
        self._next = min(self._next * 2, self.cap)
        return current

    async def sleep(self) -> None:
        await asyncio.sleep(self.delay())


async def follow(
    client: KubeClient,
    path: str,
    *,
    label_selector: str | None = None,
    watch_timeout: int = WATCH_TIMEOUT_SECONDS,
    on_relist: Callable[[], None] | None = None,
) -> AsyncIterator[tuple[EventType, dict[str, Any]]]:
    """Every object at ``path`` (a collection) as ADDED, then every change, forever.

    Never raises for watch ends, 410 Gone, transient errors or unreachable servers: it backs off
    and carries on, so the consumer only ever stops it by leaving the loop.
    """
    params: dict[str, str | int] = {}
    if label_selector:
        params["labelSelector"] = label_selector
    known: dict[Key, dict[str, Any]] = {}
    version: str | None = None
    backoff = Backoff()
    while True:
        if version is None:
            try:
                listing = await client.get(path, **params)
            except KubetunnelError as exc:
                log.warning("watch.list_failed", path=path, error=str(exc))
                await backoff.sleep()
                continue
            version = str(listing.get("metadata", {}).get("resourceVersion") or "")
            fresh = {object_key(o): o for o in listing.get("items") or []}
            for change in _diff(known, fresh):
                yield change
            known = fresh
            if on_relist is not None:
                on_relist()
        try:
            async for event in client.watch(
                path, timeout_seconds=watch_timeout, resourceVersion=version or "0", **params
            ):
                backoff.reset()
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "BOOKMARK":
                    version = resource_version(obj) or version
                    continue
                if kind not in ("ADDED", "MODIFIED", "DELETED"):
                    continue
                version = resource_version(obj) or version
                key = object_key(obj)
                if kind == "DELETED":
                    known.pop(key, None)
                    yield "DELETED", obj
                else:
                    yield ("MODIFIED" if key in known else "ADDED"), obj
                    known[key] = obj
        except ApiError as exc:
            if exc.status == 410:
                log.info("watch.expired", path=path, resource_version=version)
                version = None  # re-list and diff: level, not edge
                continue
            log.warning("watch.failed", path=path, status=exc.status, error=str(exc))
            if not exc.transient:
                version = None
            await backoff.sleep()
        except (KubetunnelError, ValueError) as exc:
            # ValueError: a line cut in the middle by a dropped connection is not JSON.
            log.info("watch.ended", path=path, error=str(exc))
            await backoff.sleep()
        else:
            # A clean end (timeoutSeconds or the server closing): resume where we were.
            log.debug("watch.resumed", path=path, resource_version=version)


def _diff(
    known: dict[Key, dict[str, Any]], fresh: dict[Key, dict[str, Any]]
) -> list[tuple[EventType, dict[str, Any]]]:
    events: list[tuple[EventType, dict[str, Any]]] = []
    for key, obj in fresh.items():
        old = known.get(key)
        if old is None:
            events.append(("ADDED", obj))
        elif resource_version(old) != resource_version(obj):
            events.append(("MODIFIED", obj))
    events.extend(("DELETED", obj) for key, obj in known.items() if key not in fresh)
    return events


def client_from_settings(settings: Any) -> tuple[KubeClient, bool]:
    """The store's API client and whether the store owns it (closes it in ``aclose``).

    ``settings.kube`` may be a :class:`KubeClient` to share (the operator uses one session for
    everything), a :class:`KubeAccess`, or None to load kubeconfig the way kubectl does.
    """
    from kubetunnel.kube import KubeAccess

    kube = getattr(settings, "kube", None)
    if isinstance(kube, KubeClient):
        return kube, False
    if kube is None:
        options = getattr(settings, "options", {}) or {}
        kube = KubeAccess.load(options.get("kubeconfig"), options.get("context"))
    return KubeClient(kube), True


class KubeRecordStore:
    """The half of a Kubernetes-backed store that does not depend on the medium.

    Subclasses say where a record lives (``_path``, ``_object_name``), how it maps to an object
    (``_to_record``) and how it is written (``create``, ``replace``, ``replace_status``).
    """

    api_version = "v1"
    kind = ""
    label_selector: str | None = None

    def __init__(self, settings: Any = None) -> None:
        self._client, self._owns_client = client_from_settings(settings)

    @property
    def client(self) -> KubeClient:
        return self._client

    def _path(self, namespace: str | None, name: str | None = None) -> str:
        raise NotImplementedError

    def _object_name(self, name: str) -> str:
        return name

    def _to_record(self, obj: dict[str, Any]) -> TunnelRecord | None:
        raise NotImplementedError

    @staticmethod
    def _what(namespace: str, name: str) -> str:
        return f"tunnel {namespace}/{name}"

    async def _get_object(self, namespace: str, name: str) -> dict[str, Any]:
        path = self._path(namespace, self._object_name(name))
        obj: dict[str, Any] = await translated(self._client.get(path), self._what(namespace, name))
        return obj

    async def get(self, namespace: str, name: str) -> TunnelRecord | None:
        try:
            return self._to_record(await self._get_object(namespace, name))
        except NotFound:
            return None

    async def list(self, namespace: str | None = None) -> builtins.list[TunnelRecord]:
        params = {"labelSelector": self.label_selector} if self.label_selector else {}
        listing = await self._client.get(self._path(namespace), **params)
        records = [self._to_record(obj) for obj in listing.get("items") or []]
        return sorted(
            (r for r in records if r is not None), key=lambda r: (r.namespace, r.name)
        )

    async def delete(self, namespace: str, name: str) -> None:
        path = self._path(namespace, self._object_name(name))
        await translated(self._client.delete(path), self._what(namespace, name))

    async def watch(self, namespace: str | None = None) -> AsyncIterator[StoreEvent]:
        async for kind, obj in follow(
            self._client, self._path(namespace), label_selector=self.label_selector
        ):
            record = self._to_record(obj)
            if record is not None:
                gone = record.deleting or kind == "DELETED"
                yield StoreEvent(kind, record.replace(deleting=gone))

    def owner_reference(self, record: TunnelRecord) -> dict[str, Any]:
        """What objects owned by ``record`` carry, so garbage collection takes them with it."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self._object_name(record.name),
            "uid": record.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def object_reference(self, record: TunnelRecord) -> dict[str, Any]:
        """The record as an Event's ``involvedObject``: ``kubectl describe`` finds it there."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": record.namespace,
            "name": self._object_name(record.name),
            "uid": record.uid,
            "resourceVersion": record.resource_version,
        }

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def metadata_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """The record fields that come from an object's metadata, whatever the medium."""
    meta = obj.get("metadata") or {}
    return {
        "uid": str(meta.get("uid") or ""),
        "resource_version": str(meta.get("resourceVersion") or ""),
        "created_at": parse_time(meta.get("creationTimestamp")),
        "deleting": bool(meta.get("deletionTimestamp")),
        "finalizers": tuple(meta.get("finalizers") or ()),
    }
