"""The ``cilium`` renderer: cilium.io/v2 CiliumNetworkPolicy, for clusters that run Cilium.

Cilium enforces plain NetworkPolicy too; this renderer is for clusters whose policies are
written in Cilium's own resource, so ours sit next to theirs in the same form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubetunnel.policies import rules
from kubetunnel.policies.rendering import PlanRenderer

# Cilium gives every endpoint its pod's namespace as this label. A selector without it is
# confined to the policy's own namespace, which is exactly the meaning of Peer(namespace=None).
NAMESPACE_LABEL = "k8s:io.kubernetes.pod.namespace"


def _labels(labels: Mapping[str, str]) -> dict[str, str]:
    # "k8s:" restricts a key to labels that came from Kubernetes, not from another source.
    return {f"k8s:{key}": value for key, value in labels.items()}


def _endpoint(peer: rules.Peer) -> dict[str, Any]:
    labels = {} if peer.namespace is None else {NAMESPACE_LABEL: peer.namespace}
    labels.update(_labels(peer.labels))
    return {"matchLabels": labels} if labels else {}


def _rule(rule: rules.Rule, direction: rules.Direction) -> dict[str, Any]:
    peers_key = "toEndpoints" if direction == "egress" else "fromEndpoints"
    entry: dict[str, Any] = {peers_key: [_endpoint(peer) for peer in rule.peers]}
    if rule.ports:
        ports = [{"port": str(p.number), "protocol": p.protocol} for p in rule.ports]
        entry["toPorts"] = [{"ports": ports}]
    return entry


class CiliumPolicyRenderer(PlanRenderer):
    """Policy plugin "cilium": CiliumNetworkPolicy objects (cilium.io/v2)."""

    def render_plan(self, plan: rules.Plan) -> dict[str, Any]:
        return {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": rules.metadata(plan),
            "spec": {
                "endpointSelector": {"matchLabels": _labels(plan.selects)},
                plan.direction: [_rule(rule, plan.direction) for rule in plan.rules],
            },
        }
