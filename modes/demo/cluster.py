"""The cluster's side of the demo: the ``orders`` workload, and what must be as it was after."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from kubetunnel.errors import KubetunnelError

NAMESPACE = "default"
SERVICE = "orders"


async def deploy_orders(client: Any, timeout: float = 30) -> str:
    """Deployment + Service ``orders`` (port 80 -> named port http); the ClusterIP once Ready."""
    labels = {"app": SERVICE}
    await client.apply({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                     "name": "echo", "image": "kubetunnel/sandbox-echo",
                     "env": [{"name": "PORT", "value": "8080"}],
                     "ports": [{"name": "http", "containerPort": 8080}],
                     "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                 }]}}},
    }, field_manager="kubetunnel-demo")
    service = await client.apply({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE},
        "spec": {"selector": labels,
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }, field_manager="kubetunnel-demo")
    deadline = time.monotonic() + timeout
    path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{SERVICE}"
    while (await client.get(path)).get("status", {}).get("readyReplicas", 0) < 2:
        if time.monotonic() > deadline:
            raise KubetunnelError(f"the echo pods did not become Ready within {timeout:.0f}s")
        await asyncio.sleep(0.1)
    return str(service["spec"]["clusterIP"])


async def echo_pods(client: Any) -> set[str]:
    """The names the cluster's answers carry: how an answer is told apart from the laptop's."""
    pods = await client.get(f"/api/v1/namespaces/{NAMESPACE}/pods",
                            labelSelector=f"app={SERVICE}")
    return {pod["metadata"]["name"] for pod in pods.get("items", [])}


async def service_snapshot(client: Any) -> str:
    """What the operator may touch on the Service: its selector and its annotations."""
    service = await client.get(f"/api/v1/namespaces/{NAMESPACE}/services/{SERVICE}")
    return json.dumps({"selector": service["spec"].get("selector"),
                       "annotations": service["metadata"].get("annotations", {})},
                      sort_keys=True)


async def tunnel_leftovers(client: Any) -> list[str]:
    """Kubetunnel records and ``kubetunnel-*`` objects in the namespace: none after disconnect."""
    found = []
    records = await client.get(
        f"/apis/application.dcode.tech/v1/namespaces/{NAMESPACE}/kubetunnels")
    found += [f"kubetunnel/{r['metadata']['name']}" for r in records.get("items", [])]
    for kind, path in (("deployment", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"),
                       ("secret", f"/api/v1/namespaces/{NAMESPACE}/secrets"),
                       ("serviceaccount", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts")):
        listing = await client.get(path)
        found += [f"{kind}/{item['metadata']['name']}" for item in listing.get("items", [])
                  if item["metadata"]["name"].startswith("kubetunnel-")]
    return found
