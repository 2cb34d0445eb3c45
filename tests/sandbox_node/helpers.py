"""Pods and a running kubelet for the node tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from modes.sandbox.node.containers import Timing
from modes.sandbox.node.ipam import PodIPAllocator
from modes.sandbox.node.kubeconfigs import ApiAccess
from modes.sandbox.node.kubelet import Kubelet, KubeletConfig
from modes.sandbox.node.store import PODS
from tests.sandbox_node.conftest import TEST_POD_CIDR
from tests.sandbox_node.fakes import FakeStore

Obj = dict[str, Any]
FAST = Timing(backoff_base=0.3, backoff_max=1.0, config_retry=0.1, eager_probe_period=0.05)


def echo_pod(name: str, *, labels: dict[str, str] | None = None, **spec: Any) -> Obj:
    container: Obj = {
        "name": "echo", "image": "kubetunnel/sandbox-echo:latest",
        "env": [{"name": "PORT", "value": "8080"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
    }
    container.update(spec.pop("container", {}))
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels or {"app": name}},
            "spec": {"containers": [container], "terminationGracePeriodSeconds": 5, **spec}}


def make_config(tmp_path: Path, **kw: Any) -> KubeletConfig:
    api = ApiAccess("http://127.0.0.1:6443", lambda ns, sa: f"token-{ns}-{sa}")
    return KubeletConfig(state_dir=tmp_path, ipam=PodIPAllocator(TEST_POD_CIDR), api=api,
                         timing=FAST, **kw)


@contextlib.asynccontextmanager
async def running_kubelet(tmp_path: Path, **kw: Any) -> AsyncIterator[tuple[FakeStore, Kubelet]]:
    store = FakeStore()
    kubelet = Kubelet(store, make_config(tmp_path, **kw))

    async def pump() -> None:
        async for kind, pod in store.watch(PODS):
            await kubelet.handle(kind, pod)

    task = asyncio.create_task(pump(), name="test-pod-pump")
    try:
        yield store, kubelet
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await kubelet.shutdown()


def status(store: FakeStore, name: str) -> Obj:
    pod = store.current(PODS, "default", name)
    return (pod or {}).get("status") or {}


def container_status(store: FakeStore, name: str) -> Obj:
    statuses = status(store, name).get("containerStatuses") or [{}]
    return statuses[0]  # type: ignore[no-any-return]


def is_ready(store: FakeStore, name: str) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in status(store, name).get("conditions") or [])


async def http_get(host: str, port: int, path: str = "/") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body
