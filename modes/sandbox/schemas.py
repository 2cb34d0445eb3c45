"""The official OpenAPI schemas of the built-in kinds, as shipped by ``kubernetes-validate``.

One Kubernetes version (the newest bundled) is used throughout. The definitions file is read on
first use, not at start-up, and a validator is built per kind when that kind is first written.
The same definitions answer strategic-merge-patch questions (patch strategy and merge key of a
list) and the unknown-field check, so all three agree with the official API.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

SCHEMA_DIR = "v1.37.0-local"
DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"

Obj = dict[str, Any]


@functools.cache
def definitions() -> dict[str, Obj]:
    path = resources.files("kubernetes_validate").joinpath(
        "kubernetes-json-schema", SCHEMA_DIR, "_definitions.json"
    )
    document: Obj = json.loads(path.read_text(encoding="utf-8"))
    defs: dict[str, Obj] = document["$defs"]
    return defs


@functools.cache
def document() -> Obj:
    return {
        "$id": DEFINITIONS_ID,
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": definitions(),
    }


def resolve(node: Obj | None) -> Obj | None:
    """Follow a ``$ref`` (the property node keeps its own patch hints; the target has the shape)."""
    seen = 0
    while node is not None and "$ref" in node and seen < 16:
        node = definitions().get(node["$ref"].rpartition("/")[2])
        seen += 1
    return node


class Node:
    """A position in a schema (built-in definitions or a CRD's openAPIV3Schema)."""

    __slots__ = ("hints", "shape", "structural")

    def __init__(
        self, hints: Obj | None, shape: Obj | None = None, *, structural: bool = False
    ) -> None:
        self.hints = hints or {}  # the node as written, with x-kubernetes-* extensions
        self.shape = shape if shape is not None else (resolve(hints) or {})
        # A CRD's structural schema: an object without properties keeps no fields (pruning).
        self.structural = structural

    @classmethod
    def of_definition(cls, name: str) -> Node:
        return cls({"$ref": f"#/$defs/{name}"})

    def _ext(self, key: str) -> Any:
        return self.hints.get(key, self.shape.get(key))

    @property
    def patch_strategy(self) -> str:
        return str(self._ext("x-kubernetes-patch-strategy") or "")

    @property
    def merge_key(self) -> str | None:
        key = self._ext("x-kubernetes-patch-merge-key")
        return str(key) if key else None

    @property
    def list_type(self) -> str:
        return str(self._ext("x-kubernetes-list-type") or "")

    @property
    def list_map_keys(self) -> list[str]:
        return list(self._ext("x-kubernetes-list-map-keys") or [])

    @property
    def map_type(self) -> str:
        return str(self._ext("x-kubernetes-map-type") or "")

    @property
    def preserves_unknown(self) -> bool:
        return bool(self._ext("x-kubernetes-preserve-unknown-fields")) or (
            self._ext("x-kubernetes-int-or-string") is True
        )

    @property
    def is_object(self) -> bool:
        return "properties" in self.shape or isinstance(
            self.shape.get("additionalProperties"), dict
        )

    def field(self, name: str) -> Node | None:
        props = self.shape.get("properties")
        if isinstance(props, dict) and name in props:
            return Node(props[name], structural=self.structural)
        extra = self.shape.get("additionalProperties")
        if isinstance(extra, dict):
            return Node(extra, structural=self.structural)
        return None

    def items(self) -> Node | None:
        items = self.shape.get("items")
        return Node(items, structural=self.structural) if isinstance(items, dict) else None

    def known_fields(self) -> set[str] | None:
        """Field names allowed here, or None when any name is (maps, free-form objects)."""
        if self.preserves_unknown or isinstance(self.shape.get("additionalProperties"), dict):
            return None
        if self.shape.get("additionalProperties") is True:
            return None
        props = self.shape.get("properties")
        if isinstance(props, dict):
            return set(props)
        return set() if self.structural and self.shape.get("type") == "object" else None


def unknown_fields(obj: Any, node: Node | None, path: str = "") -> list[str]:
    """Remove fields the schema does not know, in place; return their paths (``spec.foo``)."""
    found: list[str] = []
    if node is None:
        return found
    if isinstance(obj, dict):
        known = node.known_fields()
        for key in list(obj):
            child_path = f"{path}.{key}" if path else key
            if known is not None and key not in known:
                found.append(child_path)
                del obj[key]
                continue
            found += unknown_fields(obj[key], node.field(key), child_path)
    elif isinstance(obj, list):
        items = node.items()
        for i, item in enumerate(obj):
            found += unknown_fields(item, items, f"{path}[{i}]")
    return found


@functools.cache
def gvk_index() -> dict[tuple[str, str, str], str]:
    """(group, version, kind) -> definition name, from x-kubernetes-group-version-kind."""
    index = {}
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind", ()):
            index[(gvk["group"], gvk["version"], gvk["kind"])] = name
    return index
