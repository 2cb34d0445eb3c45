"""``-p LOCAL:REMOTE`` parsing and resolution against a Service's ports.

REMOTE is a Service port number or name, as in ``kubectl port-forward svc/NAME LOCAL:REMOTE``;
it is resolved against the Service before anything is written to the cluster, so a wrong port
is reported with the ports the Service does have.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import click

from kubetunnel.errors import UsageError
from kubetunnel.records import PortMapping

# An IANA service name, which is what a Kubernetes port name must be.
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")


@dataclass(frozen=True)
class PortRequest:
    local: int
    remote: int | str

    def __str__(self) -> str:
        return f"{self.local}:{self.remote}"


def parse_port_request(text: str) -> PortRequest:
    local_text, sep, remote_text = text.partition(":")
    if not sep or not local_text or not remote_text:
        raise UsageError(f"invalid port mapping {text!r}: expected LOCAL:REMOTE, e.g. 8080:80")
    if not local_text.isdigit():
        raise UsageError(
            f"invalid port mapping {text!r}: local port {local_text!r} is not a number"
        )
    local = int(local_text)
    if not 1 <= local <= 65535:
        raise UsageError(f"invalid port mapping {text!r}: local port {local} is out of range")
    remote: int | str
    if remote_text.isdigit():
        remote = int(remote_text)
        if not 1 <= remote <= 65535:
            raise UsageError(f"invalid port mapping {text!r}: remote port {remote} is out of range")
    elif _PORT_NAME.match(remote_text):
        remote = remote_text
    else:
        raise UsageError(
            f"invalid port mapping {text!r}: remote {remote_text!r} is neither a port number "
            "nor a port name"
        )
    return PortRequest(local, remote)


class PortMappingType(click.ParamType):  # type: ignore[type-arg]
    """A click type so a bad ``-p`` is a usage error (exit 2) before anything runs."""

    name = "LOCAL:REMOTE"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> PortRequest:
        if isinstance(value, PortRequest):
            return value
        try:
            return parse_port_request(str(value))
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


def resolve_ports(
    service: dict[str, Any], requests: Sequence[PortRequest]
) -> tuple[PortMapping, ...]:
    """Match each request to a port of the Service (number or name); one line per mistake."""
    meta = service.get("metadata", {})
    name = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
    ports = service.get("spec", {}).get("ports") or []
    available = ", ".join(
        f"{p['port']}" + (f" ({p['name']})" if p.get("name") else "") for p in ports
    ) or "none"
    mappings: list[PortMapping] = []
    seen: set[int] = set()
    for request in requests:
        match = next(
            (p for p in ports
             if (isinstance(request.remote, int) and p.get("port") == request.remote)
             or (isinstance(request.remote, str) and p.get("name") == request.remote)),
            None,
        )
        if match is None:
            raise UsageError(
                f"Service {name} has no port {request.remote!r} (it has: {available})"
            )
        if (match.get("protocol") or "TCP") != "TCP":
            raise UsageError(
                f"Service {name} port {match['port']} is {match['protocol']}; only TCP tunnels"
            )
        if match["port"] in seen:
            raise UsageError(f"Service {name} port {match['port']} is mapped twice")
        seen.add(match["port"])
        mappings.append(PortMapping(
            service_port=int(match["port"]),
            local_port=request.local,
            target_port=match.get("targetPort", match["port"]),
            name=match.get("name"),
        ))
    _refuse_shared_targets(name, mappings)
    return tuple(mappings)


def _port_label(mapping: PortMapping) -> str:
    return mapping.name or str(mapping.service_port)


def _refuse_shared_targets(service: str, mappings: Sequence[PortMapping]) -> None:
    """The tunnel pod listens on target ports, not Service ports: two Service ports with one
    target port arrive on the same agent port, so they can only go to one local port."""
    by_target: dict[int | str, PortMapping] = {}
    for mapping in mappings:
        target = mapping.target_port if mapping.target_port is not None else mapping.service_port
        key: int | str = int(target) if str(target).isdigit() else str(target)
        first = by_target.setdefault(key, mapping)
        if first.local_port != mapping.local_port:
            raise UsageError(
                f"ports {_port_label(first)} and {_port_label(mapping)} of Service {service} "
                f"both reach target port {key}, which the tunnel cannot tell apart; map them to "
                f"the same local port (e.g. -p {first.local_port}:{_port_label(first)} "
                f"-p {first.local_port}:{_port_label(mapping)})"
            )
