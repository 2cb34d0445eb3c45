"""The three plugin kinds. Each is a Protocol so a third-party wheel can implement one without
importing anything from us but these names; the registry finds it through its entry point.

An entry point names a *factory*: a callable (usually the class) that takes the kind's
settings object and returns an object satisfying the kind's protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from kubetunnel.records import TunnelRecord


@runtime_checkable
class ByteStream(Protocol):
    """An ordered, reliable, bidirectional byte stream with half-close.

    Why it exists: the tunnel protocol must not care whether its bytes travel over TCP, a
    Kubernetes port-forward websocket or an in-process pipe; every transport yields one of these.
    """

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Wait for data; return 1..``max_bytes`` bytes, or ``b""`` once the peer sent EOF."""
        ...

    async def send(self, data: bytes) -> None:
        """Queue ``data``, waiting while the peer is slow (back-pressure, bounded memory)."""
        ...

    async def send_eof(self) -> None:
        """Half-close: the peer's ``receive`` returns ``b""`` after the data already sent."""
        ...

    async def aclose(self) -> None:
        """Close both directions and release resources; idempotent."""
        ...


@dataclass(frozen=True)
class TunnelTarget:
    """Where the agent's tunnel port is: a pod (port-forward) or an address (direct, loopback)."""

    namespace: str
    pod: str | None = None
    port: int = 7000
    address: str | None = None


@dataclass(frozen=True)
class TransportSettings:
    """What a transport factory gets. ``kube`` is a :class:`kubetunnel.kube.KubeAccess` or None."""

    kube: Any = None
    tls_ca: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)


class Transport(Protocol):
    """How the CLI opens a byte stream to the agent's tunnel port.

    Why it exists: clusters differ in what reaches a pod from a laptop (the API server's
    port-forward almost always does; a NodePort or ingress is faster where it exists), and tests
    want no network at all. The tunnel protocol runs unchanged over any of them.
    """

    async def connect(self, target: TunnelTarget) -> ByteStream:
        """Open one new stream to the target; raise KubetunnelError with a one-line reason."""
        ...

    async def aclose(self) -> None:
        """Release shared resources (HTTP sessions); open streams stay usable until closed."""
        ...


StoreEventType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclass(frozen=True)
class StoreEvent:
    type: StoreEventType
    record: TunnelRecord


@dataclass(frozen=True)
class StoreSettings:
    """What a store factory gets. ``kube`` is a :class:`kubetunnel.kube.KubeAccess` or None."""

    kube: Any = None
    options: Mapping[str, str] = field(default_factory=dict)


class Store(Protocol):
    """Where tunnel records live, with Kubernetes semantics whatever the medium.

    Why it exists: the default (a custom resource) needs a CRD installed, which some clusters
    forbid; a ConfigMap works everywhere; tests and demos want no cluster. The operator and the
    CLI only speak this protocol, so they behave the same on each.

    Semantics every implementation keeps: ``create`` fails with AlreadyExists; ``replace`` and
    ``replace_status`` fail with Conflict when ``record.resource_version`` is stale and NotFound
    when the record is gone; ``replace`` ignores status and ``replace_status`` ignores everything
    else; ``generation`` grows only when the spec changes; ``delete`` of a record with finalizers
    only marks it ``deleting``, and the record goes once the last finalizer is removed.
    """

    async def create(self, record: TunnelRecord) -> TunnelRecord: ...

    async def get(self, namespace: str, name: str) -> TunnelRecord | None: ...

    async def list(self, namespace: str | None = None) -> list[TunnelRecord]: ...

    async def replace(self, record: TunnelRecord) -> TunnelRecord: ...

    async def replace_status(self, record: TunnelRecord) -> TunnelRecord: ...

    async def delete(self, namespace: str, name: str) -> None: ...

    def watch(self, namespace: str | None = None) -> AsyncIterator[StoreEvent]:
        """Current records as ADDED, then every change; ends only when the consumer stops."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class PolicyRequest:
    """Which namespaces talk to the operator, and which extra egress the tunnel pods need."""

    operator_namespace: str
    app_namespaces: tuple[str, ...]
    allow_dns: bool = False
    allow_namespace_egress: bool = False


class PolicyRenderer(Protocol):
    """Renders the network policies that let tunnel pods reach the operator, and nothing more.

    Why it exists: clusters enforce network policy with different engines (the built-in
    NetworkPolicy API, Cilium's own resources); the rules are the same, the objects are not.
    """

    def render(self, request: PolicyRequest) -> list[dict[str, Any]]:
        """Return complete manifests (apiVersion, kind, metadata, spec), ready to apply."""
        ...
