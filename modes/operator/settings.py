"""The operator's configuration: one frozen object built from the command line (or a test)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_AGENT_IMAGE = "ghcr.io/we-dcode/kubetunnel"
OPERATOR_SERVICE = "kubetunnel-operator"
LEADER_LEASE = "kubetunnel-operator"


@dataclass(frozen=True)
class OperatorSettings:
    namespace: str = "kubetunnel"
    """The operator's own namespace: its Service (the agents' URL) and its leader Lease."""
    watch_namespaces: tuple[str, ...] | None = None
    """Namespaces whose records are reconciled; None means all."""
    lease_ttl: float = 60.0
    """The longest a record may go unrenewed; a record may ask for less (spec.leaseTTLSeconds)."""
    agent_image: str = DEFAULT_AGENT_IMAGE
    operator_url: str | None = None
    """Given to agents; None: ``http://<ClusterIP of the operator Service>:80``."""
    operator_service: str = OPERATOR_SERVICE
    resync: float = 30.0
    """Every record and every annotated Service is looked at again this often."""
    agent_grace: float = 0.0
    """How long an agent pod may be gone or unready before the selector is restored. None by
    default: a Service pointing at a pod that cannot answer is an outage, and the pod watch says
    so at once."""
    workers: int = 16
    backoff_cap: float = 30.0
    """Longest wait before retrying a record whose reconcile keeps failing."""
    leader_election: bool = True
    leader_lease: str = LEADER_LEASE
    leader_lease_seconds: float = 15.0
    identity: str = ""
    manage_network_policies: bool = False
    """Create and remove the network policies of docs/network.md as tunnels come and go."""

    def watches(self, namespace: str) -> bool:
        return self.watch_namespaces is None or namespace in self.watch_namespaces

    def effective_ttl(self, record_ttl: int) -> float:
        return min(float(record_ttl), self.lease_ttl)
