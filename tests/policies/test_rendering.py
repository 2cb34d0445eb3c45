"""Both renderers: schema-valid objects, stable names, input checks, the registry wiring."""

from __future__ import annotations

import itertools
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from kubetunnel.errors import UsageError
from kubetunnel.plugins import PolicyRenderer, PolicyRequest
from kubetunnel.policies import EGRESS_POLICY_NAME, INGRESS_POLICY_NAME, MANAGED_BY
from kubetunnel.policies.cilium import CiliumPolicyRenderer
from kubetunnel.policies.networkpolicy import NetworkPolicyRenderer
from kubetunnel.registry import get_registry
from tests.policies import cilium_schema

KUBERNETES_VERSION = "1.37.0"
FLAGS = list(itertools.product([False, True], repeat=2))


def request(*namespaces: str, dns: bool = False, same: bool = False) -> PolicyRequest:
    return PolicyRequest("kubetunnel", namespaces, allow_dns=dns, allow_namespace_egress=same)


def validate_network_policy(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(("dns", "same"), FLAGS)
@pytest.mark.parametrize("count", [1, 3, 20])
def test_every_network_policy_is_valid(count: int, dns: bool, same: bool) -> None:
    namespaces = [f"app-{i}" for i in range(count)]
    objects = NetworkPolicyRenderer().render(request(*namespaces, dns=dns, same=same))
    assert len(objects) == count + 1
    for obj in objects:
        validate_network_policy(obj)


@pytest.mark.parametrize(("dns", "same"), FLAGS)
@pytest.mark.parametrize("count", [1, 3, 20])
def test_every_cilium_policy_fits_the_schema(count: int, dns: bool, same: bool) -> None:
    namespaces = [f"app-{i}" for i in range(count)]
    objects = CiliumPolicyRenderer().render(request(*namespaces, dns=dns, same=same))
    assert len(objects) == count + 1
    for obj in objects:
        cilium_schema.validate(obj)


def test_the_validators_do_reject_mistakes() -> None:
    # A schema check that accepts anything would make the two tests above worthless.
    policy = NetworkPolicyRenderer().render(request("shop"))[-1]
    policy["spec"]["ingress"][0]["from"][0]["ports"] = [{"port": 80}]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_network_policy(policy)
    cilium = CiliumPolicyRenderer().render(request("shop"))[-1]
    cilium["spec"]["ingress"][0]["toPorts"][0]["ports"][0]["port"] = 80
    with pytest.raises(jsonschema.ValidationError):
        cilium_schema.validate(cilium)
    cilium = CiliumPolicyRenderer().render(request("shop"))[-1]
    cilium["spec"]["ingress"][0]["toEndpoints"] = [{}]
    with pytest.raises(jsonschema.ValidationError):
        cilium_schema.validate(cilium)


@pytest.mark.parametrize("renderer", [NetworkPolicyRenderer(), CiliumPolicyRenderer()])
def test_names_namespaces_and_labels_are_stable(renderer: PolicyRenderer) -> None:
    objects = renderer.render(request("web", "shop", "web"))
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects] == [
        ("shop", EGRESS_POLICY_NAME),
        ("web", EGRESS_POLICY_NAME),
        ("kubetunnel", INGRESS_POLICY_NAME),
    ]
    for obj in objects:
        assert obj["metadata"]["labels"] == dict(MANAGED_BY)
    # The same set in another order renders the same objects: applying twice changes nothing.
    assert renderer.render(request("shop", "web")) == objects


def test_the_ingress_policy_is_one_rule_with_the_ports() -> None:
    ingress = NetworkPolicyRenderer().render(request("a", "b", "c"))[-1]["spec"]["ingress"]
    assert len(ingress) == 1
    assert [p["namespaceSelector"]["matchLabels"] for p in ingress[0]["from"]] == [
        {"kubernetes.io/metadata.name": ns} for ns in ("a", "b", "c")
    ]
    assert ingress[0]["ports"] == [
        {"protocol": "TCP", "port": 80},
        {"protocol": "TCP", "port": 8083},
    ]


@pytest.mark.parametrize("renderer", [NetworkPolicyRenderer(), CiliumPolicyRenderer()])
def test_per_namespace_calls_match_the_full_render(renderer: NetworkPolicyRenderer) -> None:
    req = request("a", "b", dns=True)
    objects = renderer.render(req)
    assert renderer.egress_policy("b", req) == objects[1]
    assert renderer.egress_policy("b", request("zzz", dns=True)) == objects[1]
    assert renderer.ingress_policy(req) == objects[-1]


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (request(), "at least one application namespace is needed"),
        (request("Shop"), "invalid application namespace 'Shop'"),
        (request("a" * 64), "invalid application namespace"),
        (request("ok", "-bad"), "invalid application namespace '-bad'"),
        (PolicyRequest("kube_tunnel", ("a",)), "invalid operator namespace 'kube_tunnel'"),
    ],
)
def test_bad_requests_are_usage_errors(req: PolicyRequest, message: str) -> None:
    for renderer in (NetworkPolicyRenderer(), CiliumPolicyRenderer()):
        with pytest.raises(UsageError, match=message) as info:
            renderer.render(req)
        assert "\n" not in str(info.value)


def test_the_registry_builds_both_renderers_from_settings() -> None:
    registry = get_registry()
    assert {"networkpolicy", "cilium"} <= set(registry.names("policy"))
    for name, cls in (("networkpolicy", NetworkPolicyRenderer), ("cilium", CiliumPolicyRenderer)):
        renderer = registry.create("policy", name, None)
        assert isinstance(renderer, cls)
        assert renderer.render(request("a"))[0]["metadata"]["namespace"] == "a"
