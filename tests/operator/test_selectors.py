"""The selector swap under stress: a person's edit, two records for one Service, lease expiry,
an agent pod lost, an operator stopped between swap and restore, a record force-deleted."""

from __future__ import annotations

import json
from datetime import timedelta

from kubetunnel.kube import JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, KubeClient
from kubetunnel.plugins import Store
from kubetunnel.records import TunnelRecord, now
from modes.operator.conditions import CHANGED_BY_SOMEONE, SWITCHED, find
from modes.operator.runtime import Operator
from modes.operator.selectors import ORIGINAL_ANNOTATION, TUNNEL_ANNOTATION
from tests.operator import cluster
from tests.operator.conftest import OperatorFactory, record, report, token_of

APP = {"app": "orders"}
TUNNEL = {"we-dcode-app": "kubetunnel", "kubetunnel.dev/tunnel": "orders"}


async def _until(store: Store, namespace: str, check: str, name: str = "orders",
                 timeout: float = 10) -> TunnelRecord:
    async def probe() -> TunnelRecord:
        current = await store.get(namespace, name)
        assert current is not None, "record gone"
        assert eval(check, {"r": current, "find": find}), (check, current.status)  # noqa: S307
        return current

    return await cluster.eventually(probe, timeout=timeout)


async def _connected(client: KubeClient, store: Store, op: Operator, namespace: str,
                     name: str = "orders") -> str:
    """Bring record ``name`` to Connected (simulated pod, a real report); return its token."""
    await cluster.eventually(lambda: cluster.get_or_none(
        client, f"/apis/apps/v1/namespaces/{namespace}/deployments/kubetunnel-{name}"))
    await cluster.run_agent_pod(client, namespace, f"kubetunnel-{name}")
    await _until(store, namespace, "r.status.phase == 'Ready'", name)
    token = await token_of(client, namespace, name)
    status, _ = await report(op, namespace, name, token, {"connected": True, "reason": "up"})
    assert status == 202
    await _until(store, namespace, "r.status.phase == 'Connected'", name)
    assert await cluster.selector_of(client, namespace, name) == {
        **TUNNEL, "kubetunnel.dev/tunnel": name}
    return token


async def test_a_persons_selector_edit_is_preserved(
    client: KubeClient, store: Store, namespace: str, start_operator: OperatorFactory
) -> None:
    await cluster.create_service(client, namespace, "orders", APP)
    op = await start_operator()
    await store.create(record(namespace))
    token = await _connected(client, store, op, namespace)
    mine = {"app": "orders", "track": "canary"}
    await client.patch(f"/api/v1/namespaces/{namespace}/services/orders",
                       {"spec": {"selector": mine}}, MERGE_PATCH)
    # A merge patch merges maps: the person's selector now also has the tunnel's keys. Make it
    # exactly theirs, as `kubectl edit` would.
    await client.patch(f"/api/v1/namespaces/{namespace}/services/orders",
                       [{"op": "replace", "path": "/spec/selector", "value": mine}], JSON_PATCH)
    current = await _until(
        store, namespace,
        f"find(r.status, '{SWITCHED}') and find(r.status, '{SWITCHED}').reason == "
        f"'{CHANGED_BY_SOMEONE}'")
    assert not current.status.connected
    condition = find(current.status, SWITCHED)
    assert condition is not None
    assert "changed by someone else" in condition.message
    assert "'track': 'canary'" in condition.message
    # Resyncs and repeated reports of the same state do not take the Service back...
    await report(op, namespace, "orders", token, {"connected": True, "reason": "still up"})
    await op.engine.wait_idle()
    service = await client.get(f"/api/v1/namespaces/{namespace}/services/orders")
    assert service["spec"]["selector"] == mine
    assert TUNNEL_ANNOTATION not in (service["metadata"].get("annotations") or {})
    # ...a fresh connection does (the person's selector is then the one kept aside).
    await report(op, namespace, "orders", token, {"connected": False, "reason": "cli gone"})
    await report(op, namespace, "orders", token, {"connected": True, "reason": "cli back"})
    await _until(store, namespace, "r.status.phase == 'Connected'")
    service = await client.get(f"/api/v1/namespaces/{namespace}/services/orders")
    assert json.loads(service["metadata"]["annotations"][ORIGINAL_ANNOTATION]) == mine


async def test_second_record_for_a_service_is_refused_naming_the_holder(
    client: KubeClient, store: Store, namespace: str, start_operator: OperatorFactory
) -> None:
    await cluster.create_service(client, namespace, "orders", APP)
    op = await start_operator()
    await store.create(record(namespace))
    await _connected(client, store, op, namespace)
    await store.create(record(namespace, "orders-2", service="orders", client="bob@desk"))
    refused = await _until(store, namespace, "r.status.phase == 'Failed'", "orders-2")
    accepted = find(refused.status, "Accepted")
    assert accepted is not None
    assert accepted.reason == "ServiceAlreadyTunneled"
    assert "alice@laptop" in accepted.message
    dep = await client.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/kubetunnel-orders")
    assert dep["metadata"]["labels"]["kubetunnel.dev/tunnel"] == "orders"
    assert await cluster.selector_of(client, namespace, "orders") == TUNNEL
    # Deleting the refused record must not touch the holder's objects or Service.
    await store.delete(namespace, "orders-2")
    await cluster.eventually(lambda: _absent(store, namespace, "orders-2"))
    assert await cluster.selector_of(client, namespace, "orders") == TUNNEL
    assert await cluster.get_or_none(
        client, f"/apis/apps/v1/namespaces/{namespace}/deployments/kubetunnel-orders")
    # A waiting record takes the Service over once the holder is gone.
    await store.create(record(namespace, "orders-3", service="orders", client="carol@home"))
    await _until(store, namespace, "r.status.phase == 'Failed'", "orders-3")
    await store.delete(namespace, "orders")
    await _until(store, namespace, "r.status.phase == 'Starting'", "orders-3")
    dep = await client.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/kubetunnel-orders")
    assert dep["metadata"]["labels"]["kubetunnel.dev/tunnel"] == "orders-3"
    assert await cluster.selector_of(client, namespace, "orders") == APP


async def _absent(store: Store, namespace: str, name: str) -> bool:
    return await store.get(namespace, name) is None


async def test_lease_expiry_restores_and_cleans_up(
    client: KubeClient, store: Store, namespace: str, start_operator: OperatorFactory
) -> None:
    await cluster.create_service(client, namespace, "orders", APP)
    op = await start_operator(lease_ttl=1.5)
    created = await store.create(record(namespace, ttl=60))
    await _connected(client, store, op, namespace)
    # The CLI renews (spec.renewTime) for a while, then dies.
    current = await store.get(namespace, "orders")
    assert current is not None
    await store.replace(current.replace(renewed_at=now()))
    await cluster.eventually(lambda: _absent(store, namespace, "orders"), timeout=10)
    assert await cluster.selector_of(client, namespace, "orders") == APP
    assert await cluster.get_or_none(
        client, f"/apis/apps/v1/namespaces/{namespace}/deployments/kubetunnel-orders") is None
    assert created.uid


async def test_agent_pod_lost_restores_after_grace(
    client: KubeClient, store: Store, namespace: str, start_operator: OperatorFactory
) -> None:
    await cluster.create_service(client, namespace, "orders", APP)
    op = await start_operator(agent_grace=1.0)
    await store.create(record(namespace))
    await _connected(client, store, op, namespace)
    pod = await _until(store, namespace, "r.status.agent_pod")
    assert pod.status.agent_pod is not None
    await cluster.set_pod_ready(client, namespace, pod.status.agent_pod, False)
    started = now()
    await _until(store, namespace, "not r.status.connected", timeout=8)
    assert now() - started >= timedelta(seconds=0.9)  # the grace period was honoured
    assert await cluster.selector_of(client, namespace, "orders") == APP
    await _until(store, namespace, "find(r.status, 'SelectorSwitched').reason in "
                 "('AgentPodLost', 'AgentNotReady')")


async def test_agent_pod_not_ready_restores_at_once_and_ready_switches_again(
    client: KubeClient, store: Store, namespace: str, start_operator: OperatorFactory
) -> None:
    """No grace by default: the pod watch restores the Service as soon as the tunnel pod stops
    being Ready, and the agent's last word is kept, so a Ready pod is switched to again."""
    await cluster.create_service(client, namespace, "orders", APP)
    op = await start_operator(agent_grace=0.0)
    await store.create(record(namespace))
    await _connected(client, store, op, namespace)
    pod = await _until(store, namespace, "r.status.agent_pod")
    assert pod.status.agent_pod is not None
    await cluster.set_pod_ready(client, namespace, pod.status.agent_pod, False)
    lost = await _until(store, namespace, "find(r.status, 'SelectorSwitched').status == 'False'")
    assert find(lost.status, "AgentConnected").status == "True"  # type: ignore[union-attr]
    assert await cluster.selector_of(client, namespace, "orders") == APP
    await cluster.set_pod_ready(client, namespace, pod.status.agent_pod, True)
    await _until(store, namespace, "r.status.phase == 'Connected'")
    assert await cluster.selector_of(client, namespace, "orders") == TUNNEL


async def test_operator_stopped_between_swap_and_restore_converges(
    client: KubeClient, store: Store, namespace: str, start_operator: OperatorFactory
) -> None:
    await cluster.create_service(client, namespace, "orders", APP)
    first = await start_operator()
    await store.create(record(namespace))
    token = await _connected(client, store, first, namespace)
    await first.aclose()
    # While no operator runs: the client goes away (the record is deleted; its finalizer holds
    # it), and a second record's Service is left swapped by "a crash" right after the patch.
    await store.delete(namespace, "orders")
    await cluster.create_service(client, namespace, "billing", {"app": "billing"})
    await client.patch(
        f"/api/v1/namespaces/{namespace}/services/billing",
        [{"op": "replace", "path": "/spec/selector",
          "value": {"we-dcode-app": "kubetunnel", "kubetunnel.dev/tunnel": "billing"}},
         {"op": "add", "path": "/metadata/annotations",
          "value": {ORIGINAL_ANNOTATION: json.dumps({"app": "billing"}),
                    TUNNEL_ANNOTATION: "billing"}}],
        JSON_PATCH,
    )
    assert await cluster.selector_of(client, namespace, "orders") == TUNNEL
    await start_operator()
    await cluster.eventually(lambda: _absent(store, namespace, "orders"))
    assert await cluster.selector_of(client, namespace, "orders") == APP

    async def billing_restored() -> bool:
        return await cluster.selector_of(client, namespace, "billing") == {"app": "billing"}

    await cluster.eventually(billing_restored)
    assert token


async def test_report_during_restart_is_acted_on_by_the_new_operator(
    client: KubeClient, store: Store, namespace: str, start_operator: OperatorFactory
) -> None:
    await cluster.create_service(client, namespace, "orders", APP)
    first = await start_operator()
    await store.create(record(namespace))
    token = await _connected(client, store, first, namespace)
    await first.aclose()
    second = await start_operator()
    status, _ = await report(second, namespace, "orders", token, {"connected": False})
    assert status == 202
    await _until(store, namespace, "r.status.phase == 'Disconnected'")
    assert await cluster.selector_of(client, namespace, "orders") == APP


async def test_missing_or_selectorless_service_is_refused_until_fixed(
    client: KubeClient, store: Store, namespace: str, start_operator: OperatorFactory
) -> None:
    await start_operator(resync=0.5)
    await store.create(record(namespace))
    refused = await _until(store, namespace, "r.status.phase == 'Failed'")
    accepted = find(refused.status, "Accepted")
    assert accepted is not None
    assert accepted.reason == "ServiceNotFound"
    assert await cluster.get_or_none(
        client, f"/apis/apps/v1/namespaces/{namespace}/deployments/kubetunnel-orders") is None
    await cluster.create_service(client, namespace, "orders", APP)
    await _until(store, namespace, "r.status.phase == 'Starting'")  # seen at the next resync

    await client.create(f"/api/v1/namespaces/{namespace}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "external"},
        "spec": {"type": "ExternalName", "externalName": "db.example.com"}})
    await store.create(record(namespace, "external"))
    refused = await _until(store, namespace, "r.status.phase == 'Failed'", "external")
    accepted = find(refused.status, "Accepted")
    assert accepted is not None
    assert accepted.reason == "ServiceHasNoSelector"


async def test_drifted_or_deleted_agent_deployment_is_put_back(
    client: KubeClient, store: Store, namespace: str, start_operator: OperatorFactory
) -> None:
    await cluster.create_service(client, namespace, "orders", APP)
    await start_operator(resync=0.5)
    await store.create(record(namespace))
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/kubetunnel-orders"
    await cluster.eventually(lambda: cluster.get_or_none(client, path))
    await client.patch(path, {"spec": {"replicas": 3, "template": {"spec": {"containers": [
        {"name": "agent", "image": "someone/else:1"}]}}}}, STRATEGIC_PATCH)

    async def converged() -> bool:
        dep = await client.get(path)
        assert dep["spec"]["replicas"] == 1
        image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == "ghcr.io/we-dcode/kubetunnel:test"
        return True

    await cluster.eventually(converged, timeout=10)
    await client.delete(path)
    await cluster.eventually(lambda: cluster.get_or_none(client, path), timeout=10)
