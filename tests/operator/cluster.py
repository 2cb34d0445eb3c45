"""Test helpers for the operator on the sandbox API server: do by hand what part 2 of the
sandbox (controllers, kubelet) would do: create the agent pod of a Deployment and report it Ready
through the pods/status subresource, as a kubelet does.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from kubetunnel.kube import KubeClient

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def kubectl(kubeconfig: Path, *args: str) -> str:
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        check=True, capture_output=True, text=True, timeout=60,
    )
    return out.stdout


async def eventually(
    probe: Callable[[], Awaitable[T]], timeout: float = 10.0, interval: float = 0.05
) -> T:
    """Poll ``probe`` until it returns something truthy without raising AssertionError."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = await probe()
            if value:
                return value
        except AssertionError as exc:
            last = exc
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {last!r}")
        await asyncio.sleep(interval)


async def create_namespace(client: KubeClient, prefix: str = "t") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    await client.create("/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


async def create_service(client: KubeClient, namespace: str, name: str,
                         selector: dict[str, str] | None = None, port: int = 80,
                         target: int | str = 8080) -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": [{"name": "http", "port": port, "targetPort": target}]}
    spec["selector"] = selector if selector is not None else {"app": name}
    obj: dict[str, Any] = await client.create(f"/api/v1/namespaces/{namespace}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
    return obj


async def get_or_none(client: KubeClient, path: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = await client.get_or_none(path)
    return found


async def selector_of(client: KubeClient, namespace: str, service: str) -> dict[str, str]:
    obj = await client.get(f"/api/v1/namespaces/{namespace}/services/{service}")
    selector: dict[str, str] = obj["spec"].get("selector") or {}
    return selector


async def run_agent_pod(client: KubeClient, namespace: str, deployment: str,
                        ready: bool = True, suffix: str = "x1") -> dict[str, Any]:
    """Be the ReplicaSet controller and the kubelet for the agent Deployment: one pod, Ready."""
    dep = await client.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}")
    template = dep["spec"]["template"]
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{deployment}-{suffix}", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }
    path = f"/api/v1/namespaces/{namespace}/pods"
    created = await client.create(path, pod)
    return await set_pod_ready(client, namespace, created["metadata"]["name"], ready)


async def set_pod_ready(client: KubeClient, namespace: str, name: str, ready: bool
                        ) -> dict[str, Any]:
    path = f"/api/v1/namespaces/{namespace}/pods/{name}"
    pod = await client.get(path)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    value = "True" if ready else "False"
    pod["status"] = {
        "phase": "Running", "podIP": "127.0.0.77", "hostIP": "127.0.0.1",
        "conditions": [{"type": "Ready", "status": value, "lastTransitionTime": stamp},
                       {"type": "ContainersReady", "status": value, "lastTransitionTime": stamp}],
    }
    updated: dict[str, Any] = await client.replace(path + "/status", pod)
    return updated


async def delete_pod(client: KubeClient, namespace: str, name: str) -> None:
    await client.delete(f"/api/v1/namespaces/{namespace}/pods/{name}")
