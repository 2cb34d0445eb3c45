"""The tunnel record: what the CLI asks for and what the operator reports, independent of storage.

Every store plugin maps this one shape onto its medium (a custom resource, a ConfigMap,
a dict), so the operator and the CLI never see the difference.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from kubetunnel.errors import UsageError
from kubetunnel.filters import Filter
from kubetunnel.intercepts import Intercept, Mode

Phase = Literal[
    "Pending", "Starting", "Ready", "Connected", "Disconnected", "Failed", "Terminating"
]

# RFC 1123 label, which is what Service and namespace names must be.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def check_dns_label(value: str, what: str) -> str:
    """Return ``value`` if it is a valid RFC 1123 label, else raise a one-line UsageError."""
    if not _DNS_LABEL.match(value):
        raise UsageError(
            f"invalid {what} {value!r}: must be at most 63 lower-case letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return value


@dataclass(frozen=True)
class PortMapping:
    """One ``-p LOCAL:REMOTE``: the Service port (resolved to a number) and the local port."""

    service_port: int
    local_port: int
    target_port: int | str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        for label, port in (("service port", self.service_port), ("local port", self.local_port)):
            if not 1 <= port <= 65535:
                raise UsageError(f"{label} {port} is out of range 1-65535")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"servicePort": self.service_port, "localPort": self.local_port}
        if self.target_port is not None:
            data["targetPort"] = self.target_port
        if self.name is not None:
            data["name"] = self.name
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PortMapping:
        return cls(
            service_port=int(data["servicePort"]),
            local_port=int(data["localPort"]),
            target_port=data.get("targetPort"),
            name=data.get("name"),
        )


@dataclass(frozen=True)
class Condition:
    """A Kubernetes-style condition: machine-readable reason, a message a person can act on."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": format_time(self.last_transition or now()),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Condition:
        return cls(
            type=data["type"],
            status=data["status"],
            reason=data.get("reason", ""),
            message=data.get("message", ""),
            last_transition=parse_time(data.get("lastTransitionTime")),
        )


RECONCILED = "Reconciled"
"""False while the operator's attempts to reconcile the record fail (its message says why, for
example an RBAC denial); True again once one succeeds. The CLI shows it while it waits."""


@dataclass(frozen=True)
class TunnelStatus:
    phase: Phase = "Pending"
    connected: bool = False
    observed_generation: int = 0
    agent_pod: str | None = None
    connected_since: datetime | None = None
    conditions: tuple[Condition, ...] = ()
    requests: int = 0
    """Filtered and mirrored intercepts: requests the shared agent routed (or copied) to the
    client, as it last reported."""
    mirror_dropped: int = 0
    """Mirrors: copies the shared agent dropped (queue full, too large, client too slow)."""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "phase": self.phase,
            "connected": self.connected,
            "observedGeneration": self.observed_generation,
            "conditions": [c.to_dict() for c in self.conditions],
        }
        if self.agent_pod:
            data["agentPod"] = self.agent_pod
        if self.connected_since:
            data["connectedSince"] = format_time(self.connected_since)
        if self.requests:
            data["requests"] = self.requests
        if self.mirror_dropped:
            data["mirrorDropped"] = self.mirror_dropped
        return data

    def trouble(self) -> str | None:
        """Why the operator's latest reconcile failed, or None when it did not."""
        found = next((c for c in self.conditions if c.type == RECONCILED), None)
        return found.message if found is not None and found.status == "False" else None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TunnelStatus:
        if not data:
            return cls()
        return cls(
            phase=data.get("phase", "Pending"),
            connected=bool(data.get("connected", False)),
            observed_generation=int(data.get("observedGeneration", 0)),
            agent_pod=data.get("agentPod"),
            connected_since=parse_time(data.get("connectedSince")),
            conditions=tuple(Condition.from_dict(c) for c in data.get("conditions", [])),
            requests=int(data.get("requests", 0)),
            mirror_dropped=int(data.get("mirrorDropped", 0)),
        )


@dataclass(frozen=True)
class TunnelRecord:
    """A request to tunnel one Service to one workstation, plus what the store adds to it.

    ``resource_version`` is the store's optimistic-concurrency token: a replace with a stale
    one fails with :class:`kubetunnel.errors.Conflict`, as on the Kubernetes API.
    """

    namespace: str
    name: str
    service: str
    ports: tuple[PortMapping, ...]
    client: str
    lease_ttl_seconds: int = 60
    renewed_at: datetime | None = None
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    created_at: datetime | None = None
    deleting: bool = False
    finalizers: tuple[str, ...] = ()
    status: TunnelStatus = field(default_factory=TunnelStatus)
    mode: Mode = Mode.EXCLUSIVE
    filter: Filter = field(default_factory=Filter)

    @property
    def shared(self) -> bool:
        """Filtered or mirrored: served by the Service's one shared agent."""
        return self.mode is not Mode.EXCLUSIVE

    @property
    def agent_tunnel(self) -> str:
        """The tunnel label of the agent pod that serves this record."""
        return shared_tunnel(self.service) if self.shared else self.name

    def intercept(self) -> Intercept:
        created = self.created_at.timestamp() if self.created_at is not None else 0.0
        return Intercept(self.name, self.mode, self.filter, created, self.client)

    def replace(self, **changes: Any) -> TunnelRecord:
        return dataclasses.replace(self, **changes)

    def spec_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "service": self.service,
            "ports": [p.to_dict() for p in self.ports],
            "client": self.client,
            "leaseTTLSeconds": self.lease_ttl_seconds,
        }
        if self.renewed_at is not None:
            spec["renewTime"] = format_micro_time(self.renewed_at)
        if self.shared:  # an exclusive record keeps the shape it always had
            spec["mode"] = self.mode.value
            spec["filter"] = self.filter.to_dict()
        return spec

    def lease_expired(self, at: datetime | None = None) -> bool:
        """True once the CLI has not renewed for longer than the TTL (a killed CLI)."""
        reference = self.renewed_at or self.created_at
        if reference is None:
            return False
        return (at or now()) - reference > timedelta(seconds=self.lease_ttl_seconds)


def record_from_spec(
    namespace: str, name: str, spec: dict[str, Any], **metadata: Any
) -> TunnelRecord:
    """Build a record from the ``spec`` shape that every persistent store writes."""
    return TunnelRecord(
        namespace=namespace,
        name=name,
        service=spec["service"],
        ports=tuple(PortMapping.from_dict(p) for p in spec.get("ports", [])),
        client=spec.get("client", ""),
        lease_ttl_seconds=int(spec.get("leaseTTLSeconds", 60)),
        renewed_at=parse_time(spec.get("renewTime")),
        mode=_mode(spec.get("mode")),
        filter=Filter.from_dict(spec.get("filter") or {}),
        **metadata,
    )


def _mode(value: Any) -> Mode:
    try:
        return Mode(value or "exclusive")  # records written before modes existed: exclusive
    except ValueError:
        raise UsageError(f"unknown intercept mode {value!r}") from None


SHARED_SUFFIX = ".shared"


def shared_tunnel(service: str) -> str:
    """The tunnel label of a Service's shared agent (filtered and mirrored intercepts). The
    dot keeps it apart from every record name: those are DNS labels, which have none."""
    return service[:56] + SHARED_SUFFIX


def shared_service(tunnel: str) -> str | None:
    """The Service whose shared agent ``tunnel`` names, or None for a record's name."""
    return tunnel[:-len(SHARED_SUFFIX)] if tunnel.endswith(SHARED_SUFFIX) else None


def now() -> datetime:
    return datetime.now(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 with second precision and a Z, as Kubernetes writes timestamps."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(value: datetime) -> str:
    """MicroTime, as Lease.spec.renewTime: leases of a few seconds need sub-second precision."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
