"""Decoding and admitting a written object: kind checks, pruning of unknown fields (with the
``fieldValidation`` policy), defaulting, and validation, for built-ins and custom resources alike.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from modes.sandbox import admission, defaulting, ownership, schemas, validation
from modes.sandbox.errors import bad_request
from modes.sandbox.resources import ResourceRegistry, ResourceType

if TYPE_CHECKING:
    from modes.sandbox.storing import StoreCore, WriteOptions

Obj = dict[str, Any]
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def prepare(
    store: StoreCore, rt: ResourceType, obj: Obj, old: Obj | None, opts: WriteOptions
) -> None:
    """Prune unknown fields, default, validate: the decode-and-admit part of a write."""
    meta_node = schemas.Node.of_definition(OBJECT_META)
    drop_nulls(obj, None if rt.custom else schemas.Node.of_definition(rt.definition or ""))
    unknown = [f"metadata.{p}" for p in schemas.unknown_fields(obj.get("metadata"), meta_node)]
    if rt.custom:
        schema = rt.crd_schemas.get(rt.storage_version) or {}
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        node = schemas.Node(
            None,
            {k: v for k, v in schema.items() if k != "properties"}
            | {
                "properties": {
                    k: v
                    for k, v in (schema.get("properties") or {}).items()
                    if k not in ("apiVersion", "kind", "metadata")
                }
            },
            structural=True,
        )
        unknown += schemas.unknown_fields(body, node)
        for key in [k for k in obj if k not in ("apiVersion", "kind", "metadata")]:
            if key in body:
                obj[key] = body[key]
            else:
                del obj[key]
    elif rt.definition:
        node = schemas.Node.of_definition(rt.definition)
        unknown += [u for u in schemas.unknown_fields(obj, node) if not u.startswith("metadata")]
    if unknown and opts.field_validation == "Strict":
        raise bad_request(
            "strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown)
        )
    if opts.field_validation != "Ignore":
        opts.warnings += [f'unknown field "{u}"' for u in unknown]
    if rt.custom:
        schema = rt.crd_schemas.get(rt.storage_version) or {}
        validation.apply_defaults(obj, schema)
        causes = validation.validate_custom(obj, schema) if schema else []
        if old is not None:
            causes += validation.transition_rules(obj, old, schema)
    else:
        # Types first, as kube-apiserver's decoder does: defaulting only sees well-typed objects.
        causes = validation.validate_builtin(obj, rt.definition or "", rt.kind, rt.group)
        admission.check_decoding(rt, obj)
        defaulting.apply(rt.key, obj, store.alloc)
        drop_empty(obj, schemas.Node.of_definition(rt.definition or ""))
    meta = obj["metadata"]
    pattern = admission.name_pattern(rt)
    causes = validation.check_metadata(meta, pattern or validation.DNS1123_SUBDOMAIN) + causes
    if pattern is None:
        causes = [c for c in causes if c["field"] != "metadata.name"]
    causes += admission.check(rt, obj, old)
    for hook in store.validators.get(rt.key, ()):
        causes += hook(obj, old)
    validation.raise_if(causes, rt.kind, rt.group, meta.get("name", ""))


def drop_nulls(obj: Any, node: schemas.Node | None) -> None:
    """A JSON null is an omitted field (Go decodes it to the zero value and omits it again);
    for custom resources, unless the schema says ``nullable``."""
    if isinstance(obj, dict):
        for key in list(obj):
            child = node.field(key) if node is not None else None
            if obj[key] is None and not (child is not None and child.shape.get("nullable")):
                del obj[key]
            else:
                drop_nulls(obj[key], child)
    elif isinstance(obj, list):
        items = node.items() if node is not None else None
        kinds = items.shape.get("type") if items is not None else None
        kinds = kinds if isinstance(kinds, list) else [kinds]
        for i, item in enumerate(obj):
            if item is None and node is not None and not node.structural:
                # A null element of a built-in list decodes to the element type's zero value.
                zero = {"object": {}, "string": "", "integer": 0, "boolean": False}
                obj[i] = next((zero[k] for k in kinds if k in zero), None)
            drop_nulls(obj[i], items)


def drop_empty(obj: Any, node: schemas.Node | None) -> None:
    """Built-ins only: an empty optional map or list is not sent back (Go's ``omitempty``)."""
    if not isinstance(obj, dict) or node is None:
        return
    required = set(node.shape.get("required") or ())
    for key in list(obj):
        child = node.field(key)
        value = obj[key]
        if child is None:
            continue
        if isinstance(value, dict):
            drop_empty(value, child)
            is_map = "properties" not in child.shape and isinstance(
                child.shape.get("additionalProperties"), dict
            )
            if not value and is_map and key not in required:
                del obj[key]
        elif isinstance(value, list):
            items = child.items()
            for item in value:
                drop_empty(item, items)
            if not value and key not in required:
                del obj[key]


def check_metadata_types(rt: ResourceType, obj: Obj) -> None:
    """ObjectMeta's types (400 when wrong) before anything reads metadata, custom kinds too."""
    meta = obj.get("metadata")
    if meta is not None:
        validation.validate_builtin(meta, OBJECT_META, rt.kind, rt.group, version=rt.api_version())


def check_kind(registry: ResourceRegistry, rt: ResourceType, obj: Any) -> Obj:
    if not isinstance(obj, dict):
        raise bad_request("the body of the request must be a JSON object")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if (kind and kind != rt.kind) or (
        api_version and registry.by_kind(api_version, rt.kind) is not rt
    ):
        raise bad_request(
            f"the API version in the data ({api_version}) does not match the expected API "
            f"version ({rt.api_version()})"
            if kind == rt.kind
            else f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
        )
    obj["apiVersion"] = rt.api_version()
    obj["kind"] = rt.kind
    if not isinstance(obj.get("metadata"), dict):
        obj["metadata"] = {}
    return obj


def carry_over(
    rt: ResourceType, obj: Obj, old: Obj, namespace: str, name: str, subresource: str | None
) -> tuple[Obj, bool]:
    """What an update keeps from the stored object: status or everything but status (the
    status subresource), server-set metadata, managedFields unless the client wrote them.

    Returns the object to store and whether the client wrote managedFields itself.
    """
    if subresource == "status":
        # Only status changes through /status; everything else stays as stored.
        status = obj.get("status")
        obj = copy.deepcopy(old)
        if status is None:
            obj.pop("status", None)
        else:
            obj["status"] = status
    elif rt.has_status:
        obj.pop("status", None)
        if "status" in old:
            obj["status"] = copy.deepcopy(old["status"])
    meta = obj["metadata"]
    for key in (
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ):
        if key in old["metadata"]:
            meta[key] = old["metadata"][key]
        else:
            meta.pop(key, None)
    meta["name"] = name
    if rt.namespaced:
        meta["namespace"] = namespace
    old_managed = old["metadata"].get("managedFields")
    # A client may write managedFields itself (kubectl does, to migrate client-side apply
    # ownership); [{}] clears them; leaving them out keeps them.
    given = meta.get("managedFields")
    explicit = given not in (None, []) and not ownership.same_entries(given, old_managed)
    if explicit:
        meta["managedFields"] = [m for m in meta["managedFields"] if m.get("manager")]
        if not meta["managedFields"]:
            del meta["managedFields"]
    elif old_managed is not None:
        meta["managedFields"] = copy.deepcopy(old_managed)
    else:
        meta.pop("managedFields", None)
    return obj, explicit
