"""The operator under its own RBAC (the sandbox enforces it): a denial is put on the record,
where `cli connect` and `kubectl describe` show it, and the tunnel proceeds once granted."""

from __future__ import annotations

import asyncio
import copy
import uuid
from pathlib import Path
from typing import Any

import yaml

from kubetunnel.kube import MERGE_PATCH, KubeAccess, KubeClient
from kubetunnel.plugins import Store, StoreSettings
from kubetunnel.records import RECONCILED
from kubetunnel.stores.crd import CrdStore
from modes.operator.runtime import Operator
from tests.operator import cluster
from tests.operator.conftest import Sandbox, fast_settings, record, report, token_of

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
TUNNEL = {"we-dcode-app": "kubetunnel", "kubetunnel.dev/tunnel": "orders"}


SHIPPED = yaml.safe_load((MANIFESTS / "clusterrole.yaml").read_text())["rules"]


def _operator_rules(without_service_patch: bool) -> list[dict[str, Any]]:
    """The shipped ClusterRole's rules (and the leader Lease), optionally minus Service patch."""
    rules = copy.deepcopy(SHIPPED)
    if without_service_patch:
        services = next(r for r in rules if r["resources"] == ["services"])
        services["verbs"].remove("patch")
    rules.append({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                  "verbs": ["create", "get", "update"]})
    return rules


async def _identity(client: KubeClient, sandbox: Sandbox, namespace: str, tmp: Path) -> KubeAccess:
    """A ServiceAccount bound to the operator's rules, as a kubeconfig of its own."""
    await client.create(f"/api/v1/namespaces/{namespace}/serviceaccounts", {
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "op"}})
    issued = await client.create(f"/api/v1/namespaces/{namespace}/serviceaccounts/op/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest"})
    config = yaml.safe_load(await asyncio.to_thread(sandbox.kubeconfig.read_text))
    config["users"][0]["user"] = {"token": issued["status"]["token"]}
    path = tmp / "operator-kubeconfig"
    await asyncio.to_thread(path.write_text, yaml.safe_dump(config))
    return await asyncio.to_thread(KubeAccess.load, str(path))


async def test_a_denied_permission_is_on_the_record_until_granted(
    client: KubeClient, sandbox: Sandbox, namespace: str, tmp_path: Path,
) -> None:
    role = f"op-{uuid.uuid4().hex[:8]}"
    await client.create(f"{RBAC}/clusterroles", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": role}, "rules": _operator_rules(without_service_patch=True)})
    await client.create(f"{RBAC}/clusterrolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": namespace}]})
    await cluster.create_service(client, namespace, "orders", {"app": "orders"})
    access = await _identity(client, sandbox, namespace, tmp_path)
    async with KubeClient(access) as restricted:
        operator_store: Store = CrdStore(StoreSettings(kube=restricted))
        store: Store = CrdStore(StoreSettings(kube=client))  # the test's (the CLI's) view
        op = Operator(fast_settings(namespace, backoff_cap=0.5),
                      restricted, operator_store)
        try:
            await op.start("127.0.0.1", 0, 0)
            await store.create(record(namespace))
            await cluster.eventually(lambda: cluster.get_or_none(
                client, f"/apis/apps/v1/namespaces/{namespace}/deployments/kubetunnel-orders"))
            await cluster.run_agent_pod(client, namespace, "kubetunnel-orders")
            token = await token_of(client, namespace)

            async def reported() -> bool:
                status, _ = await report(op, namespace, "orders", token,
                                         {"connected": True, "reason": "up"})
                return status == 202

            await cluster.eventually(reported)

            async def trouble() -> str | None:
                current = await store.get(namespace, "orders")
                return current.status.trouble() if current is not None else None

            message = await cluster.eventually(trouble)
            assert message.startswith(
                f'not allowed: services "orders" is forbidden: User '
                f'"system:serviceaccount:{namespace}:op" cannot patch resource "services"')
            assert await cluster.selector_of(client, namespace, "orders") == {"app": "orders"}
            events = await client.get(f"/api/v1/namespaces/{namespace}/events")
            assert any(e["reason"] == "Failed" and e["message"] == message
                       for e in events["items"])

            await client.patch(f"{RBAC}/clusterroles/{role}",
                               {"rules": _operator_rules(without_service_patch=False)},
                               MERGE_PATCH)

            async def switched() -> bool:
                return await cluster.selector_of(client, namespace, "orders") == TUNNEL

            await cluster.eventually(switched)

            async def recovered() -> bool:
                current = await store.get(namespace, "orders")
                return current is not None and current.status.trouble() is None and any(
                    c.type == RECONCILED and c.status == "True"
                    for c in current.status.conditions)

            await cluster.eventually(recovered)
            await store.delete(namespace, "orders")
            await cluster.eventually(lambda: _gone(store, namespace))
        finally:
            await op.aclose()
            await operator_store.aclose()
            await store.aclose()
            await client.delete(f"{RBAC}/clusterrolebindings/{role}")
            await client.delete(f"{RBAC}/clusterroles/{role}")


async def _gone(store: Store, namespace: str) -> bool:
    return await store.get(namespace, "orders") is None
