"""Leader election: of two operators only one acts and is Ready; when it stops, the other takes
over and carries on (a report to it switches the Service)."""

from __future__ import annotations

from kubetunnel.kube import KubeClient
from kubetunnel.plugins import Store
from tests.operator import cluster
from tests.operator.conftest import OperatorFactory, record, report, token_of


async def test_only_the_leader_acts_and_a_follower_takes_over(
    client: KubeClient, store: Store, namespace: str, start_operator: OperatorFactory
) -> None:
    await cluster.create_service(client, namespace, "orders", {"app": "orders"})
    first = await start_operator()
    second = await start_operator(wait_synced=False)
    assert first.leading
    assert not second.leading
    assert not second.synced.is_set()
    await store.create(record(namespace))
    await cluster.eventually(lambda: cluster.get_or_none(
        client, f"/apis/apps/v1/namespaces/{namespace}/deployments/kubetunnel-orders"))
    await cluster.run_agent_pod(client, namespace, "kubetunnel-orders")
    token = await token_of(client, namespace)
    status, _ = await report(second, namespace, "orders", token, {"connected": True})
    assert status == 503  # the follower changes nothing
    assert await cluster.selector_of(client, namespace, "orders") == {"app": "orders"}
    lease = await client.get(
        f"/apis/coordination.k8s.io/v1/namespaces/kubetunnel/leases/op-{namespace}")
    assert lease["spec"]["holderIdentity"] == first.identity

    await first.aclose()  # releases the Lease: no need to wait for it to expire

    async def took_over() -> bool:
        return second.leading and second.synced.is_set()

    await cluster.eventually(took_over, timeout=10)
    status, _ = await report(second, namespace, "orders", token, {"connected": True})
    assert status == 202

    async def switched() -> bool:
        selector = await cluster.selector_of(client, namespace, "orders")
        return selector.get("kubetunnel.dev/tunnel") == "orders"

    await cluster.eventually(switched)
    lease = await client.get(
        f"/apis/coordination.k8s.io/v1/namespaces/kubetunnel/leases/op-{namespace}")
    assert lease["spec"]["holderIdentity"] == second.identity
    assert lease["spec"]["leaseTransitions"] >= 1
