"""PATCH dispatch by Content-Type, and server-side apply.

Server-side apply records, per field manager, the set of fields its last applied configuration
contained (``metadata.managedFields``, FieldsV1 format). Applying again merges the new
configuration into the live object (maps by key, ``x-kubernetes-list-type: map`` lists by their
keys, sets by value, everything else replaced) and removes the fields this manager applied
before but no longer does and nobody else owns. Ownership and conflicts: see ``ownership``.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

import yaml

from modes.sandbox import ownership, patching, schemas
from modes.sandbox.errors import (
    ApiError,
    bad_request,
    cause,
    invalid,
    not_found,
    unsupported_media_type,
)
from modes.sandbox.resources import ResourceType

if TYPE_CHECKING:
    from modes.sandbox.storing import StoreCore, WriteOptions

Obj = dict[str, Any]
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH)


def schema_node(rt: ResourceType) -> schemas.Node | None:
    if rt.definition:
        return schemas.Node.of_definition(rt.definition)
    schema = rt.crd_schemas.get(rt.storage_version)
    return schemas.Node(None, schema, structural=True) if schema else None


def patch(
    store: StoreCore,
    rt: ResourceType,
    namespace: str,
    name: str,
    content_type: str,
    raw: bytes,
    opts: WriteOptions,
    subresource: str | None = None,
) -> Obj:
    media = content_type.split(";")[0].strip().lower()
    if media not in PATCH_TYPES:
        raise unsupported_media_type(media)
    if media == STRATEGIC_PATCH and rt.custom:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types "
            f"include: {JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}",
        )
    try:
        body = yaml.safe_load(raw) if media == APPLY_PATCH else json.loads(raw or b"null")
    except (ValueError, yaml.YAMLError) as exc:
        raise bad_request(f"error decoding patch: {exc}") from None
    if media == APPLY_PATCH:
        return apply(store, rt, namespace, name, body, opts, subresource)
    current = store.get(rt, namespace, name)
    if media == JSON_PATCH:
        new = patching.json_patch(current, body)
    elif media == MERGE_PATCH:
        if not isinstance(body, dict):
            raise bad_request("merge patch must be a JSON object")
        new = patching.merge_patch(current, body)
    else:
        if not isinstance(body, dict):
            raise bad_request("strategic merge patch must be a JSON object")
        new = patching.strategic_merge(current, body, schema_node(rt))
    if not isinstance(new, dict):
        raise bad_request("the patch does not produce an object")
    return store.update(rt, new, namespace, name, opts, subresource=subresource)


def merge(live: Any, applied: Any, node: schemas.Node | None) -> Any:
    if (
        isinstance(applied, dict)
        and isinstance(live, dict)
        and (node is None or node.map_type != "atomic")
    ):
        result = copy.deepcopy(live)
        for key, value in applied.items():
            result[key] = merge(live.get(key), value, node.field(key) if node else None)
        return result
    if isinstance(applied, list) and isinstance(live, list):
        kind, keys = ownership.list_kind(node)
        items = node.items() if node else None
        if kind == "map" and keys:
            merged = [copy.deepcopy(i) for i in live]
            for item in applied:
                at = next(
                    (
                        n
                        for n, i in enumerate(merged)
                        if ownership.item_key(i, keys) == ownership.item_key(item, keys)
                    ),
                    None,
                )
                if at is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[at] = merge(merged[at], item, items)
            return merged
        if kind == "set":
            return [*copy.deepcopy(live), *[copy.deepcopy(i) for i in applied if i not in live]]
    return copy.deepcopy(applied)


def _remove(obj: Any, path: ownership.Path) -> None:
    parent, last = obj, path[-1]
    for kind, value in path[:-1]:
        parent = _step(parent, kind, value)
        if parent is None:
            return
    kind, value = last
    if kind == "f" and isinstance(parent, dict):
        parent.pop(value, None)
    elif isinstance(parent, list):
        for i, item in enumerate(parent):
            by_key = kind == "k" and ownership.item_key(item, list(json.loads(value))) == value
            by_value = (
                kind == "v" and json.dumps(item, sort_keys=True, separators=(",", ":")) == value
            )
            if by_key or by_value:
                del parent[i]
                return


def _step(node: Any, kind: str, value: str) -> Any:
    if kind == "f":
        return node.get(value) if isinstance(node, dict) else None
    if kind == "k" and isinstance(node, list):
        keys = list(json.loads(value))
        return next(
            (i for i in node if isinstance(i, dict) and ownership.item_key(i, keys) == value), None
        )
    return None


# List-map key fields that the API defaults: an apply configuration that leaves them out still
# means the live item with the default (kube-apiserver defaults them before merging, too).
KEY_DEFAULTS = {"protocol": "TCP"}


def _default_map_keys(obj: Any, node: schemas.Node | None) -> None:
    if node is None:
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            _default_map_keys(value, node.field(key))
    elif isinstance(obj, list):
        kind, keys = ownership.list_kind(node)
        items = node.items()
        for item in obj:
            if kind == "map" and isinstance(item, dict):
                for key in keys:
                    if key in KEY_DEFAULTS and key not in item:
                        item[key] = KEY_DEFAULTS[key]
            _default_map_keys(item, items)


def apply(
    store: StoreCore,
    rt: ResourceType,
    namespace: str,
    name: str,
    body: Any,
    opts: WriteOptions,
    subresource: str | None = None,
) -> Obj:
    if not isinstance(body, dict):
        raise bad_request("apply patch must be an object")
    manager = opts.field_manager
    if not manager or opts.derived_manager:
        raise invalid("PatchOptions", "meta.k8s.io", "", [cause(
            "fieldManager", "FieldValueRequired", "Required value: is required for apply patch")])
    meta = body.get("metadata") or {}
    if not isinstance(meta, dict):
        raise bad_request("metadata of an apply configuration must be an object")
    if meta.get("name") and meta["name"] != name:
        raise bad_request(
            f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
        )
    if not body.get("apiVersion") or not body.get("kind"):
        raise bad_request("apiVersion and kind must be set in an apply configuration")
    node = schema_node(rt)
    _default_map_keys(body, node)
    applied = ownership.fields(body, node)
    opts.applying = True  # ownership is settled here, not by the generic update tracking
    try:
        live = store.get(rt, namespace, name)
    except ApiError as exc:
        if exc.code != 404 or subresource:
            raise
        new = copy.deepcopy(body)
        new.setdefault("metadata", {})["name"] = name
        new["metadata"]["managedFields"] = [
            ownership.entry(manager, "Apply", rt.api_version(), set(applied), subresource)
        ]
        return store.create(rt, new, namespace, opts)
    managed, dropped = ownership.apply_ownership(
        live,
        applied,
        node,
        manager,
        opts.force,
        rt.api_version(),
        subresource,
        rt.plural,
        rt.group,
        name,
    )
    merged = merge(live, body, node)
    if not isinstance(merged.get("metadata"), dict):
        merged["metadata"] = copy.deepcopy(live["metadata"])
    for path in sorted(dropped, key=len, reverse=True):
        if path != (("f", "metadata"),):  # metadata itself always stays
            _remove(merged, path)
    merged["metadata"]["managedFields"] = managed
    merged["metadata"]["resourceVersion"] = (
        live["metadata"]["resourceVersion"]
        if not meta.get("resourceVersion")
        else meta["resourceVersion"]
    )
    return store.update(rt, merged, namespace, name, opts, subresource=subresource)


__all__ = ["PATCH_TYPES", "apply", "not_found", "patch"]
