"""OpenAPI documents, built from the same definitions the sandbox validates with.

kubectl reads OpenAPI v3 per group-version (``/openapi/v3`` then ``/openapi/v3/apis/<g>/<v>``)
to learn patch strategies for client-side apply and to see that the server takes the
``fieldValidation`` parameter; ``/openapi/v2`` is the older single document.
Custom resources appear with their CRD's schema.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from aiohttp import web

from modes.sandbox import openapi_proto, schemas
from modes.sandbox.errors import ApiError, method_not_allowed, page_not_found
from modes.sandbox.resources import ResourceRegistry, ResourceType

Obj = dict[str, Any]
INFO = {"title": "Kubernetes", "version": "v1.37.0-kubetunnel-sandbox"}


def _convert(node: Any, prefix: str) -> Any:
    """JSON Schema (kubernetes-validate's form) back to OpenAPI: nullable types, refs."""
    if isinstance(node, list):
        return [_convert(n, prefix) for n in node]
    if not isinstance(node, dict):
        return node
    out: Obj = {}
    for key, value in node.items():
        if key == "$ref":
            out[key] = prefix + value.rpartition("/")[2]
        elif key == "type" and isinstance(value, list):
            kinds = [v for v in value if v != "null"]
            out[key] = kinds[0] if len(kinds) == 1 else kinds
        elif key in ("properties", "patternProperties"):
            out[key] = {k: _convert(v, prefix) for k, v in value.items()}
        elif key == "oneOf" and all(isinstance(v, dict) and "type" in v for v in value):
            out["type"], out["format"] = "string", "int-or-string"
        else:
            out[key] = _convert(value, prefix)
    if "$ref" in out and len(out) > 1:  # OpenAPI ignores siblings of $ref; keep them via allOf
        ref = out.pop("$ref")
        out["allOf"] = [{"$ref": ref}]
    return out


@functools.cache
def _v2_definitions() -> Obj:
    return {k: _convert(v, "#/definitions/") for k, v in schemas.definitions().items()}


@functools.cache
def _v2_builtin_proto() -> bytes:
    return openapi_proto.named_schemas(_v2_definitions())


@functools.cache
def _v3_schemas() -> Obj:
    return {k: _convert(v, "#/components/schemas/") for k, v in schemas.definitions().items()}


def _custom_schema(rt: ResourceType, version: str) -> Obj:
    schema: Obj = json.loads(json.dumps(rt.crd_schemas.get(version) or {"type": "object"}))
    schema["x-kubernetes-group-version-kind"] = [
        {"group": rt.group, "version": version, "kind": rt.kind}
    ]
    props = schema.setdefault("properties", {})
    props["metadata"] = {
        "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    }
    return schema


def _custom_name(rt: ResourceType, version: str) -> str:
    return ".".join(reversed(rt.group.split("."))) + f".{version}.{rt.kind}"


def _operations(rt: ResourceType, version: str, name: str) -> Obj:
    gvk = {"group": rt.group, "version": version, "kind": rt.kind}
    ref = {"$ref": f"#/components/schemas/{name}"}
    field_validation = {
        "name": "fieldValidation",
        "in": "query",
        "schema": {"type": "string", "uniqueItems": True},
    }
    body = {"content": {"*/*": {"schema": ref}}, "required": True}
    ok = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}

    def op(verb: str, action: str, **extra: Any) -> Obj:
        return {
            "operationId": f"{verb}{rt.kind}",
            "responses": ok,
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            **extra,
        }

    return {
        "get": op("read", "get"),
        "put": op("replace", "put", parameters=[field_validation], requestBody=body),
        "patch": op("patch", "patch", parameters=[field_validation], requestBody=body),
        "delete": op("delete", "delete"),
    }


def v3_document(registry: ResourceRegistry, group: str, version: str) -> Obj | None:
    types = registry.in_group_version(group, version)
    if not types and not (group == "" and version == "v1"):
        return None
    components: Obj = {}
    paths: Obj = {}
    all_schemas = _v3_schemas()
    for rt in types:
        if rt.custom:
            name = _custom_name(rt, version)
            components[name] = _custom_schema(rt, version)
        else:
            name = rt.definition or ""
        base = rt.base_path(version) + ("/namespaces/{namespace}" if rt.namespaced else "")
        paths[f"{base}/{rt.plural}/{{name}}"] = _operations(rt, version, name)
        paths[f"{base}/{rt.plural}"] = {
            "post": {
                **_operations(rt, version, name)["put"],
                "operationId": f"create{rt.kind}",
                "x-kubernetes-action": "post",
            }
        }
    # Every definition is included: references cross group boundaries (ObjectMeta, PodSpec).
    return {
        "openapi": "3.0.0",
        "info": INFO,
        "paths": paths,
        "components": {"schemas": {**all_schemas, **components}},
    }


def _hash(doc: Obj) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:64].upper()


def handle(request: web.Request, registry: ResourceRegistry, parts: list[str]) -> web.Response:
    if request.method != "GET":
        raise method_not_allowed()
    if parts == ["v2"]:
        customs: Obj = {}
        for rt in registry:
            if rt.custom:
                for version in rt.versions:
                    customs[_custom_name(rt, version)] = json.loads(
                        json.dumps(_custom_schema(rt, version)).replace(
                            "#/components/schemas/", "#/definitions/"
                        )
                    )
        accept = request.headers.get("Accept", "")
        if any(t in accept for t in openapi_proto.ACCEPTED) and "json" not in accept:
            # What kubectl asks for when it validates a kind: List file.
            body = openapi_proto.document(
                INFO, _v2_builtin_proto() + openapi_proto.named_schemas(customs))
            return web.Response(body=body, content_type=openapi_proto.MEDIA_TYPE)
        if accept and "json" not in accept and "*/*" not in accept:
            raise ApiError(406, "NotAcceptable",
                           f"/openapi/v2 is served as application/json or "
                           f"{openapi_proto.MEDIA_TYPE} (asked for {accept})")
        definitions = {**_v2_definitions(), **customs}
        return _json({"swagger": "2.0", "info": INFO, "paths": {}, "definitions": definitions})
    if parts == ["v3"]:
        index = {"api/v1": "/openapi/v3/api/v1"}
        for group, versions in registry.groups().items():
            for version in versions:
                index[f"apis/{group}/{version}"] = f"/openapi/v3/apis/{group}/{version}"
        return _json(
            {
                "paths": {
                    k: {"serverRelativeURL": f"{v}?hash={_index_hash(registry, k)}"}
                    for k, v in index.items()
                }
            }
        )
    if len(parts) >= 3 and parts[0] == "v3":
        if parts[1] == "api" and len(parts) == 3:
            doc = v3_document(registry, "", parts[2])
        elif parts[1] == "apis" and len(parts) == 4:
            doc = v3_document(registry, parts[2], parts[3])
        else:
            doc = None
        if doc is not None:
            return _json(doc)
    raise page_not_found()


def _index_hash(registry: ResourceRegistry, key: str) -> str:
    # Changes whenever the served types of the group-version change (CRDs), so clients refetch.
    types = sorted(
        (rt.plural, rt.kind, json.dumps(rt.crd_schemas, sort_keys=True))
        for rt in registry
        if key.endswith(f"/{rt.versions[0]}")
        and (rt.group in key or (not rt.group and key == "api/v1"))
    )
    return hashlib.sha256(json.dumps(types).encode()).hexdigest()[:32].upper()


@functools.lru_cache(maxsize=64)
def _encode(text: str) -> bytes:
    return text.encode()


def _json(doc: Obj) -> web.Response:
    return web.Response(
        body=json.dumps(doc, separators=(",", ":")).encode(), content_type="application/json"
    )
