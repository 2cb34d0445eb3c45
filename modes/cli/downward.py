"""The downward API as the kubelet computes it: pod fields and container resources as text.

Shared by environment variables (``valueFrom.fieldRef``/``resourceFieldRef``) and downward-API
volume files. Pure functions over the pod as the API returns it (a dict).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from kubetunnel.errors import KubetunnelError

Obj = Mapping[str, Any]

_QUANTITY = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?")
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_ITEM = re.compile(r"metadata\.(labels|annotations)\['(.*)'\]")
# Limits the kubelet fills from the node's allocatable when the container sets none.
DEFAULTED_LIMITS = ("cpu", "memory", "ephemeral-storage")


class DownwardError(KubetunnelError):
    """A field or resource the downward API cannot give (a malformed or unsupported path)."""


class MissingAllocatable(DownwardError):
    """A limit is unset and the node's allocatable, which the kubelet would use, is unknown."""


def quantity(text: str) -> Fraction:
    """A Kubernetes resource quantity ("500m", "1.5Gi", "2e3") as an exact number."""
    match = _QUANTITY.fullmatch(str(text).strip())
    if not match:
        raise DownwardError(f"{text!r} is not a resource quantity")
    number, suffix = Fraction(match.group(1)), str(match.group(2) or "")
    if suffix in _BINARY:
        return number * Fraction(1024) ** _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * Fraction(10) ** _DECIMAL[suffix]
    if suffix:
        return number * Fraction(10) ** int(suffix[1:])
    return number


def format_map(values: Mapping[str, str]) -> str:
    """Labels or annotations as a downward-API file holds them: ``key="value"`` lines, sorted."""
    return "\n".join(f"{key}={_go_quote(values[key])}" for key in sorted(values))


def _go_quote(value: str) -> str:
    # Go's %q: double quotes, backslash escapes for quotes, backslashes and control characters.
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    out = []
    for char in value:
        if char in escapes:
            out.append(escapes[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def field_value(pod: Obj, path: str, *, whole_maps: bool = False) -> str:
    """A ``fieldRef``'s value from the (live) pod; ``whole_maps`` for volume files, which may
    also name ``metadata.labels`` and ``metadata.annotations`` as a whole."""
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    ips = {"status.podIPs": status.get("podIPs"), "status.hostIPs": status.get("hostIPs")}
    if path in ips:
        listed = [entry.get("ip", "") for entry in ips[path] or []]
        single = status.get("podIP" if path == "status.podIPs" else "hostIP")
        return ",".join(listed) if listed else str(single or "")
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"), "status.hostIP": status.get("hostIP"),
    }
    if path in simple:
        return str(simple[path] or "")
    item = _ITEM.fullmatch(path)
    if item:
        return str((meta.get(item.group(1)) or {}).get(item.group(2), ""))
    if whole_maps and path in ("metadata.labels", "metadata.annotations"):
        return format_map(meta.get(path.split(".")[1]) or {})
    raise DownwardError(f"fieldRef {path!r} is not supported by the downward API")


def resource_value(container: Obj, resource: str, divisor: str | None,
                   allocatable: Mapping[str, str] | None) -> str:
    """A ``resourceFieldRef``'s value: the container's request or limit divided by ``divisor``
    and rounded up, as the kubelet does; an unset cpu/memory/ephemeral-storage limit is the
    node's allocatable (kubelet's defaulting), which the caller passes when it could read it."""
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or not name:
        raise DownwardError(f"resourceFieldRef {resource!r} is not supported")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None and kind == "limits" and name in DEFAULTED_LIMITS:
        if allocatable is None or name not in allocatable:
            raise MissingAllocatable(
                f"{resource} is unset for container {container.get('name')!r} and the node's "
                "allocatable (its value then) could not be read")
        value = allocatable[name]
    amount = quantity(value) if value is not None else Fraction(0)
    per = quantity(divisor) if divisor not in (None, "", "0") else Fraction(1)
    if name == "cpu":
        # cpu counts in millicores, each side rounded up first (Quantity.MilliValue)
        result = math.ceil(math.ceil(amount * 1000) / math.ceil(per * 1000))
    else:
        result = math.ceil(math.ceil(amount) / math.ceil(per))
    return str(result)
