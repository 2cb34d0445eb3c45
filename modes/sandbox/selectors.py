"""Label and field selectors in the query-string syntax of the list and watch verbs."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from modes.sandbox.errors import bad_request

Obj = dict[str, Any]

_KEY = r"[A-Za-z0-9./_-]+"
_VALUE = r"[A-Za-z0-9._-]*"
_SET_OP = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s+\((?P<values>[^)]*)\)\s*$")
_CMP_OP = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|!=|=)\s*(?P<value>{_VALUE})\s*$")
_EXISTS = re.compile(rf"^\s*(?P<neg>!?)\s*(?P<key>{_KEY})\s*$")


@dataclasses.dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        # "!=" and "notin" match objects that lack the label, as in apimachinery.
        return not present or value not in self.values


def _split(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p for p in parts if p.strip()]


def parse_labels(text: str | None) -> list[Requirement]:
    if not text:
        return []
    reqs = []
    for part in _split(text):
        if m := _SET_OP.match(part):
            values = frozenset(v.strip() for v in m["values"].split(",") if v.strip())
            reqs.append(Requirement(m["key"], m["op"], values))
        elif m := _CMP_OP.match(part):
            op = "!=" if m["op"] == "!=" else "="
            reqs.append(Requirement(m["key"], op, frozenset({m["value"]})))
        elif m := _EXISTS.match(part):
            reqs.append(Requirement(m["key"], "!exists" if m["neg"] else "exists"))
        else:
            raise bad_request(f"unable to parse requirement: {part.strip()!r}")
    return reqs


def labels_match(reqs: list[Requirement], obj: Obj) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(r.matches(labels) for r in reqs)


# Field selectors: each resource supports a few fields (metadata.name and metadata.namespace
# always), as kube-apiserver's per-type field label conversion does.
def _path(*keys: str) -> Callable[[Obj], str]:
    def get(obj: Obj) -> str:
        node: Any = obj
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        return "" if node is None else str(node)

    return get


COMMON_FIELDS: dict[str, Callable[[Obj], str]] = {
    "metadata.name": _path("metadata", "name"),
    "metadata.namespace": _path("metadata", "namespace"),
}
EXTRA_FIELDS: dict[str, dict[str, Callable[[Obj], str]]] = {
    "pods": {
        "status.phase": _path("status", "phase"),
        "spec.nodeName": _path("spec", "nodeName"),
        "spec.serviceAccountName": _path("spec", "serviceAccountName"),
        "spec.restartPolicy": _path("spec", "restartPolicy"),
        "status.podIP": _path("status", "podIP"),
    },
    "secrets": {"type": _path("type")},
    "events": {
        **{
            f"involvedObject.{k}": _path("involvedObject", k)
            for k in (
                "kind",
                "namespace",
                "name",
                "uid",
                "apiVersion",
                "resourceVersion",
                "fieldPath",
            )
        },
        "reason": _path("reason"),
        "type": _path("type"),
        "source": _path("source", "component"),
    },
    "namespaces": {"status.phase": _path("status", "phase")},
    "replicasets": {"status.replicas": _path("status", "replicas")},
    "nodes": {"spec.unschedulable": _path("spec", "unschedulable")},
}


@dataclasses.dataclass(frozen=True)
class FieldRequirement:
    get: Callable[[Obj], str]
    equal: bool
    value: str


def parse_fields(
    text: str | None, plural: str, extra: tuple[str, ...] = (), custom: bool = False
) -> list[FieldRequirement]:
    if not text:
        return []
    known = {**COMMON_FIELDS, **EXTRA_FIELDS.get(plural, {})}
    for path in extra:  # CRD selectableFields: ".spec.color" -> "spec.color"
        known[path.lstrip(".")] = _path(*path.lstrip(".").split("."))
    reqs = []
    for part in _split(text):
        m = re.match(r"^\s*([^!=\s]+)\s*(==|!=|=)\s*(.*?)\s*$", part)
        if not m:
            raise bad_request(f"invalid field selector: {part.strip()!r}")
        field, op, value = m.groups()
        if field not in known:
            if plural in EXTRA_FIELDS or extra or custom:
                raise bad_request(f"field label not supported: {field}")
            # Kinds with only the metadata fields use apimachinery's default conversion.
            raise bad_request(f'"{field}" is not a known field selector: '
                              'only "metadata.name", "metadata.namespace"')
        reqs.append(FieldRequirement(known[field], op != "!=", value))
    return reqs


def fields_match(reqs: list[FieldRequirement], obj: Obj) -> bool:
    return all((r.get(obj) == r.value) == r.equal for r in reqs)


@dataclasses.dataclass(frozen=True)
class Selector:
    """A parsed labelSelector plus fieldSelector; the empty selector matches everything."""

    labels: tuple[Requirement, ...] = ()
    fields: tuple[FieldRequirement, ...] = ()

    @classmethod
    def parse(
        cls,
        label_selector: str | None,
        field_selector: str | None,
        plural: str,
        extra_fields: tuple[str, ...] = (),
        custom: bool = False,
    ) -> Selector:
        return cls(
            tuple(parse_labels(label_selector)),
            tuple(parse_fields(field_selector, plural, extra_fields, custom)),
        )

    def matches(self, obj: Obj) -> bool:
        return labels_match(list(self.labels), obj) and fields_match(list(self.fields), obj)

    @property
    def empty(self) -> bool:
        return not self.labels and not self.fields
