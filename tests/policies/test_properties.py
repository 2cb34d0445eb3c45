"""What the rendered policies allow, proved by evaluating them for 1, 3, 20 and arbitrary sets of
application namespaces, with every combination of ``--allow-dns`` and
``--allow-namespace-egress``, for both renderers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubetunnel.plugins import PolicyRequest
from kubetunnel.policies import AGENT_LABELS, OPERATOR_LABELS
from kubetunnel.policies.cilium import CiliumPolicyRenderer
from kubetunnel.policies.networkpolicy import NetworkPolicyRenderer
from tests.policies.cilium_evaluator import CiliumCluster
from tests.policies.evaluator import Cluster, Pod

OPERATOR_NS = "kubetunnel"
OUTSIDE_NS = "elsewhere"  # a namespace that is never listed
RESERVED = {OPERATOR_NS, OUTSIDE_NS, "kube-system"}
OPERATOR = Pod(
    OPERATOR_NS,
    {**OPERATOR_LABELS, "app.kubernetes.io/name": "kubetunnel"},
    {"http": (8083, "TCP"), "health": (8081, "TCP")},
    "operator",
)
OPERATOR_NEIGHBOUR = Pod(OPERATOR_NS, {"app": "metrics"}, {"http": (8083, "TCP")}, "neighbour")
DNS = Pod("kube-system", {"k8s-app": "kube-dns"}, {"dns": (53, "UDP")}, "coredns")
OTHER_PORTS = (1, 22, 53, 79, 81, 443, 8080, 8081, 8082, 8084, 65535)
FLAGS = list(itertools.product([False, True], repeat=2))


class Evaluates(Protocol):
    def allows(self, source: Pod, destination: Pod, port: int, protocol: str = "TCP") -> bool: ...


Build = Callable[[Iterable[Mapping[str, Any]]], Evaluates]
RENDERERS: list[tuple[str, Any, Build]] = [
    ("networkpolicy", NetworkPolicyRenderer(), Cluster),
    ("cilium", CiliumPolicyRenderer(), CiliumCluster),
]
BY_RENDERER = pytest.mark.parametrize(
    ("renderer", "build"), [r[1:] for r in RENDERERS], ids=[r[0] for r in RENDERERS]
)


def tunnel(namespace: str) -> Pod:
    return Pod(namespace, {**AGENT_LABELS, "kubetunnel.dev/tunnel": "orders"}, name="tunnel")


def workload(namespace: str) -> Pod:
    return Pod(namespace, {"app": "orders"}, {"http": (8080, "TCP")}, "orders")


@dataclass
class Setup:
    cluster: Evaluates
    namespaces: list[str]
    dns: bool
    same: bool


def setup(renderer: Any, build: Build, namespaces: Iterable[str], dns: bool, same: bool) -> Setup:
    listed = sorted(set(namespaces))
    request = PolicyRequest(OPERATOR_NS, tuple(listed), dns, same)
    return Setup(build(renderer.render(request)), listed, dns, same)


def check_all(s: Setup) -> None:
    """Every property of issue 8, for one rendered set."""
    c = s.cluster
    for ns in s.namespaces:
        # Tunnel pod -> operator on 80 and 8083 allowed; any other port or UDP denied.
        assert c.allows(tunnel(ns), OPERATOR, 80), ns
        assert c.allows(tunnel(ns), OPERATOR, 8083), ns
        for port in OTHER_PORTS:
            assert not c.allows(tunnel(ns), OPERATOR, port), (ns, port)
        assert not c.allows(tunnel(ns), OPERATOR, 8083, "UDP"), ns
        # Only tunnel pods call the operator, even from a listed namespace.
        assert not c.allows(workload(ns), OPERATOR, 8083), ns
        # Tunnel pod -> anything but the operator denied, unless a flag says otherwise.
        assert not c.allows(tunnel(ns), OPERATOR_NEIGHBOUR, 8083), ns
        assert c.allows(tunnel(ns), DNS, 53, "UDP") is s.dns, ns
        assert c.allows(tunnel(ns), DNS, 53, "TCP") is s.dns, ns
        assert not c.allows(tunnel(ns), DNS, 80), ns
        assert c.allows(tunnel(ns), workload(ns), 8080) is s.same, ns
        assert c.allows(tunnel(ns), workload(ns), 5432, "UDP") is s.same, ns
        assert not c.allows(tunnel(ns), workload(OUTSIDE_NS), 8080), ns
        assert not c.allows(tunnel(ns), tunnel(OUTSIDE_NS), 8080), ns
        # ... and never another application namespace.
        for other in s.namespaces:
            if other != ns:
                assert not c.allows(tunnel(ns), workload(other), 8080), (ns, other)
                assert not c.allows(tunnel(ns), tunnel(other), 7000), (ns, other)
        # The policies restrict tunnel pods only: the namespace's own workloads are untouched.
        assert c.allows(workload(ns), workload(OUTSIDE_NS), 8080), ns
    # A pod of a namespace not listed -> operator denied, whatever its labels.
    for pod in (tunnel(OUTSIDE_NS), workload(OUTSIDE_NS), OPERATOR_NEIGHBOUR, DNS):
        for port in (80, 8083, 8081):
            assert not c.allows(pod, OPERATOR, port), (pod, port)


@pytest.mark.parametrize(("dns", "same"), FLAGS)
@pytest.mark.parametrize("count", [1, 3, 20])
@BY_RENDERER
def test_properties_hold(renderer: Any, build: Build, count: int, dns: bool, same: bool) -> None:
    check_all(setup(renderer, build, [f"team-{i}" for i in range(count)], dns, same))


def test_the_properties_can_fail() -> None:
    # check_all must notice an operator open to everyone, or its passing proves nothing.
    s = setup(NetworkPolicyRenderer(), Cluster, ["shop"], False, False)
    assert isinstance(s.cluster, Cluster)
    open_operator = Cluster(
        [p for p in s.cluster.policies if p["metadata"]["namespace"] != OPERATOR_NS]
    )
    with pytest.raises(AssertionError):
        check_all(Setup(open_operator, s.namespaces, False, False))
    with pytest.raises(AssertionError):
        check_all(Setup(s.cluster, s.namespaces, True, False))


namespace_names = st.from_regex(r"[a-z]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True).filter(
    lambda name: name not in RESERVED
)


@settings(max_examples=40, deadline=None)
@given(
    namespaces=st.lists(namespace_names, min_size=1, max_size=25),
    dns=st.booleans(),
    same=st.booleans(),
)
@BY_RENDERER
def test_properties_hold_for_any_namespace_set(
    renderer: Any, build: Build, namespaces: list[str], dns: bool, same: bool
) -> None:
    check_all(setup(renderer, build, namespaces, dns, same))
