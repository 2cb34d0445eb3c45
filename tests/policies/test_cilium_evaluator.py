"""The Cilium evaluator on the namespace and port rules the ``cilium`` renderer relies on."""

from __future__ import annotations

from typing import Any

import pytest

from tests.policies.cilium_evaluator import CiliumCluster
from tests.policies.evaluator import Pod, Unsupported

WEB = Pod("shop", {"app": "web"})
DB = Pod("shop", {"app": "db"})
BLOG = Pod("blog", {"app": "web"})
NS = "k8s:io.kubernetes.pod.namespace"


def cnp(namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": spec,
    }


def web_egress(*rules: dict[str, Any]) -> CiliumCluster:
    selector = {"matchLabels": {"k8s:app": "web"}}
    return CiliumCluster([cnp("shop", {"endpointSelector": selector, "egress": list(rules)})])


def test_no_policy_allows_everything() -> None:
    assert CiliumCluster([]).allows(WEB, BLOG, 80)


def test_endpoint_selector_is_confined_to_the_policy_namespace() -> None:
    nobody = {"fromEndpoints": [{"matchLabels": {"app": "nobody"}}]}
    cluster = CiliumCluster([cnp("shop", {"endpointSelector": {}, "ingress": [nobody]})])
    assert not cluster.allows(BLOG, WEB, 80)
    assert cluster.allows(WEB, BLOG, 80)  # BLOG's namespace has no policy


def test_an_empty_peer_selector_means_this_namespace() -> None:
    cluster = web_egress({"toEndpoints": [{}]})
    assert cluster.allows(WEB, DB, 5432)
    assert not cluster.allows(WEB, BLOG, 80)


def test_naming_the_namespace_reaches_across() -> None:
    cluster = web_egress({"toEndpoints": [{"matchLabels": {NS: "blog", "app": "web"}}]})
    assert cluster.allows(WEB, BLOG, 80)
    assert not cluster.allows(WEB, Pod("blog", {"app": "db"}), 80)
    # Without the namespace label the same pod labels only match in the policy's namespace.
    cluster = web_egress({"toEndpoints": [{"matchLabels": {"k8s:app": "db"}}]})
    assert cluster.allows(WEB, DB, 80)
    assert not cluster.allows(WEB, Pod("blog", {"app": "db"}), 80)


def test_ports_and_protocols() -> None:
    everything = {"matchLabels": {NS: "blog"}}
    cluster = web_egress({
        "toEndpoints": [everything],
        "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}, {"port": "53"}]}],
    })
    assert cluster.allows(WEB, BLOG, 80)
    assert not cluster.allows(WEB, BLOG, 80, "UDP")
    assert cluster.allows(WEB, BLOG, 53, "UDP")  # no protocol: ANY
    assert cluster.allows(WEB, BLOG, 53, "TCP")
    assert not cluster.allows(WEB, BLOG, 81)
    assert web_egress({"toEndpoints": [everything]}).allows(WEB, BLOG, 12345, "UDP")


def test_both_sides_must_allow() -> None:
    db_closed = cnp("shop", {"endpointSelector": {"matchLabels": {"app": "db"}}, "ingress": [
        {"fromEndpoints": [{"matchLabels": {"app": "cron"}}]},
    ]})
    assert not CiliumCluster([db_closed]).allows(WEB, DB, 5432)
    assert CiliumCluster([db_closed]).allows(Pod("shop", {"app": "cron"}), DB, 5432)


@pytest.mark.parametrize(
    "rule",
    [
        {"toEntities": ["world"]},
        {"toCIDR": ["10.0.0.0/8"]},
        {"toPorts": [{"ports": [{"port": "80"}]}]},
        {"toEndpoints": [{"matchLabels": {"reserved:host": ""}}]},
        {"toEndpoints": [{}], "toPorts": [{"ports": [{"port": "http"}]}]},
    ],
)
def test_what_it_does_not_model_is_refused(rule: dict[str, Any]) -> None:
    with pytest.raises(Unsupported):
        web_egress(rule).allows(WEB, DB, 80)
