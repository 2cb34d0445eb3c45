"""The evaluator itself, on the cases the Kubernetes documentation spells out.

The renderer tests are only as good as the evaluator, so each semantic rule it implements has a
case here that would fail if it were implemented the convenient way instead.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.policies.evaluator import Cluster, Pod, Unsupported, policy_types, selector_matches

WEB = Pod("shop", {"app": "web"}, {"http": (8080, "TCP")}, "web")
DB = Pod("shop", {"app": "db"}, {"sql": (5432, "TCP")}, "db")
OTHER_WEB = Pod("blog", {"app": "web"}, name="blog-web")
MONITOR = Pod("monitoring", {"app": "prometheus"}, name="prom")


def policy(namespace: str, spec: dict[str, Any], name: str = "p") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def db_ingress(*rules: dict[str, Any]) -> dict[str, Any]:
    return policy("shop", {
        "podSelector": {"matchLabels": {"app": "db"}},
        "policyTypes": ["Ingress"],
        "ingress": list(rules),
    })


def test_no_policy_allows_everything() -> None:
    cluster = Cluster([])
    assert cluster.allows(WEB, DB, 5432)
    assert cluster.allows(MONITOR, WEB, 1, "UDP")


def test_an_empty_ingress_list_isolates_and_allows_nothing() -> None:
    cluster = Cluster([policy("shop", {"podSelector": {}, "policyTypes": ["Ingress"]})])
    assert not cluster.allows(WEB, DB, 5432)
    assert not cluster.allows(MONITOR, WEB, 8080)
    # Ingress isolation says nothing about egress: shop pods still reach out.
    assert cluster.allows(WEB, MONITOR, 9090)


def test_a_policy_isolates_only_pods_of_its_own_namespace() -> None:
    deny_all = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    cluster = Cluster([policy("blog", deny_all)])
    assert cluster.allows(WEB, DB, 5432)
    assert not cluster.allows(WEB, OTHER_WEB, 80)
    assert not cluster.allows(OTHER_WEB, WEB, 8080)


def test_policy_types_default_follows_the_sections_present() -> None:
    assert policy_types({"podSelector": {}}) == ["Ingress"]
    assert policy_types({"podSelector": {}, "egress": []}) == ["Ingress", "Egress"]
    assert policy_types({"podSelector": {}, "policyTypes": ["Egress"]}) == ["Egress"]
    cluster = Cluster([policy("shop", {"podSelector": {}, "egress": [{}]})])
    # Egress allows everything ({} rule), but the default policyTypes also isolated ingress.
    assert cluster.allows(WEB, MONITOR, 1)
    assert not cluster.allows(MONITOR, WEB, 8080)


def test_policies_add_up() -> None:
    from_web = {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}
    from_monitoring = {"from": [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}
    cluster = Cluster([db_ingress(from_web), db_ingress(from_monitoring)])
    assert cluster.allows(WEB, DB, 5432)
    assert cluster.allows(MONITOR, DB, 5432)
    assert not cluster.allows(OTHER_WEB, DB, 5432)


def test_pod_selector_alone_means_the_policy_namespace() -> None:
    cluster = Cluster([db_ingress({"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]})])
    assert cluster.allows(WEB, DB, 5432)
    assert not cluster.allows(OTHER_WEB, DB, 5432)


def test_both_selectors_in_one_peer_are_and_in_two_peers_or() -> None:
    blog = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "blog"}}}
    web = {"podSelector": {"matchLabels": {"app": "web"}}}
    blog_cron = Pod("blog", {"app": "cron"})
    combined = Cluster([db_ingress({"from": [{**blog, **web}]})])
    assert combined.allows(OTHER_WEB, DB, 5432)
    assert not combined.allows(blog_cron, DB, 5432)
    assert not combined.allows(WEB, DB, 5432)
    separate = Cluster([db_ingress({"from": [blog, web]})])
    assert separate.allows(blog_cron, DB, 5432)
    assert separate.allows(WEB, DB, 5432)


def test_namespace_selector_uses_namespace_labels() -> None:
    peer = {"namespaceSelector": {"matchLabels": {"team": "ops"}}}
    cluster = Cluster([db_ingress({"from": [peer]})], {"monitoring": {"team": "ops"}})
    assert cluster.allows(MONITOR, DB, 5432)
    assert not cluster.allows(OTHER_WEB, DB, 5432)


def test_missing_peers_or_ports_match_everything() -> None:
    cluster = Cluster([db_ingress({"ports": [{"port": 5432}]})])
    assert cluster.allows(MONITOR, DB, 5432)
    assert not cluster.allows(MONITOR, DB, 5433)
    cluster = Cluster([db_ingress({"from": [{"podSelector": {}}]})])
    assert cluster.allows(WEB, DB, 1)
    assert not cluster.allows(MONITOR, DB, 1)


def test_ports_protocol_defaults_to_tcp_and_end_port_makes_a_range() -> None:
    cluster = Cluster([db_ingress({"ports": [{"port": 5000, "endPort": 5999}]})])
    assert cluster.allows(WEB, DB, 5000)
    assert cluster.allows(WEB, DB, 5999)
    assert not cluster.allows(WEB, DB, 6000)
    assert not cluster.allows(WEB, DB, 5432, "UDP")
    every_udp = Cluster([db_ingress({"ports": [{"protocol": "UDP"}]})])
    assert every_udp.allows(WEB, DB, 53, "UDP")
    assert not every_udp.allows(WEB, DB, 53, "TCP")


def test_named_ports_resolve_on_the_destination_pod() -> None:
    cluster = Cluster([db_ingress({"ports": [{"port": "sql"}]})])
    assert cluster.allows(WEB, DB, 5432)
    assert not cluster.allows(WEB, DB, 5433)
    egress = policy("shop", {
        "podSelector": {"matchLabels": {"app": "db"}},
        "policyTypes": ["Egress"],
        "egress": [{"ports": [{"port": "http"}]}],
    })
    cluster = Cluster([egress])
    assert cluster.allows(DB, WEB, 8080)
    # The name means the destination's port: MONITOR has no port called "http".
    assert not cluster.allows(DB, MONITOR, 8080)


def test_a_connection_needs_both_egress_and_ingress() -> None:
    egress_only_to_db = policy("shop", {
        "podSelector": {"matchLabels": {"app": "web"}},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}],
    })
    closed_db = db_ingress()
    assert Cluster([egress_only_to_db]).allows(WEB, DB, 5432)
    assert not Cluster([egress_only_to_db]).allows(WEB, MONITOR, 9090)
    assert not Cluster([egress_only_to_db, closed_db]).allows(WEB, DB, 5432)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ({"key": "app", "operator": "In", "values": ["web", "api"]}, True),
        ({"key": "app", "operator": "In", "values": ["db"]}, False),
        ({"key": "app", "operator": "NotIn", "values": ["db"]}, True),
        ({"key": "tier", "operator": "NotIn", "values": ["db"]}, True),
        ({"key": "app", "operator": "Exists"}, True),
        ({"key": "tier", "operator": "Exists"}, False),
        ({"key": "tier", "operator": "DoesNotExist"}, True),
    ],
)
def test_match_expressions(expression: dict[str, Any], expected: bool) -> None:
    assert selector_matches({"matchExpressions": [expression]}, {"app": "web"}) is expected


def test_what_it_does_not_model_is_refused() -> None:
    with pytest.raises(Unsupported):
        Cluster([db_ingress({"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]})]).allows(
            WEB, DB, 5432
        )
    with pytest.raises(Unsupported):
        Cluster([db_ingress({"from": [{"podSelecter": {}}]})]).allows(WEB, DB, 5432)
    with pytest.raises(Unsupported):
        Cluster([policy("shop", {"podSelector": {}, "ingres": []})])
    with pytest.raises(Unsupported):
        selector_matches({"matchExpressions": [{"key": "a", "operator": "Gt"}]}, {})
