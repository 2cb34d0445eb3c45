"""--manage-network-policies: policies appear with a namespace's first tunnel and go with its
last, and the operator's ingress policy always lists exactly the namespaces with tunnels."""

from __future__ import annotations

import uuid

import pytest

from kubetunnel.kube import ApiError, KubeClient
from kubetunnel.plugins import Store
from kubetunnel.policies import EGRESS_POLICY_NAME, INGRESS_POLICY_NAME
from modes.operator.policies import NAMESPACE_LABEL
from tests.operator import cluster
from tests.operator.conftest import OperatorFactory, record


async def _policy(client: KubeClient, namespace: str, name: str) -> dict[str, object] | None:
    try:
        found: dict[str, object] = await client.get(
            f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}")
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    return found


async def _allowed(client: KubeClient, operator_namespace: str) -> set[str]:
    policy = await _policy(client, operator_namespace, INGRESS_POLICY_NAME)
    if policy is None:
        return set()
    rules = policy["spec"]["ingress"]  # type: ignore[index]
    return {peer["namespaceSelector"]["matchLabels"][NAMESPACE_LABEL]
            for rule in rules for peer in rule["from"]}


@pytest.mark.parametrize("store", ["crd"], indirect=True)
async def test_policies_follow_the_tunnels(
    client: KubeClient, store: Store, namespace: str, start_operator: OperatorFactory,
) -> None:
    other = f"t-{uuid.uuid4().hex[:10]}"
    await client.create("/api/v1/namespaces",
                        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}})
    for ns, service in ((namespace, "orders"), (other, "cart")):
        await cluster.create_service(client, ns, service, {"app": service})
    await start_operator(watch_namespaces=(namespace, other), namespace=namespace,
                         operator_url="http://127.0.0.1:9", manage_network_policies=True)
    assert await _allowed(client, namespace) == set()

    await store.create(record(namespace, "orders"))
    await cluster.eventually(lambda: _policy(client, namespace, EGRESS_POLICY_NAME))
    assert await cluster.eventually(
        lambda: _is(_allowed(client, namespace), {namespace}))
    await store.create(record(other, "cart"))
    await cluster.eventually(lambda: _policy(client, other, EGRESS_POLICY_NAME))
    assert await cluster.eventually(lambda: _is(_allowed(client, namespace), {namespace, other}))

    await store.delete(namespace, "orders")
    assert await cluster.eventually(lambda: _is(_allowed(client, namespace), {other}))
    assert await cluster.eventually(lambda: _gone(client, namespace, EGRESS_POLICY_NAME))
    assert await _policy(client, other, EGRESS_POLICY_NAME) is not None

    await store.delete(other, "cart")
    assert await cluster.eventually(lambda: _gone(client, namespace, INGRESS_POLICY_NAME))
    assert await cluster.eventually(lambda: _gone(client, other, EGRESS_POLICY_NAME))
    await client.delete(f"/api/v1/namespaces/{other}")


async def _is(found: object, expected: set[str]) -> bool:
    return await found == expected  # type: ignore[misc]


async def _gone(client: KubeClient, namespace: str, name: str) -> bool:
    return await _policy(client, namespace, name) is None
