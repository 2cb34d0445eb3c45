"""``Table`` responses (meta.k8s.io/v1) for ``kubectl get``: the server, not kubectl, decides the
columns, as kube-apiserver does. Built-ins get the columns kubectl users know; custom resources
get their CRD's additionalPrinterColumns.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

from modes.sandbox.resources import Column, ResourceType

Obj = dict[str, Any]
Getter = Callable[[Obj], Any]


def age(timestamp: str | None) -> str:
    """kubectl's short human duration: 45s, 3m12s, 5h, 2d."""
    if not timestamp:
        return "<unknown>"
    then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    seconds = max(0, int((datetime.datetime.now(datetime.UTC) - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def _ports(svc: Obj) -> str:
    ports = (svc.get("spec") or {}).get("ports") or []
    out = []
    for p in ports:
        text = f"{p.get('port')}"
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        out.append(f"{text}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _cluster_ip(svc: Obj) -> str:
    ips = (svc.get("spec") or {}).get("clusterIPs") or []
    return str(ips[0]) if ips else "<none>"


def _external_ip(svc: Obj) -> str:
    """By type, as kube-apiserver prints it; its tables are always generated wide, so a load
    balancer's addresses are never clipped."""
    spec = svc.get("spec") or {}
    external = list(spec.get("externalIPs") or [])
    kind = spec.get("type", "ClusterIP")
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if kind == "ExternalName":
        return str(spec.get("externalName", ""))
    if kind != "LoadBalancer":
        return "<unknown>"
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    balancers = sorted({i.get("ip") or i.get("hostname") for i in ingress} - {None, ""})
    return ",".join(balancers + external) or "<pending>"


def _first_three(items: list[str], empty: str) -> str:
    """kube's "a,b,c + 2 more..." for lists that would make a row too wide."""
    text = ",".join(items[:3])
    if len(items) > 3:
        return f"{text} + {len(items) - 3} more..."
    return text or empty


def _endpoints(ep: Obj) -> str:
    subsets = ep.get("subsets") or []
    if not subsets:
        return "<none>"
    shown = []
    for subset in subsets:
        addresses = [a.get("ip", "") for a in subset.get("addresses") or []]
        ports = subset.get("ports") or []
        if not ports:  # a headless Service's endpoints may have no ports
            shown += addresses
        for port in ports:
            shown += [_host_port(ip, port.get("port")) for ip in addresses]
    return _first_three(shown, "")


def _host_port(ip: str, port: Any) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _slice_ports(eps: Obj) -> str:
    ports = [
        str(p["port"]) if p.get("port") is not None else str(p.get("name") or "*")
        for p in eps.get("ports") or []
    ]
    return _first_three(ports, "<unset>")


def _slice_endpoints(eps: Obj) -> str:
    addresses = [a for e in eps.get("endpoints") or [] for a in e.get("addresses") or []]
    return _first_three(addresses, "<unset>")


def _ready(pod: Obj) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _pod_status(pod: Obj) -> str:
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    status = pod.get("status") or {}
    for s in status.get("containerStatuses") or []:
        waiting = (s.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return str(waiting["reason"])
    return str(status.get("reason") or status.get("phase") or "Unknown")


def _restarts(pod: Obj) -> int:
    return sum(
        int(s.get("restartCount", 0))
        for s in (pod.get("status") or {}).get("containerStatuses") or []
    )


def _g(*keys: str, default: Any = "") -> Getter:
    def get(obj: Obj) -> Any:
        node: Any = obj
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        return default if node is None else node

    return get


NAME = ("Name", "string", _g("metadata", "name"))
AGE = ("Age", "string", lambda o: age(o["metadata"].get("creationTimestamp")))
BUILTIN_COLUMNS: dict[tuple[str, str], list[tuple[str, str, Getter]]] = {
    ("", "namespaces"): [NAME, ("Status", "string", _g("status", "phase")), AGE],
    ("", "pods"): [
        NAME,
        ("Ready", "string", _ready),
        ("Status", "string", _pod_status),
        ("Restarts", "string", lambda o: str(_restarts(o))),
        AGE,
    ],
    ("", "services"): [
        NAME,
        ("Type", "string", _g("spec", "type")),
        ("Cluster-IP", "string", _cluster_ip),
        ("External-IP", "string", _external_ip),
        ("Port(s)", "string", _ports),
        AGE,
    ],
    ("", "endpoints"): [NAME, ("Endpoints", "string", _endpoints), AGE],
    ("discovery.k8s.io", "endpointslices"): [
        NAME,
        ("AddressType", "string", _g("addressType")),
        ("Ports", "string", _slice_ports),
        ("Endpoints", "string", _slice_endpoints),
        AGE,
    ],
    ("", "configmaps"): [
        NAME,
        ("Data", "integer", lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
        AGE,
    ],
    ("", "secrets"): [
        NAME,
        ("Type", "string", _g("type")),
        ("Data", "integer", lambda o: len(o.get("data") or {})),
        AGE,
    ],
    ("", "serviceaccounts"): [NAME, AGE],
    ("apps", "deployments"): [
        NAME,
        (
            "Ready",
            "string",
            lambda o: (
                f"{_g('status', 'readyReplicas', default=0)(o)}/{_g('spec', 'replicas')(o) or 0}"
            ),
        ),
        ("Up-to-date", "integer", _g("status", "updatedReplicas", default=0)),
        ("Available", "integer", _g("status", "availableReplicas", default=0)),
        AGE,
    ],
    ("apps", "replicasets"): [
        NAME,
        ("Desired", "integer", _g("spec", "replicas", default=0)),
        ("Current", "integer", _g("status", "replicas", default=0)),
        ("Ready", "integer", _g("status", "readyReplicas", default=0)),
        AGE,
    ],
    ("apiextensions.k8s.io", "customresourcedefinitions"): [
        NAME,
        ("Created At", "date", _g("metadata", "creationTimestamp")),
    ],
    ("coordination.k8s.io", "leases"): [
        NAME,
        ("Holder", "string", _g("spec", "holderIdentity")),
        AGE,
    ],
}


def json_path(obj: Any, path: str) -> Any:
    """The simple JSONPath subset printer columns use: .a.b, .a[0].b, .a['x.y']."""
    tokens = re.findall(r"\.([A-Za-z0-9_$-]+)|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]", path)
    node = obj
    for name, index, quoted, dquoted in tokens:
        key = name or quoted or dquoted
        if index:
            node = node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
        else:
            node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return None
    return node


def _custom_getter(column: Column) -> Getter:
    def get(obj: Obj) -> Any:
        value = json_path(obj, column.json_path)
        if column.type == "date" and isinstance(value, str):
            try:
                return age(value)  # as apiextensions-apiserver renders date columns
            except ValueError:
                return value
        return value

    return get


# Columns kubectl shows only with ``-o wide`` (priority 1).
WIDE_COLUMNS: dict[tuple[str, str], list[tuple[str, str, Getter]]] = {
    ("", "pods"): [
        ("IP", "string", _g("status", "podIP", default="<none>")),
        ("Node", "string", _g("spec", "nodeName", default="<none>")),
    ],
    ("", "services"): [
        (
            "Selector",
            "string",
            lambda o: (
                ",".join(
                    f"{k}={v}"
                    for k, v in sorted(((o.get("spec") or {}).get("selector") or {}).items())
                )
                or "<none>"
            ),
        )
    ],
}
ColumnSpec = tuple[str, str, str, Getter, int]


def columns(rt: ResourceType, version: str) -> list[ColumnSpec]:
    """(name, type, format, getter, priority) of each column."""
    name: ColumnSpec = (NAME[0], NAME[1], "name", NAME[2], 0)
    if rt.custom:
        cols: tuple[Column, ...] = rt.crd_columns.get(version, ())
        if not cols:
            return [name, ("Age", "date", "", AGE[2], 0)]
        return [name] + [(c.name, c.type, c.format, _custom_getter(c), c.priority) for c in cols]
    plain = [
        (n, t, "name" if n == "Name" else "", g, 0)
        for n, t, g in BUILTIN_COLUMNS.get(rt.key, [NAME, AGE])
    ]
    return plain + [(n, t, "", g, 1) for n, t, g in WIDE_COLUMNS.get(rt.key, [])]


def table(
    rt: ResourceType,
    version: str,
    objs: list[Obj],
    rv: str,
    include: str,
    headers: bool = True,
    list_meta: Obj | None = None,
) -> Obj:
    cols = columns(rt, version)
    rows = []
    for obj in objs:
        if include == "None":
            embedded = None
        elif include == "Object":
            embedded = obj
        else:
            embedded = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        cells = [getter(obj) for _, _, _, getter, _ in cols]
        rows.append({"cells": [c if c is not None else None for c in cells], "object": embedded})
    result: Obj = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv, **(list_meta or {})},
        "rows": rows,
    }
    result["columnDefinitions"] = (
        [
            {
                "name": name,
                "type": kind,
                "format": fmt,
                "description": "",
                "priority": priority,
            }
            for name, kind, fmt, _, priority in cols
        ]
        if headers
        else []
    )
    return result
