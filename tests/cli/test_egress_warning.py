"""connect warns when the namespace's policies keep the tunnel pod from its own namespace."""

from __future__ import annotations

from typing import Any

from kubetunnel.plugins import PolicyRequest
from kubetunnel.policies.networkpolicy import NetworkPolicyRenderer
from modes.cli.cluster import egress_blockers

AGENT = {"we-dcode-app": "kubetunnel", "kubetunnel.dev/tunnel": "orders"}


def _rendered(allow_namespace_egress: bool) -> list[dict[str, Any]]:
    objects = NetworkPolicyRenderer().render(PolicyRequest(
        "kubetunnel", ("shop",), allow_dns=True, allow_namespace_egress=allow_namespace_egress))
    return [o for o in objects if o["metadata"]["namespace"] == "shop"]


def test_our_policies_without_namespace_egress_are_reported() -> None:
    assert egress_blockers(_rendered(False), "shop", AGENT) == ["kubetunnel-agent-egress"]


def test_our_policies_with_namespace_egress_are_fine() -> None:
    assert egress_blockers(_rendered(True), "shop", AGENT) == []


def test_no_egress_isolation_is_fine_and_other_pods_policies_do_not_count() -> None:
    ingress_only = {"metadata": {"name": "deny-in"},
                    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    others = {"metadata": {"name": "db-egress"},
              "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                       "policyTypes": ["Egress"], "egress": []}}
    assert egress_blockers([ingress_only, others], "shop", AGENT) == []


def test_default_deny_egress_is_reported_unless_another_policy_allows() -> None:
    deny = {"metadata": {"name": "default-deny"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"]}}
    assert egress_blockers([deny], "shop", AGENT) == ["default-deny"]
    allow_same_ns = {"metadata": {"name": "same-ns"},
                     "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                              "egress": [{"to": [{"podSelector": {}}]}]}}
    assert egress_blockers([deny, allow_same_ns], "shop", AGENT) == []
