"""Swapping a Service's selector to the tunnel pod and back, without ever losing the original.

Two rules make this crash-safe and polite:

- The original selector is written in the *same* JSON Patch that swaps the selector (as an
  annotation, with a second one naming the tunnel). There is no moment, whatever crashes when,
  at which the Service points at a tunnel and the original is written nowhere; and the restore
  removes both annotations in the same patch that puts the original back.
- Every patch starts with a ``test`` of the current selector (and of the annotation naming the
  tunnel), so the API server refuses it if anyone changed the Service since we read it. Then we
  read again and decide again; a selector a person set is never overwritten.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from kubetunnel.kube import JSON_PATCH, ApiError, KubeClient, resource_path
from kubetunnel.logging import get_logger

log = get_logger(__name__)

ORIGINAL_ANNOTATION = "kubetunnel.dev/original-selector"
TUNNEL_ANNOTATION = "kubetunnel.dev/tunnel"


def _pointer(key: str) -> str:
    return "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")


def service_path(namespace: str, name: str | None = None) -> str:
    return resource_path("v1", "services", namespace, name)


@dataclass(frozen=True)
class ServiceView:
    """What the operator reads from a Service."""

    namespace: str
    name: str
    selector: dict[str, str] | None
    tunnel: str | None
    original: dict[str, str] | None
    original_raw: str | None
    has_annotations: bool = True
    resource_version: str = ""
    ports: tuple[dict[str, Any], ...] = ()

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ServiceView:
        meta = obj.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        raw = annotations.get(ORIGINAL_ANNOTATION)
        original: dict[str, str] | None = None
        if raw is not None:
            try:
                parsed = json.loads(raw)
                original = parsed if isinstance(parsed, dict) else None
            except ValueError:
                original = None
        selector = (obj.get("spec") or {}).get("selector")
        return cls(meta.get("namespace", ""), meta["name"], selector or None,
                   annotations.get(TUNNEL_ANNOTATION), original, raw,
                   has_annotations="annotations" in meta and meta["annotations"] is not None,
                   resource_version=str(meta.get("resourceVersion") or ""),
                   ports=tuple((obj.get("spec") or {}).get("ports") or ()))


Outcome = Literal["switched", "restored", "unchanged", "changed-by-someone", "gone", "retry"]


async def read(client: KubeClient, namespace: str, name: str) -> ServiceView | None:
    found = await client.get_or_none(service_path(namespace, name))
    return None if found is None else ServiceView.of(found)


async def _patch(client: KubeClient, view: ServiceView, ops: list[dict[str, Any]]) -> bool:
    """Apply ``ops``; False when a ``test`` failed (someone changed the Service meanwhile)."""
    try:
        await client.patch(service_path(view.namespace, view.name), ops, JSON_PATCH)
    except ApiError as exc:
        # kube-apiserver answers a failed `test` with 422 (older versions: 409 or 500 with the
        # jsonpatch message); a Service deleted meanwhile is 404. All mean: read again.
        if exc.status in (404, 409, 422):
            log.info("service.patch_refused", namespace=view.namespace, service=view.name,
                     status=exc.status, error=str(exc))
            return False
        raise
    return True


async def switch(
    client: KubeClient, view: ServiceView, tunnel: str, selector: dict[str, str]
) -> bool:
    """Point ``view``'s Service at the tunnel pod, keeping its current selector in annotations."""
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/spec/selector", "value": view.selector}]
    ops.append({"op": "replace", "path": "/spec/selector", "value": selector})
    annotations = {
        ORIGINAL_ANNOTATION: json.dumps(view.selector, sort_keys=True),
        TUNNEL_ANNOTATION: tunnel,
    }
    ops.extend(_set_annotations(view, annotations))
    switched = await _patch(client, view, ops)
    if switched:
        log.info("service.switched", namespace=view.namespace, service=view.name,
                 tunnel=tunnel, original=view.selector)
    return switched


def _set_annotations(view: ServiceView, values: dict[str, str]) -> list[dict[str, Any]]:
    if view.has_annotations:
        return [{"op": "add", "path": _pointer(k), "value": v} for k, v in values.items()]
    # No annotation map yet: adding one whole would replace a map someone added since our read,
    # so this case is guarded by the resourceVersion as well.
    return [
        {"op": "test", "path": "/metadata/resourceVersion", "value": view.resource_version},
        {"op": "add", "path": "/metadata/annotations", "value": values},
    ]


def restore_ops(view: ServiceView, tunnel: str, tunnel_selector: dict[str, str] | None
                ) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": _pointer(TUNNEL_ANNOTATION), "value": tunnel},
        {"op": "test", "path": _pointer(ORIGINAL_ANNOTATION), "value": view.original_raw},
    ]
    if tunnel_selector is not None:
        ops.append({"op": "test", "path": "/spec/selector", "value": tunnel_selector})
        ops.append({"op": "replace", "path": "/spec/selector", "value": view.original})
    else:  # a person's selector stays; only our bookkeeping goes
        ops.append({"op": "test", "path": "/spec/selector", "value": view.selector})
    ops.append({"op": "remove", "path": _pointer(ORIGINAL_ANNOTATION)})
    ops.append({"op": "remove", "path": _pointer(TUNNEL_ANNOTATION)})
    return ops


async def restore(
    client: KubeClient, view: ServiceView, tunnel: str, tunnel_selector: dict[str, str]
) -> Outcome:
    """Put the original selector back if the Service still points at ``tunnel``.

    If a person changed the selector meanwhile, it is left as they set it and only the
    annotations go: ``changed-by-someone``. ``retry`` means the Service changed between our read
    and our patch; read again.
    """
    if view.tunnel != tunnel:
        return "unchanged"
    if view.original is None:
        # Unreadable original: refuse to guess. The annotation stays for a person to act on.
        log.error("service.original_unreadable", namespace=view.namespace, service=view.name,
                  annotation=view.original_raw)
        return "changed-by-someone"
    if view.selector == tunnel_selector:
        if await _patch(client, view, restore_ops(view, tunnel, tunnel_selector)):
            log.info("service.restored", namespace=view.namespace, service=view.name,
                     tunnel=tunnel, selector=view.original)
            return "restored"
        return "retry"
    if await _patch(client, view, restore_ops(view, tunnel, None)):
        log.warning("service.selector_kept", namespace=view.namespace, service=view.name,
                    tunnel=tunnel, selector=view.selector, original=view.original)
        return "changed-by-someone"
    return "retry"


async def annotated(client: KubeClient, namespaces: tuple[str, ...] | None) -> list[ServiceView]:
    """Every Service (in ``namespaces``, or all) that carries our tunnel annotation."""
    paths = [service_path(ns) for ns in namespaces] if namespaces else ["/api/v1/services"]
    found: list[ServiceView] = []
    for path in paths:
        listing = await client.get(path)
        for obj in listing.get("items") or []:
            if TUNNEL_ANNOTATION in ((obj.get("metadata") or {}).get("annotations") or {}):
                found.append(ServiceView.of(obj))
    return found
