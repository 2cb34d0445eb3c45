"""The ``scale`` subresource: replicas read and written through an autoscaling/v1 ``Scale``."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from aiohttp import web

from modes.sandbox import patching, tables
from modes.sandbox.errors import bad_request, method_not_allowed
from modes.sandbox.responses import respond

if TYPE_CHECKING:
    from modes.sandbox.resources import Target
    from modes.sandbox.storage import Store, WriteOptions

Obj = dict[str, Any]


async def serve_scale(
    store: Store, request: web.Request, t: Target, body: Any, opts: WriteOptions
) -> web.Response:
    """GET/PUT/PATCH of a ``Scale`` view (autoscaling/v1) of a deployment or custom resource."""
    assert t.name is not None
    ns = t.namespace or ""
    obj = store.get(t.rt, ns, t.name)
    spec_path, status_path, selector_path = (
        ".spec.replicas",
        ".status.replicas",
        ".status.selector",
    )
    if t.rt.crd_scale:
        spec_path = t.rt.crd_scale.get("specReplicasPath", spec_path)
        status_path = t.rt.crd_scale.get("statusReplicasPath", status_path)
        selector_path = t.rt.crd_scale.get("labelSelectorPath", "")
    scale = _scale_of(obj, spec_path, status_path, selector_path)
    if request.method == "GET":
        return respond(scale)
    if request.method == "PUT":
        wanted = body
    elif request.method == "PATCH":
        wanted = (
            patching.merge_patch(scale, body or {})
            if "merge" in request.headers.get("Content-Type", "")
            else patching.json_patch(scale, body or [])
        )
    else:
        raise method_not_allowed()
    replicas = ((wanted or {}).get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        raise bad_request("spec.replicas: Invalid value: must be a non-negative integer")
    new = copy.deepcopy(obj)
    node = new
    keys = spec_path.lstrip(".").split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = replicas
    updated = store.update(t.rt, new, ns, t.name, opts)
    return respond(_scale_of(updated, spec_path, status_path, selector_path))


def _scale_of(obj: Obj, spec_path: str, status_path: str, selector_path: str) -> Obj:
    replicas = tables.json_path(obj, spec_path) or 0
    status: Obj = {"replicas": tables.json_path(obj, status_path) or 0}
    selector = tables.json_path(obj, selector_path) if selector_path else None
    spec_selector = (obj.get("spec") or {}).get("selector")
    if selector:
        status["selector"] = selector
    elif isinstance(spec_selector, dict):
        labels = spec_selector.get("matchLabels") or {}
        status["selector"] = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    meta = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": replicas},
        "status": status,
    }
