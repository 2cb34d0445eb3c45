"""Field ownership (``metadata.managedFields``): who set which field, as server-side apply needs.

Every write with a field manager (the ``fieldManager`` parameter, or the client's User-Agent
product as kube-apiserver derives it) records the fields it changed under an ``Update`` entry and
takes them away from other managers. An apply records the fields of its configuration under an
``Apply`` entry; applying a value to a field another manager owns, where the value differs, is a
409 conflict unless ``force`` is set. Paths are FieldsV1 paths: ``f:`` fields, ``k:`` list-map
items by their keys, ``v:`` set members.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from modes.sandbox import schemas
from modes.sandbox.errors import ApiError

Obj = dict[str, Any]
Path = tuple[tuple[str, str], ...]
CLIENT_SIDE_APPLY = "kubectl-client-side-apply"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# Metadata the server owns; never part of anybody's field set.
SERVER_METADATA = frozenset(
    {
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "managedFields",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    }
)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def list_kind(node: schemas.Node | None) -> tuple[str, list[str]]:
    """("map", keys) | ("set", []) | ("atomic", [])."""
    if node is None:
        return "atomic", []
    if node.list_type == "map" or (not node.list_type and node.merge_key):
        return "map", node.list_map_keys or ([node.merge_key] if node.merge_key else [])
    return ("set", []) if node.list_type == "set" else ("atomic", [])


def item_key(item: Any, keys: list[str]) -> str:
    return _canonical({k: item.get(k) for k in keys if isinstance(item, dict) and k in item})


def fields(obj: Any, node: schemas.Node | None, path: Path = ()) -> dict[Path, str | None]:
    """Every field path of ``obj``; leaves map to their canonical JSON, inner nodes to None."""
    found: dict[Path, str | None] = {}
    if isinstance(obj, dict) and obj and (node is None or node.map_type != "atomic"):
        for key, value in obj.items():
            if not path and key in ("apiVersion", "kind"):
                continue
            if path == (("f", "metadata"),) and key in SERVER_METADATA:
                continue
            child = (*path, ("f", key))
            child_node = node.field(key) if node else None
            inner = fields(value, child_node, child)
            granular = (
                isinstance(value, dict)
                and value
                and (child_node is None or child_node.map_type != "atomic")
            )
            if granular and not inner:
                continue  # only server-owned metadata inside: nothing anybody manages
            found[child] = None if inner else _canonical(value)
            found.update(inner)
    elif isinstance(obj, list) and obj:
        kind, keys = list_kind(node)
        items = node.items() if node else None
        for item in obj:
            if kind == "map" and keys and isinstance(item, dict):
                child = (*path, ("k", item_key(item, keys)))
                found[child] = None
                found.update(fields(item, items, child))
            elif kind == "set":
                found[(*path, ("v", _canonical(item)))] = "true"
    return found


def encode(paths: set[Path]) -> Obj:
    root: Obj = {}
    for path in sorted(paths):
        node = root
        for kind, value in path:
            node = node.setdefault(f"{kind}:{value}", {})
    _mark(root)
    return root


def _mark(node: Obj, top: bool = True) -> None:
    for key, child in node.items():
        if child:
            # kube-apiserver strips the path "metadata" itself from every managed set.
            if not (top and key == "f:metadata"):
                child.setdefault(".", {})
            _mark(child, top=False)


def decode(encoded: Obj | None, path: Path = ()) -> set[Path]:
    found: set[Path] = set()
    for key, child in (encoded or {}).items():
        if key == ".":
            continue
        kind, _, value = key.partition(":")
        child_path = (*path, (kind, value))
        found.add(child_path)
        found |= decode(child, child_path)
    return found


def readable(path: Path) -> str:
    """``.spec.containers[name="app"].image``, as apply conflicts name fields."""
    out = ""
    for kind, value in path:
        if kind == "f":
            out += f".{value}"
        elif kind == "k":
            out += (
                "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in json.loads(value).items()) + "]"
            )
        else:
            out += f"[{value}]"
    return out


def _instant(value: Any) -> Any:
    try:
        return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return value


def same_entries(a: Any, b: Any) -> bool:
    """Equal managedFields, whatever the clients' timestamp spelling (Z or +00:00)."""
    if not isinstance(a, list) or not isinstance(b, list) or len(a) != len(b):
        return bool(a == b)
    return all(
        isinstance(x, dict)
        and isinstance(y, dict)
        and {**x, "time": _instant(x.get("time"))} == {**y, "time": _instant(y.get("time"))}
        for x, y in zip(a, b, strict=True)
    )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def entry(
    manager: str, operation: str, api_version: str, paths: set[Path], subresource: str | None
) -> Obj:
    made: Obj = {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": _now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": encode(paths),
    }
    if subresource:
        made["subresource"] = subresource
    return made


def _same(e: Obj, manager: str, operation: str, subresource: str | None) -> bool:
    return (
        e.get("manager") == manager
        and e.get("operation") == operation
        and e.get("subresource") == subresource
    )


def _rebuild(entries: list[tuple[Obj, set[Path]]]) -> list[Obj]:
    out = []
    for e, paths in entries:
        if not paths:
            continue  # a manager that owns nothing any more is dropped, as in kube
        encoded = encode(paths)
        if encoded != e.get("fieldsV1"):
            e = {**e, "fieldsV1": encoded, "time": _now()}
        out.append(e)
    return out


def track_update(
    old: Obj | None,
    new: Obj,
    node: schemas.Node | None,
    manager: str,
    api_version: str,
    subresource: str | None,
) -> list[Obj]:
    """managedFields after a non-apply write by ``manager``: it owns what it changed."""
    before = fields(old, node) if old is not None else {}
    after = fields(new, node)
    changed = {p for p, v in after.items() if p not in before or (v is not None and before[p] != v)}
    removed = set(before) - set(after)
    current = (old or {}).get("metadata", {}).get("managedFields") or []
    entries = [(e, decode(e.get("fieldsV1")) - changed - removed) for e in current]
    mine = next((pair for pair in entries if _same(pair[0], manager, "Update", subresource)), None)
    if mine is None:
        if changed:
            entries.append((entry(manager, "Update", api_version, set(), subresource), changed))
    else:
        mine[1].update(changed)
    return _rebuild(entries)


def apply_ownership(
    live: Obj,
    applied: dict[Path, str | None],
    node: schemas.Node | None,
    manager: str,
    force: bool,
    api_version: str,
    subresource: str | None,
    plural: str,
    group: str,
    name: str,
) -> tuple[list[Obj], set[Path]]:
    """(managedFields after the apply, fields this manager stopped applying and nobody owns).

    Raises 409 Conflict when the applied value of a field owned by another manager differs.
    """
    live_fields = fields(live, node)
    entries = [(e, decode(e.get("fieldsV1"))) for e in live["metadata"].get("managedFields") or []]
    upgraded = _last_applied(live, node)
    conflicts: dict[str, list[Path]] = {}
    lost: set[Path] = set()
    for e, owned in entries:
        if e.get("manager") == manager or e.get("subresource") != subresource:
            continue
        for path, value in applied.items():
            if value is not None and path in owned and live_fields.get(path, value) != value:
                if e.get("manager") == CLIENT_SIDE_APPLY and path in upgraded:
                    lost.add(path)  # moving from client-side apply: ownership transfers
                else:
                    conflicts.setdefault(_printed_manager(e), []).append(path)
    if conflicts and not force:
        raise conflict_error(conflicts)
    lost |= {p for paths in conflicts.values() for p in paths}
    previous: set[Path] = set()
    kept: list[tuple[Obj, set[Path]]] = []
    for e, owned in entries:
        if _same(e, manager, "Apply", subresource):
            previous = owned
            continue
        kept.append((e, owned - lost))
    mine = entry(manager, "Apply", api_version, set(applied), subresource)
    for e, _ in entries:
        if _same(e, manager, "Apply", subresource) and e.get("fieldsV1") == mine["fieldsV1"]:
            mine["time"] = e.get("time", mine["time"])
    others = set().union(*(owned for _, owned in kept)) if kept else set()
    dropped = {p for p in previous - set(applied) if not any(o[: len(p)] == p for o in others)}
    kept.append((mine, set(applied)))
    return _rebuild(kept), dropped


def _last_applied(live: Obj, node: schemas.Node | None) -> set[Path]:
    """Fields of kubectl's last-applied annotation: kube-apiserver lets an apply take them over
    from client-side apply without conflicts, so ``kubectl apply --server-side`` can follow
    ``kubectl apply``."""
    annotation = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if not annotation:
        return set()
    try:
        return set(fields(json.loads(annotation), node))
    except ValueError:
        return set()


def _printed_manager(entry: Obj) -> str:
    """A manager as kube-apiserver's conflict messages print it: an Update names its version
    and time, an Apply only its name."""
    printed = json.dumps(str(entry.get("manager")))
    if entry.get("subresource"):
        printed += f' with subresource {json.dumps(entry["subresource"])}'
    if entry.get("operation") == "Update":
        printed += f" using {entry.get('apiVersion')}"
        if entry.get("time"):
            printed += f" at {entry['time']}"
    return printed


def conflict_error(conflicts: dict[str, list[Path]]) -> ApiError:
    count = sum(len(paths) for paths in conflicts.values())
    # The Status names no object, as kube-apiserver's does not.
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f"conflict with {manager}",
            "field": readable(path),
        }
        for manager, paths in conflicts.items()
        for path in paths
    ]
    lines = [f'{c["message"]}: {c["field"]}' for c in causes]
    message = f"Apply failed with {count} conflict{'s' if count > 1 else ''}: " + "\n".join(lines)
    return ApiError(
        409,
        "Conflict",
        message,
        details={"causes": causes},
    )
