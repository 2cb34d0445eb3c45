"""What the node's kube-proxy makes of a Service's EndpointSlices."""

from __future__ import annotations

from typing import Any

from modes.sandbox.node.agent import slice_backends

Obj = dict[str, Any]


def endpoint(ip: str, ready: bool | None = True, serving: bool | None = None,
             terminating: bool | None = None) -> Obj:
    conditions = {k: v for k, v in (("ready", ready), ("serving", serving),
                                    ("terminating", terminating)) if v is not None}
    return {"addresses": [ip], "conditions": conditions}


def piece(*endpoints: Obj, port: int = 8080, name: str = "http", family: str = "IPv4") -> Obj:
    return {"addressType": family, "endpoints": list(endpoints),
            "ports": [{"name": name, "port": port, "protocol": "TCP"}]}


def test_ready_endpoints_of_every_slice_and_unset_conditions_count_as_ready() -> None:
    slices = [piece(endpoint("127.1.0.1"), endpoint("127.1.0.2", ready=False)),
              piece(endpoint("127.1.0.3", ready=None)),
              piece(endpoint("127.1.0.4", ready=False, serving=True, terminating=True))]
    assert slice_backends(slices) == {"http": [("127.1.0.1", 8080), ("127.1.0.3", 8080)]}


def test_serving_terminating_endpoints_only_while_none_is_ready() -> None:
    slices = [piece(endpoint("127.1.0.1", ready=False, serving=True, terminating=True),
                    endpoint("127.1.0.2", ready=False, serving=False, terminating=True),
                    endpoint("127.1.0.3", ready=False))]
    assert slice_backends(slices) == {"http": [("127.1.0.1", 8080)]}


def test_per_port_name_other_families_and_protocols_ignored() -> None:
    slices = [piece(endpoint("127.1.0.1"), name="http"),
              piece(endpoint("127.1.0.5", ready=False, serving=True, terminating=True),
                    name="metrics", port=9090),
              piece(endpoint("::1"), family="IPv6"),
              {"addressType": "IPv4", "endpoints": [endpoint("127.1.0.6")],
               "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}]
    assert slice_backends(slices) == {"http": [("127.1.0.1", 8080)],
                                      "metrics": [("127.1.0.5", 9090)]}
