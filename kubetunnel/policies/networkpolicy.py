"""The ``networkpolicy`` renderer: networking.k8s.io/v1 NetworkPolicy, enforced by most CNIs.

Namespaces are matched by ``kubernetes.io/metadata.name``, which the API server sets on every
namespace (Kubernetes 1.21 and later), so no one has to label namespaces by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubetunnel.policies import rules
from kubetunnel.policies.rendering import PlanRenderer

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def _selector(labels: Mapping[str, str]) -> dict[str, Any]:
    return {"matchLabels": dict(labels)} if labels else {}


def _peer(peer: rules.Peer) -> dict[str, Any]:
    if peer.namespace is None:
        # A podSelector alone means "in the policy's own namespace".
        return {"podSelector": _selector(peer.labels)}
    # Both selectors in ONE peer: these pods in that namespace. Two peers would mean "these
    # pods here, or anything there", a classic way to allow far more than intended.
    entry: dict[str, Any] = {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: peer.namespace}}
    }
    if peer.labels:
        entry["podSelector"] = _selector(peer.labels)
    return entry


def _rule(rule: rules.Rule, peers_key: str) -> dict[str, Any]:
    entry: dict[str, Any] = {peers_key: [_peer(peer) for peer in rule.peers]}
    if rule.ports:
        entry["ports"] = [{"protocol": p.protocol, "port": p.number} for p in rule.ports]
    return entry


class NetworkPolicyRenderer(PlanRenderer):
    """Policy plugin "networkpolicy": Kubernetes NetworkPolicy objects (the default)."""

    def render_plan(self, plan: rules.Plan) -> dict[str, Any]:
        peers_key = "to" if plan.direction == "egress" else "from"
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": rules.metadata(plan),
            "spec": {
                "podSelector": _selector(plan.selects),
                "policyTypes": [plan.direction.capitalize()],
                plan.direction: [_rule(rule, peers_key) for rule in plan.rules],
            },
        }
