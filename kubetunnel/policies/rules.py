"""The rules behind every rendered policy, as engine-neutral data.

Both built-in renderers translate these plans, so the NetworkPolicy and the Cilium objects cannot
drift apart. The per-namespace functions exist for the operator: when it manages policies itself
it needs one namespace's egress policy, or the ingress policy for the namespaces that have tunnels
right now, not the whole set the CLI prints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from kubetunnel.errors import UsageError
from kubetunnel.plugins import PolicyRequest
from kubetunnel.records import check_dns_label

# The seed document's labels; the manifests and the tunnel pods carry them unchanged.
AGENT_LABELS: Mapping[str, str] = {"we-dcode-app": "kubetunnel"}
OPERATOR_LABELS: Mapping[str, str] = {"we-dcode-app": "kubetunnel-operator"}
DNS_NAMESPACE = "kube-system"
DNS_LABELS: Mapping[str, str] = {"k8s-app": "kube-dns"}
# The operator Service's port and the container port behind it. Engines match the destination
# after the Service's address translation (8083), but the seed allows both; so do we.
OPERATOR_PORTS = (80, 8083)
DNS_PORT = 53

EGRESS_POLICY_NAME = "kubetunnel-agent-egress"
INGRESS_POLICY_NAME = "kubetunnel-operator-ingress"
MANAGED_BY: Mapping[str, str] = {"app.kubernetes.io/managed-by": "kubetunnel"}
PURPOSE_ANNOTATION = "kubetunnel.dev/purpose"

Direction = Literal["ingress", "egress"]
IpProtocol = Literal["TCP", "UDP"]


@dataclass(frozen=True)
class Port:
    number: int
    protocol: IpProtocol = "TCP"


@dataclass(frozen=True)
class Peer:
    """Pods carrying ``labels`` (empty: every pod) in ``namespace`` (None: the policy's own).

    "The policy's own namespace" is a separate case because both engines have a form for it that
    needs no namespace label, and it is what ``--allow-namespace-egress`` means.
    """

    labels: Mapping[str, str] = field(default_factory=dict)
    namespace: str | None = None


@dataclass(frozen=True)
class Rule:
    """Traffic to (egress) or from (ingress) any of ``peers`` on any of ``ports`` (none: all).

    Peers and ports always travel together in one rule. The seed's sample split them across
    rules, which opened every port to all but one namespace; keeping them in one value makes
    that mistake impossible to render.
    """

    peers: tuple[Peer, ...]
    ports: tuple[Port, ...]


@dataclass(frozen=True)
class Plan:
    """One policy object: which pods it isolates in which direction, and what it lets through."""

    name: str
    namespace: str
    direction: Direction
    selects: Mapping[str, str]
    rules: tuple[Rule, ...]
    purpose: str


def normalized(request: PolicyRequest) -> PolicyRequest:
    """The request with checked names and its application namespaces sorted and deduplicated.

    Sorting makes the output the same whatever order the namespaces were given in, so applying
    it twice from two shells changes nothing.
    """
    check_dns_label(request.operator_namespace, "operator namespace")
    if not request.app_namespaces:
        raise UsageError("at least one application namespace is needed (--app-namespace)")
    for namespace in request.app_namespaces:
        check_dns_label(namespace, "application namespace")
    return dataclasses.replace(request, app_namespaces=tuple(sorted(set(request.app_namespaces))))


def operator_ports() -> tuple[Port, ...]:
    return tuple(Port(number) for number in OPERATOR_PORTS)


def agent_egress(namespace: str, request: PolicyRequest) -> Plan:
    """The egress policy of one application namespace: its tunnel pods reach the operator only.

    ``request.app_namespaces`` is not consulted: this namespace's policy is the same whichever
    other namespaces have tunnels.
    """
    check_dns_label(namespace, "application namespace")
    check_dns_label(request.operator_namespace, "operator namespace")
    rules = [Rule((Peer(OPERATOR_LABELS, request.operator_namespace),), operator_ports())]
    if request.allow_dns:
        dns_ports = (Port(DNS_PORT, "UDP"), Port(DNS_PORT, "TCP"))
        rules.append(Rule((Peer(DNS_LABELS, DNS_NAMESPACE),), dns_ports))
    if request.allow_namespace_egress:
        # Every port: the agent carries the local process's connections to whatever Service of
        # this namespace it dials, and those ports are not known in advance.
        rules.append(Rule((Peer(),), ()))
    allowed = ["the KubeTunnel operator (TCP 80, 8083)"]
    allowed += ["the cluster DNS"] if request.allow_dns else []
    allowed += ["pods of this namespace"] if request.allow_namespace_egress else []
    return Plan(
        name=EGRESS_POLICY_NAME,
        namespace=namespace,
        direction="egress",
        selects=AGENT_LABELS,
        rules=tuple(rules),
        purpose=f"Tunnel pods may call {_and(allowed)}; nothing else.",
    )


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def operator_ingress(request: PolicyRequest) -> Plan:
    """The operator's ingress policy: one rule, tunnel pods of every application namespace.

    Peers name the tunnel pods, not just their namespaces: no other pod of an application
    namespace has a reason to call the operator.
    """
    request = normalized(request)
    peers = tuple(Peer(AGENT_LABELS, namespace) for namespace in request.app_namespaces)
    return Plan(
        name=INGRESS_POLICY_NAME,
        namespace=request.operator_namespace,
        direction="ingress",
        selects=OPERATOR_LABELS,
        rules=(Rule(peers, operator_ports()),),
        purpose="Only tunnel pods of the listed namespaces may call the operator, on TCP 80 "
        "and 8083.",
    )


def plans(request: PolicyRequest) -> list[Plan]:
    """Everything one request asks for: an egress policy per namespace, then the ingress policy."""
    request = normalized(request)
    egress = [agent_egress(namespace, request) for namespace in request.app_namespaces]
    return [*egress, operator_ingress(request)]


def metadata(plan: Plan) -> dict[str, object]:
    return {
        "name": plan.name,
        "namespace": plan.namespace,
        "labels": dict(MANAGED_BY),
        "annotations": {PURPOSE_ANNOTATION: plan.purpose},
    }
