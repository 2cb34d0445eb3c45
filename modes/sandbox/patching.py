"""The three PATCH formats kube-apiserver accepts besides apply: JSON Patch (RFC 6902), JSON
merge patch (RFC 7386) and strategic merge patch, whose list handling comes from the official
schemas' ``x-kubernetes-patch-strategy`` and ``x-kubernetes-patch-merge-key``.

JSON Patch is written here rather than taken from a library so that its failures map onto the
API's error reasons (a malformed patch is 400, a patch that cannot apply is 422).
"""

from __future__ import annotations

import copy
from typing import Any

from kubetunnel.logging import get_logger
from modes.sandbox.errors import ApiError, bad_request
from modes.sandbox.schemas import Node

log = get_logger(__name__)

Obj = dict[str, Any]


def _unprocessable(message: str) -> ApiError:
    # kube-apiserver answers every failed JSON patch with this generic 422 (its reason is only
    # logged); the sandbox keeps the reason in the log too, so a failing patch can be debugged.
    log.info("patch.rejected", reason=message)
    return ApiError(422, "Invalid",
                    "the server rejected our request due to an error in our request", details={})


# --- RFC 6902 -------------------------------------------------------------------------------


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str):
        raise bad_request(f"invalid JSON pointer {path!r}: must be a string")
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer {path!r}: must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, *, adding: bool) -> int:
    if adding and token == "-":  # noqa: S105 - a JSON pointer token, not a secret
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise _unprocessable(f"invalid array index {token!r}")
    index = int(token)
    if index > len(container) or (not adding and index == len(container)):
        raise _unprocessable(f"array index {index} out of bounds")
    return index


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, adding=False)]
        else:
            raise _unprocessable(f"doc is missing path: {path!r}")
    return node


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, adding=False)]
    raise _unprocessable(f"doc is missing path: {path!r}")


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise _unprocessable("cannot remove the whole document")
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, adding=False))
    raise _unprocessable(f"unable to remove nonexistent key: {last}: missing value")


def _add(doc: Any, path: str, value: Any, *, replace: bool = False) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise _unprocessable(f"replace operation does not apply: doc is missing key: {path}")
        parent[last] = value
    elif isinstance(parent, list):
        if replace:
            parent[_index(parent, last, adding=False)] = value
        else:
            parent.insert(_index(parent, last, adding=True), value)
    else:
        raise _unprocessable(f"doc is missing path: {path!r}")
    return doc


def json_patch(doc: Obj, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"invalid json patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise bad_request(f'json patch operation "{kind}" needs a value')
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            doc = _add(doc, path, copy.deepcopy(op["value"]), replace=True)
        elif kind in ("move", "copy"):
            if "from" not in op:
                raise bad_request(f'json patch operation "{kind}" needs "from"')
            value = (
                _remove(doc, op["from"]) if kind == "move" else copy.deepcopy(_get(doc, op["from"]))
            )
            doc = _add(doc, path, value)
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise _unprocessable(f"testing value {path} failed: test failed")
        else:
            raise bad_request(f"unexpected json patch operation {kind!r}")
    return doc


# --- RFC 7386 -------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- strategic merge patch ------------------------------------------------------------------

DIRECTIVE = "$patch"
RETAIN = "$retainKeys"
DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"
SET_ORDER = "$setElementOrder/"


def strategic_merge(original: Any, patch: Any, node: Node | None) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(original, dict):
        original = {}
    directive = patch.get(DIRECTIVE)
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != DIRECTIVE}
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise bad_request(f"unknown patch type: {directive!r}")
    result = copy.deepcopy(original)
    if RETAIN in patch:
        if not isinstance(patch[RETAIN], list | None):
            raise bad_request(f"{RETAIN} must be a list of field names")
        keep = set(patch[RETAIN] or [])
        for key in list(result):
            if key not in keep:
                del result[key]
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in (RETAIN, DIRECTIVE):
            continue
        if key.startswith(SET_ORDER):
            if not isinstance(value, list | None):
                raise bad_request(f"{key} must be a list")
            orders[key[len(SET_ORDER) :]] = list(value or [])
            continue
        if key.startswith(DELETE_PRIMITIVE):
            field = key[len(DELETE_PRIMITIVE) :]
            if not isinstance(value, list | None):
                raise bad_request(f"{key} must be a list")
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in (value or [])]
            continue
        child = node.field(key) if node is not None else None
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value, child)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif (
            isinstance(value, list)
            and child is not None
            and "merge" in child.patch_strategy.split(",")
        ):
            result[key] = _merge_list(result.get(key) or [], value, child)
        else:
            result[key] = copy.deepcopy(value)
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            child = node.field(field) if node is not None else None
            result[field] = _ordered(result[field], order, child.merge_key if child else None)
    return result


def _merge_list(original: list[Any], patch: list[Any], node: Node) -> list[Any]:
    key = node.merge_key
    items = node.items()
    if any(isinstance(p, dict) and p.get(DIRECTIVE) == "replace" for p in patch):
        return [
            copy.deepcopy(p)
            for p in patch
            if not (isinstance(p, dict) and p.get(DIRECTIVE) == "replace")
        ]
    if key is None:  # a list of scalars merged as a set
        result = list(original)
        for value in patch:
            if value not in result:
                result.append(copy.deepcopy(value))
        return result
    result = [copy.deepcopy(o) for o in original]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise bad_request(f"map: {item!r} does not contain declared merge key: {key}")
        at = next(
            (i for i, o in enumerate(result) if isinstance(o, dict) and o.get(key) == item[key]),
            None,
        )
        if item.get(DIRECTIVE) == "delete":
            if at is not None:
                del result[at]
        elif at is None:
            result.append(strategic_merge({}, item, items))
        else:
            result[at] = strategic_merge(result[at], item, items)
    return result


def _ordered(values: list[Any], order: list[Any], key: str | None) -> list[Any]:
    def ident(v: Any) -> Any:
        return v.get(key) if key and isinstance(v, dict) else v

    wanted = [ident(o) for o in order]
    rank = {repr(w): i for i, w in enumerate(wanted)}
    indexed = list(enumerate(values))
    indexed.sort(key=lambda p: rank.get(repr(ident(p[1])), len(rank) + p[0]))
    return [v for _, v in indexed]
