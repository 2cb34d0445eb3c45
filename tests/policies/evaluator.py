"""A NetworkPolicy evaluator with Kubernetes semantics, small enough to check by reading.

Why it exists: a policy can look right and allow far more than meant (the seed document's sample
does). The tests ask this evaluator whether a connection would pass instead of comparing YAML.

Semantics (kubernetes.io/docs/concepts/services-networking/network-policies):
- a pod is isolated for a direction once any policy *in its namespace* whose ``podSelector``
  selects it lists that direction in ``policyTypes`` (default: Ingress, plus Egress when the
  spec has an ``egress`` section);
- an isolated pod accepts a connection if any rule of any such policy matches both the peer and
  the port; policies only add allowances, never subtract;
- a connection needs the egress side of the source AND the ingress side of the destination;
- a rule without peers matches every peer; a rule without ports matches every port;
- a peer with only ``podSelector`` means pods of the policy's namespace, with only
  ``namespaceSelector`` every pod of the matching namespaces, with both the matching pods of the
  matching namespaces;
- a port entry defaults to TCP; without ``port`` it covers every port of its protocol; a named
  port is looked up among the destination pod's container ports; ``endPort`` makes a range.

``ipBlock`` and unknown fields raise :class:`Unsupported`: a field this evaluator ignored could
only make a test pass that should fail.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
_DIRECTIONS = {"Ingress": ("ingress", "from"), "Egress": ("egress", "to")}


class Unsupported(ValueError):
    """The policy uses something the evaluator does not model; the test must not guess."""


@dataclass(frozen=True)
class Pod:
    """A pod as policies see it. ``ports`` are named container ports: name -> (port, protocol)."""

    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    name: str = ""


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector; the empty selector matches everything."""
    _only(selector, {"matchLabels", "matchExpressions"}, "label selector")
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, operator, values = expr["key"], expr["operator"], expr.get("values") or []
        if operator == "In":
            ok = key in labels and labels[key] in values
        elif operator == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif operator == "Exists":
            ok = key in labels
        elif operator == "DoesNotExist":
            ok = key not in labels
        else:
            raise Unsupported(f"selector operator {operator!r}")
        if not ok:
            return False
    return True


def policy_types(spec: Mapping[str, Any]) -> list[str]:
    types = spec.get("policyTypes")
    if types:
        return list(types)
    return ["Ingress", *(["Egress"] if "egress" in spec else [])]


def _only(obj: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = set(obj) - allowed
    if unknown:
        raise Unsupported(f"{what} field(s) {sorted(unknown)}")


class Cluster:
    """Namespaces (with their labels) and NetworkPolicies; answers "would this connect?"."""

    def __init__(
        self,
        policies: Iterable[Mapping[str, Any]],
        namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.policies = list(policies)
        for policy in self.policies:
            if (policy.get("apiVersion"), policy.get("kind")) != (
                "networking.k8s.io/v1",
                "NetworkPolicy",
            ):
                raise Unsupported(f"not a NetworkPolicy: {policy.get('kind')}")
            _only(policy["spec"], {"podSelector", "policyTypes", "ingress", "egress"}, "spec")
        self._extra_labels = namespace_labels or {}

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        # The API server sets the name label on every namespace; nobody can change it.
        return {**self._extra_labels.get(namespace, {}), NAMESPACE_NAME_LABEL: namespace}

    def isolating(self, pod: Pod, direction: str) -> list[Mapping[str, Any]]:
        """Specs of the policies that isolate ``pod`` for ``direction`` ("Ingress"/"Egress")."""
        return [
            policy["spec"]
            for policy in self.policies
            if policy["metadata"].get("namespace", "default") == pod.namespace
            and selector_matches(policy["spec"].get("podSelector") or {}, pod.labels)
            and direction in policy_types(policy["spec"])
        ]

    def side_allows(
        self, direction: str, pod: Pod, peer: Pod, destination: Pod, port: int, protocol: str
    ) -> bool:
        """Whether ``pod``'s policies for ``direction`` let it talk to ``peer``."""
        specs = self.isolating(pod, direction)
        if not specs:
            return True
        section, peers_key = _DIRECTIONS[direction]
        for spec in specs:
            for rule in spec.get(section) or []:
                _only(rule, {peers_key, "ports"}, f"{section} rule")
                peers = rule.get(peers_key) or []
                if peers and not any(self.peer_matches(pod.namespace, p, peer) for p in peers):
                    continue
                ports = rule.get("ports") or []
                if ports and not any(
                    port_matches(p, destination, port, protocol) for p in ports
                ):
                    continue
                return True
        return False

    def peer_matches(self, policy_namespace: str, peer: Mapping[str, Any], pod: Pod) -> bool:
        if "ipBlock" in peer:
            raise Unsupported("ipBlock peers")
        _only(peer, {"podSelector", "namespaceSelector"}, "peer")
        if not peer:
            raise Unsupported("a peer with no selector is invalid")
        ns_selector = peer.get("namespaceSelector")
        if ns_selector is None:
            if pod.namespace != policy_namespace:
                return False
        elif not selector_matches(ns_selector, self.namespace_labels(pod.namespace)):
            return False
        return selector_matches(peer.get("podSelector") or {}, pod.labels)

    def allows(self, source: Pod, destination: Pod, port: int, protocol: str = "TCP") -> bool:
        """A connection from ``source`` to ``destination``'s ``port`` passes both sides."""
        return self.side_allows(
            "Egress", source, destination, destination, port, protocol
        ) and self.side_allows("Ingress", destination, source, destination, port, protocol)


def port_matches(entry: Mapping[str, Any], destination: Pod, port: int, protocol: str) -> bool:
    _only(entry, {"port", "protocol", "endPort"}, "port entry")
    if entry.get("protocol", "TCP") != protocol:
        return False
    wanted = entry.get("port")
    if wanted is None:
        return True
    if isinstance(wanted, str):
        if "endPort" in entry:
            raise Unsupported("endPort with a named port is invalid")
        named = destination.ports.get(wanted)
        return named is not None and named == (port, protocol)
    return int(wanted) <= port <= int(entry.get("endPort", wanted))
