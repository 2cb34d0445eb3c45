"""A record's whole life on the sandbox, with each store: owned objects, the swap on a connected
report, the restore on a disconnected one, and the finalizer's clean-up on deletion."""

from __future__ import annotations

import json

from kubetunnel.kube import KubeClient
from kubetunnel.plugins import Store
from modes.operator.selectors import ORIGINAL_ANNOTATION, TUNNEL_ANNOTATION
from tests.operator import cluster
from tests.operator.conftest import OperatorFactory, record, report, token_of

APP = {"app": "orders"}
TUNNEL = {"we-dcode-app": "kubetunnel", "kubetunnel.dev/tunnel": "orders"}


async def _phase(store: Store, namespace: str, phase: str, name: str = "orders") -> None:
    async def probe() -> bool:
        current = await store.get(namespace, name)
        assert current is not None, "record gone"
        assert current.status.phase == phase, current.status
        return True

    await cluster.eventually(probe)


async def test_full_reconcile_swap_restore_and_delete(
    client: KubeClient, store: Store, namespace: str, start_operator: OperatorFactory
) -> None:
    await cluster.create_service(client, namespace, "orders", APP)
    op = await start_operator()
    created = await store.create(record(namespace))
    base = f"/namespaces/{namespace}"

    async def owned() -> bool:
        dep = await cluster.get_or_none(
            client, f"/apis/apps/v1{base}/deployments/kubetunnel-orders")
        sec = await cluster.get_or_none(client, f"/api/v1{base}/secrets/kubetunnel-orders")
        acc = await cluster.get_or_none(client, f"/api/v1{base}/serviceaccounts/kubetunnel-orders")
        assert dep
        assert sec
        assert acc
        return True

    await cluster.eventually(owned)
    dep = await client.get(f"/apis/apps/v1{base}/deployments/kubetunnel-orders")
    account = await client.get(f"/api/v1{base}/serviceaccounts/kubetunnel-orders")
    assert account["automountServiceAccountToken"] is False
    owner = dep["metadata"]["ownerReferences"][0]
    assert owner["uid"] == created.uid
    assert owner["controller"] is True
    assert dep["metadata"]["labels"] == TUNNEL
    container = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    service_ip = (await client.get("/api/v1/namespaces/kubetunnel/services/kubetunnel-operator"))[
        "spec"]["clusterIP"]
    assert env["KUBETUNNEL_OPERATOR_URL"] == f"http://{service_ip}:80"
    assert env["KUBETUNNEL_PORTS"] == "8080"
    # 8080 is the target port, so the agent's health port moves out of its way.
    assert env["KUBETUNNEL_HEALTH_PORT"] != "8080"
    assert container["readinessProbe"]["httpGet"]["port"] == "health"
    await _phase(store, namespace, "Starting")
    current = await store.get(namespace, "orders")
    assert current is not None
    assert "kubetunnel.dev/selector" in current.finalizers

    pod = await cluster.run_agent_pod(client, namespace, "kubetunnel-orders")
    await _phase(store, namespace, "Ready")
    current = await store.get(namespace, "orders")
    assert current is not None
    assert current.status.agent_pod == pod["metadata"]["name"]
    assert current.status.observed_generation == current.generation
    assert await cluster.selector_of(client, namespace, "orders") == APP

    token = await token_of(client, namespace)
    status, _ = await report(op, namespace, "orders", token, {"connected": True, "reason": "up"})
    assert status == 202
    await _phase(store, namespace, "Connected")
    service = await client.get(f"/api/v1{base}/services/orders")
    assert service["spec"]["selector"] == TUNNEL
    annotations = service["metadata"]["annotations"]
    assert json.loads(annotations[ORIGINAL_ANNOTATION]) == APP
    assert annotations[TUNNEL_ANNOTATION] == "orders"
    current = await store.get(namespace, "orders")
    assert current is not None
    assert current.status.connected
    assert current.status.connected_since is not None

    status, _ = await report(op, namespace, "orders", token, {"connected": False, "reason": "x"})
    assert status == 202
    await _phase(store, namespace, "Disconnected")
    service = await client.get(f"/api/v1{base}/services/orders")
    assert service["spec"]["selector"] == APP
    assert ORIGINAL_ANNOTATION not in (service["metadata"].get("annotations") or {})

    # Connected again, then the record is deleted: the finalizer restores and cleans up.
    await report(op, namespace, "orders", token, {"connected": True, "reason": "again"})
    await _phase(store, namespace, "Connected")
    await store.delete(namespace, "orders")

    async def gone() -> bool:
        assert await store.get(namespace, "orders") is None
        for path in (f"/apis/apps/v1{base}/deployments/kubetunnel-orders",
                     f"/api/v1{base}/secrets/kubetunnel-orders",
                     f"/api/v1{base}/serviceaccounts/kubetunnel-orders"):
            assert await cluster.get_or_none(client, path) is None, path
        return True

    await cluster.eventually(gone)
    service = await client.get(f"/api/v1{base}/services/orders")
    assert service["spec"]["selector"] == APP
    assert TUNNEL_ANNOTATION not in (service["metadata"].get("annotations") or {})
    events = await client.get(f"/api/v1{base}/events")
    reasons = {e["reason"] for e in events["items"]}
    assert {"Connected", "Disconnected", "SelectorSwitched", "SelectorRestored"} <= reasons
