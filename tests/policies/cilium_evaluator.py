"""A CiliumNetworkPolicy evaluator for the subset KubeTunnel renders, so the ``cilium`` objects
are checked by the same properties as the NetworkPolicy ones instead of by eye.

Semantics modelled (docs.cilium.io, "Layer 3/4 policy" and "Kubernetes namespaces"):
- an endpoint carries its pod's labels plus ``io.kubernetes.pod.namespace``; a selector key may
  carry a source prefix (``k8s:``, ``any:``), matched here against Kubernetes labels;
- a CiliumNetworkPolicy is namespaced: its ``endpointSelector`` selects only endpoints of its
  namespace, and an ``fromEndpoints``/``toEndpoints`` selector that does not name a namespace
  is confined to it too (so ``{}`` means "every endpoint of this namespace");
- an endpoint is isolated for a direction once a policy selecting it has rules for that
  direction; then a connection passes only if some rule matches the peer and the port;
- no ``toPorts`` means every port; a port entry's protocol defaults to ANY.

Anything else (entities, CIDRs, L7 rules, deny rules, named ports) raises ``Unsupported``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tests.policies.evaluator import Pod, Unsupported, selector_matches

NAMESPACE_KEY = "io.kubernetes.pod.namespace"
_SECTIONS = {"Ingress": ("ingress", "fromEndpoints"), "Egress": ("egress", "toEndpoints")}


def _strip_source(key: str) -> str:
    source, sep, rest = key.partition(":")
    if not sep:
        return key
    if source not in ("k8s", "any"):
        raise Unsupported(f"label source {source!r}")
    return rest


def _plain(selector: Mapping[str, Any]) -> dict[str, Any]:
    """The selector with source prefixes removed, ready for :func:`selector_matches`."""
    out: dict[str, Any] = {}
    if "matchLabels" in selector:
        out["matchLabels"] = {_strip_source(k): v for k, v in selector["matchLabels"].items()}
    if "matchExpressions" in selector:
        out["matchExpressions"] = [
            {**e, "key": _strip_source(e["key"])} for e in selector["matchExpressions"]
        ]
    extra = set(selector) - {"matchLabels", "matchExpressions"}
    if extra:
        raise Unsupported(f"selector field(s) {sorted(extra)}")
    return out


def _identity(pod: Pod) -> dict[str, str]:
    return {**pod.labels, NAMESPACE_KEY: pod.namespace}


def _selects(policy_namespace: str, selector: Mapping[str, Any], pod: Pod) -> bool:
    plain = _plain(selector)
    names_namespace = NAMESPACE_KEY in plain.get("matchLabels", {}) or any(
        e["key"] == NAMESPACE_KEY for e in plain.get("matchExpressions", [])
    )
    if not names_namespace and pod.namespace != policy_namespace:
        return False
    return selector_matches(plain, _identity(pod))


def _port_matches(entry: Mapping[str, Any], port: int, protocol: str) -> bool:
    if set(entry) - {"port", "protocol", "endPort"}:
        raise Unsupported(f"port field(s) {sorted(set(entry))}")
    if entry.get("protocol", "ANY") not in ("ANY", protocol):
        return False
    if not str(entry["port"]).isdigit():
        raise Unsupported("named ports")
    low = int(entry["port"])
    if low == 0:
        return True
    return low <= port <= int(entry.get("endPort", low))


class CiliumCluster:
    """CiliumNetworkPolicies; answers "would this connect?" like :class:`evaluator.Cluster`."""

    def __init__(self, policies: Iterable[Mapping[str, Any]]) -> None:
        self.policies = list(policies)
        for policy in self.policies:
            if (policy.get("apiVersion"), policy.get("kind")) != (
                "cilium.io/v2",
                "CiliumNetworkPolicy",
            ):
                raise Unsupported(f"not a CiliumNetworkPolicy: {policy.get('kind')}")
            extra = set(policy["spec"]) - {"endpointSelector", "ingress", "egress", "description"}
            if extra:
                raise Unsupported(f"spec field(s) {sorted(extra)}")

    def side_allows(
        self, direction: str, pod: Pod, peer: Pod, port: int, protocol: str
    ) -> bool:
        section, peers_key = _SECTIONS[direction]
        isolating = [
            policy["spec"]
            for policy in self.policies
            if section in policy["spec"]
            and _selects(policy["metadata"]["namespace"], policy["spec"]["endpointSelector"], pod)
        ]
        if not isolating:
            return True
        for spec in isolating:
            if not spec[section]:
                # Whether an empty section isolates differs between Cilium versions.
                raise Unsupported(f"an empty {section} section")
            for rule in spec[section]:
                if set(rule) - {peers_key, "toPorts"} or peers_key not in rule:
                    raise Unsupported(f"{section} rule {sorted(rule)}")
                if not any(_selects(pod.namespace, sel, peer) for sel in rule[peers_key]):
                    continue
                port_rules = rule.get("toPorts")
                if port_rules is None or any(
                    _port_matches(entry, port, protocol)
                    for port_rule in port_rules
                    for entry in port_rule.get("ports", [])
                ):
                    return True
        return False

    def allows(self, source: Pod, destination: Pod, port: int, protocol: str = "TCP") -> bool:
        return self.side_allows(
            "Egress", source, destination, port, protocol
        ) and self.side_allows("Ingress", destination, source, port, protocol)
