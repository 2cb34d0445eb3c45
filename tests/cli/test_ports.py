"""Port mappings: every malformed -p is a one-line usage error; names resolve like kubectl."""

from __future__ import annotations

from typing import Any

import pytest

from kubetunnel.errors import UsageError
from modes.cli.ports import PortRequest, parse_port_request, resolve_ports

SERVICE: dict[str, Any] = {
    "metadata": {"name": "orders", "namespace": "shop"},
    "spec": {"ports": [
        {"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"},
        {"name": "grpc", "port": 9090, "targetPort": 9090},
        {"name": "dns", "port": 53, "protocol": "UDP"},
    ]},
}


@pytest.mark.parametrize(("text", "expected"), [
    ("8080:80", PortRequest(8080, 80)),
    ("8080:http", PortRequest(8080, "http")),
    ("1:65535", PortRequest(1, 65535)),
])
def test_valid_mappings(text: str, expected: PortRequest) -> None:
    assert parse_port_request(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("8080", "expected LOCAL:REMOTE"),
    (":80", "expected LOCAL:REMOTE"),
    ("abc:80", "local port 'abc' is not a number"),
    ("0:80", "local port 0 is out of range"),
    ("70000:80", "local port 70000 is out of range"),
    ("8080:0", "remote port 0 is out of range"),
    ("8080:Bad_Name", "neither a port number nor a port name"),
])
def test_invalid_mappings(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as err:
        parse_port_request(text)
    assert "\n" not in str(err.value)


def test_resolution_by_number_and_name_keeps_the_target_port() -> None:
    mappings = resolve_ports(SERVICE, [PortRequest(8080, "http"), PortRequest(9000, 9090)])
    assert [(m.service_port, m.local_port, m.target_port, m.name) for m in mappings] == [
        (80, 8080, "web", "http"),
        (9090, 9000, 9090, "grpc"),
    ]


def test_unknown_port_lists_the_service_ports() -> None:
    with pytest.raises(UsageError, match=r"has no port 81 \(it has: 80 \(http\), 9090 \(grpc\)"):
        resolve_ports(SERVICE, [PortRequest(8080, 81)])


def test_udp_and_duplicate_ports_are_refused() -> None:
    with pytest.raises(UsageError, match="UDP; only TCP"):
        resolve_ports(SERVICE, [PortRequest(5353, "dns")])
    with pytest.raises(UsageError, match="mapped twice"):
        resolve_ports(SERVICE, [PortRequest(8080, 80), PortRequest(8081, "http")])


SHARED: dict[str, Any] = {
    "metadata": {"name": "a", "namespace": "shop"},
    "spec": {"ports": [
        {"name": "http", "port": 80, "targetPort": 8080},
        {"name": "admin", "port": 81, "targetPort": 8080},
        {"name": "web", "port": 82, "targetPort": "web"},
        {"name": "web2", "port": 83, "targetPort": "web"},
        {"port": 8080},
    ]},
}


@pytest.mark.parametrize(("requests", "first", "second", "target"), [
    ([PortRequest(19101, "http"), PortRequest(19102, "admin")], "http", "admin", "8080"),
    ([PortRequest(19101, 81), PortRequest(19102, 8080)], "admin", "8080", "8080"),
    ([PortRequest(19101, "web"), PortRequest(19102, "web2")], "web", "web2", "web"),
])
def test_two_service_ports_with_one_target_port_cannot_go_to_two_local_ports(
    requests: list[PortRequest], first: str, second: str, target: str
) -> None:
    with pytest.raises(UsageError) as err:
        resolve_ports(SHARED, requests)
    message = str(err.value)
    assert message.startswith(f"ports {first} and {second} of Service shop/a both reach target "
                              f"port {target}")
    assert "map them to the same local port" in message
    assert "\n" not in message


def test_two_service_ports_with_one_target_port_may_share_a_local_port() -> None:
    mappings = resolve_ports(SHARED, [PortRequest(19101, "http"), PortRequest(19101, "admin")])
    assert [(m.service_port, m.local_port) for m in mappings] == [(80, 19101), (81, 19101)]


def test_a_named_target_resolving_to_a_used_agent_port_is_refused() -> None:
    from modes.cli.cluster import refuse_shared_agent_ports

    mappings = resolve_ports(SHARED, [PortRequest(19101, "http"), PortRequest(19102, "web")])
    with pytest.raises(UsageError, match="ports 80 and 82 both arrive on the tunnel pod's port "
                                         "8080; map them to the same local port"):
        refuse_shared_agent_ports({"tunnel": 9000, 80: 8080, 82: 8080}, mappings)
    refuse_shared_agent_ports({"tunnel": 9000, 80: 8080, 82: 8081}, mappings)
