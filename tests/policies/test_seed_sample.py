"""Why we do not ship the seed document's sample policies: evaluated, they are loose.

The seed ("KubeTunnel Networking") lists three application namespaces in the operator's ingress
policy, but only the last entry carries ``ports``. In YAML that makes three separate ingress
rules of which only the last restricts ports, so the first two namespaces may reach the operator
pod on every port (its health port, anything it listens on later). The sample below has that
shape; the tests document the consequence and that our rendering closes it.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from kubetunnel.plugins import PolicyRequest
from kubetunnel.policies import OPERATOR_LABELS
from kubetunnel.policies.networkpolicy import NetworkPolicyRenderer
from tests.policies.evaluator import Cluster, Pod

SEED_SAMPLE = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-kubetunnel-ingress
  namespace: kubetunnel
spec:
  podSelector:
    matchLabels:
      we-dcode-app: kubetunnel-operator
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: app1
  - from:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: app2
  - from:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: app3
    ports:
    - {protocol: TCP, port: 80}
    - {protocol: TCP, port: 8083}
"""

OPERATOR = Pod("kubetunnel", dict(OPERATOR_LABELS), {"http": (8083, "TCP")}, "operator")
SEED_NAMESPACES = ("app1", "app2", "app3")


def seed_policies() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(SEED_SAMPLE))


def test_the_seed_sample_is_valid_so_nothing_would_warn() -> None:
    for policy in seed_policies():
        kubernetes_validate.validate(policy, "1.37.0", strict=True)


def test_the_seed_sample_opens_every_port_to_the_first_two_namespaces() -> None:
    # The seed's egress policies live in the application namespaces and need not select every
    # pod; the operator's safety cannot rest on them, so this cluster has the ingress side only.
    cluster = Cluster(seed_policies())
    for namespace in ("app1", "app2"):
        pod = Pod(namespace, {"app": "anything"})
        assert cluster.allows(pod, OPERATOR, 8083)
        assert cluster.allows(pod, OPERATOR, 8081)  # the health port
        assert cluster.allows(pod, OPERATOR, 22)
        assert cluster.allows(pod, OPERATOR, 5353, "UDP")
    # Only the last namespace gets the port restriction the seed meant for all three.
    pod = Pod("app3", {"app": "anything"})
    assert cluster.allows(pod, OPERATOR, 8083)
    assert not cluster.allows(pod, OPERATOR, 22)
    assert not cluster.allows(Pod("app4", {"app": "anything"}), OPERATOR, 8083)


@pytest.mark.parametrize("namespace", SEED_NAMESPACES)
def test_our_rendering_of_the_same_namespaces_is_tight(namespace: str) -> None:
    rendered = NetworkPolicyRenderer().render(PolicyRequest("kubetunnel", SEED_NAMESPACES))
    cluster = Cluster(rendered)
    tunnel = Pod(namespace, {"we-dcode-app": "kubetunnel"})
    assert cluster.allows(tunnel, OPERATOR, 8083)
    for port in (22, 8081):
        assert not cluster.allows(tunnel, OPERATOR, port)
        assert not cluster.side_allows("Ingress", OPERATOR, tunnel, OPERATOR, port, "TCP")
    assert not cluster.allows(Pod(namespace, {"app": "anything"}), OPERATOR, 8083)


def test_ports_written_inside_the_last_peer_would_not_even_be_a_network_policy() -> None:
    # The other way to read the seed's indentation: "ports" as a key of the last peer. The
    # schema has no such field, so the API server would refuse (strict) or drop it (lenient,
    # leaving all three namespaces open on every port).
    policy = seed_policies()[0]
    last = policy["spec"]["ingress"].pop()
    peer = {**last["from"][0], "ports": last["ports"]}
    peers = [rule["from"][0] for rule in policy["spec"]["ingress"]]
    policy["spec"]["ingress"] = [{"from": [*peers, peer]}]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(policy, "1.37.0", strict=True)
