"""``connect`` with a filter warns, at start, about mapped Service ports that say they are not
HTTP (their traffic is relayed to the cluster untouched, so no filter can match there)."""

from __future__ import annotations

from typing import Any

from kubetunnel.records import PortMapping
from modes.cli.intercepting import non_http_ports


def _service(*ports: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"ports": list(ports)}}


def test_app_protocol_or_name_that_is_not_http_warns_once_per_mapped_port() -> None:
    service = _service(
        {"name": "https", "port": 443},
        {"name": "db", "port": 5432, "appProtocol": "postgresql"},
        {"name": "web", "port": 80},
        {"name": "grpc-api", "port": 9000, "appProtocol": "kubernetes.io/h2c"},
        {"name": "tcp-raw", "port": 7000},
    )
    mappings = [PortMapping(port, 10000 + port) for port in (443, 5432, 80, 9000)]
    warnings = non_http_ports(service, mappings)
    assert len(warnings) == 2
    assert warnings[0].startswith("Service port 443 says it is not HTTP (name https)")
    assert warnings[1].startswith("Service port 5432 says it is not HTTP (appProtocol postgresql)")
    assert all("\n" not in warning and "filters match nothing" in warning
               for warning in warnings)


def test_http_app_protocol_wins_over_a_name_and_unmapped_ports_are_not_looked_at() -> None:
    service = _service(
        {"name": "tcp-web", "port": 80, "appProtocol": "http"},  # appProtocol says HTTP
        {"name": "redis", "port": 6379},  # not mapped: not this connect's business
    )
    assert non_http_ports(service, [PortMapping(80, 8080)]) == []
    assert non_http_ports({}, [PortMapping(80, 8080)]) == []
