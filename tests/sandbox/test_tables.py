"""Server-side Table columns and cells, as kube-apiserver's printers make them."""

from __future__ import annotations

from typing import Any

from modes.sandbox.resources import ResourceRegistry
from modes.sandbox.tables import table

CREATED = {"creationTimestamp": "2026-01-01T00:00:00Z"}


def _rows(group: str, plural: str, *objs: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    rt = ResourceRegistry().get(group, plural)
    assert rt is not None
    got = table(rt, "v1", [{"metadata": {"name": "x", **CREATED}, **o} for o in objs], "1", "None")
    names = [c["name"] for c in got["columnDefinitions"] if c["priority"] == 0]
    return names, [row["cells"][: len(names) - 1] for row in got["rows"]]  # without Age, wide


def test_endpoints_show_address_port_pairs_three_at_most() -> None:
    ports = [{"name": "http", "port": 8080}, {"name": "admin", "port": 9090}]
    names, rows = _rows(
        "", "endpoints",
        {},
        {"subsets": [{"addresses": [{"ip": "127.1.0.1"}, {"ip": "127.1.0.2"}], "ports": ports}]},
        {"subsets": [{"addresses": [{"ip": "127.1.0.3"}], "ports": ports[:1]}]},
        {"subsets": [{"addresses": [{"ip": "127.1.0.4"}]}]},  # headless, no ports
        {"subsets": [{"notReadyAddresses": [{"ip": "127.1.0.5"}], "ports": ports[:1]}]},
        {"subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": ports[:1]}]},
    )
    assert names == ["Name", "Endpoints", "Age"]
    assert rows == [
        ["x", "<none>"],
        ["x", "127.1.0.1:8080,127.1.0.2:8080,127.1.0.1:9090 + 1 more..."],
        ["x", "127.1.0.3:8080"],
        ["x", "127.1.0.4"],
        ["x", ""],  # only not-ready addresses: kube prints an empty cell
        ["x", "[fd00::1]:8080"],
    ]


def test_endpointslices_show_type_ports_and_addresses() -> None:
    names, rows = _rows(
        "discovery.k8s.io", "endpointslices",
        {"addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
         "endpoints": [{"addresses": [f"127.1.0.{i}"]} for i in range(1, 6)]},
        {"addressType": "IPv4", "ports": [{"name": "http"}, {}], "endpoints": []},
        {"addressType": "IPv4"},
    )
    assert names == ["Name", "AddressType", "Ports", "Endpoints", "Age"]
    assert rows == [
        ["x", "IPv4", "8080", "127.1.0.1,127.1.0.2,127.1.0.3 + 2 more..."],
        ["x", "IPv4", "http,*", "<unset>"],
        ["x", "IPv4", "<unset>", "<unset>"],
    ]


def test_services_external_ip_by_type() -> None:
    names, rows = _rows(
        "", "services",
        {"spec": {"type": "ClusterIP", "clusterIP": "127.10.0.5", "clusterIPs": ["127.10.0.5"],
                  "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "a"}}},
        {"spec": {"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"]}},
        {"spec": {"type": "NodePort", "clusterIPs": ["127.10.0.6"], "externalIPs": ["127.9.0.1"],
                  "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}},
        {"spec": {"type": "LoadBalancer", "clusterIPs": ["127.10.0.7"],
                  "ports": [{"port": 443, "protocol": "TCP"}]}},
        {"spec": {"type": "LoadBalancer", "clusterIPs": ["127.10.0.8"]},
         "status": {"loadBalancer": {"ingress": [{"hostname": "a-very-long-balancer.example"},
                                                 {"ip": "127.8.0.1"}]}}},
        {"spec": {"type": "ExternalName", "externalName": "db.example"}},
    )
    assert names == ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"]
    assert [r[1:] for r in rows] == [
        ["ClusterIP", "127.10.0.5", "<none>", "80/TCP"],
        ["ClusterIP", "None", "<none>", "<none>"],
        ["NodePort", "127.10.0.6", "127.9.0.1", "80:30080/TCP"],
        ["LoadBalancer", "127.10.0.7", "<pending>", "443/TCP"],
        # Server-side tables are generated wide: the addresses are not clipped.
        ["LoadBalancer", "127.10.0.8", "127.8.0.1,a-very-long-balancer.example", "<none>"],
        ["ExternalName", "<none>", "db.example", "<none>"],
    ]
