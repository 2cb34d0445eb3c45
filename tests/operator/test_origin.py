"""The origin Service: the Service's own pods under a name of their own, which the agent dials
(its ClusterIP is in the agent's environment) when the developer's process cannot answer."""

from __future__ import annotations

from typing import Any

from kubetunnel.kube import KubeClient
from kubetunnel.plugins import Store
from tests.operator import cluster
from tests.operator.conftest import OperatorFactory, record, report, token_of

APP = {"app": "orders"}
TUNNEL = {"we-dcode-app": "kubetunnel", "kubetunnel.dev/tunnel": "orders"}


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


async def test_origin_service_follows_the_original_selector_and_goes_with_the_record(
    client: KubeClient, store: Store, namespace: str, start_operator: OperatorFactory
) -> None:
    await cluster.create_service(client, namespace, "orders", APP, target="http")
    op = await start_operator()
    await store.create(record(namespace))
    origin_path = f"/api/v1/namespaces/{namespace}/services/kubetunnel-orders-origin"
    deployment_path = f"/apis/apps/v1/namespaces/{namespace}/deployments/kubetunnel-orders"

    async def made() -> tuple[dict[str, Any], dict[str, Any]]:
        origin = await cluster.get_or_none(client, origin_path)
        deployment = await cluster.get_or_none(client, deployment_path)
        assert origin is not None
        assert deployment is not None
        return origin, deployment

    origin, deployment = await cluster.eventually(made)
    assert origin["spec"]["selector"] == APP
    # The agent keeps the port number it accepted on; the origin maps it to the pods' port.
    assert [(p["port"], p["targetPort"]) for p in origin["spec"]["ports"]] == [(8080, 8080)]
    assert origin["metadata"]["ownerReferences"][0]["kind"] in ("Kubetunnel", "ConfigMap")
    assert _env(deployment)["KUBETUNNEL_ORIGIN_ADDRESS"] == origin["spec"]["clusterIP"]

    await cluster.run_agent_pod(client, namespace, "kubetunnel-orders")
    token = await token_of(client, namespace)

    async def switched() -> bool:
        status, _ = await report(op, namespace, "orders", token, {"connected": True})
        assert status == 202
        return await cluster.selector_of(client, namespace, "orders") == TUNNEL

    await cluster.eventually(switched)
    # Switched, the origin still selects the Service's own pods (from the annotation).
    current = await client.get(origin_path)
    assert current["spec"]["selector"] == APP

    await store.delete(namespace, "orders")

    async def gone() -> bool:
        assert await store.get(namespace, "orders") is None
        assert await cluster.get_or_none(client, origin_path) is None
        return True

    await cluster.eventually(gone)
    assert await cluster.selector_of(client, namespace, "orders") == APP
