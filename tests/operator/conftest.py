"""Fixtures for the operator tests: one sandbox API server per session (each test in its own
namespace), a store of each persistent kind, and an operator started in-process on free ports."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kubetunnel.kube import KubeAccess, KubeClient
from kubetunnel.plugins import Store, StoreSettings
from kubetunnel.records import PortMapping, TunnelRecord
from kubetunnel.stores.configmap import ConfigMapStore
from kubetunnel.stores.crd import CrdStore
from modes.operator.runtime import Operator
from modes.operator.settings import OperatorSettings
from modes.sandbox.testing import running_sandbox
from tests.operator import cluster

MANIFESTS = cluster.ROOT / "manifests"


@dataclass
class Sandbox:
    server: str
    kubeconfig: Path
    access: KubeAccess


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    # API server only: these tests play the kubelet (pod status) themselves.
    with running_sandbox(tmp_path_factory.mktemp("sandbox"), extra_args=("--no-node",)) as running:
        # The CRD, and the operator Service whose ClusterIP the agents are given.
        cluster.kubectl(running.kubeconfig, "apply", "-f", str(MANIFESTS / "crd.yaml"),
                        "-f", str(MANIFESTS / "namespace.yaml"),
                        "-f", str(MANIFESTS / "service.yaml"))
        yield Sandbox(running.url, running.kubeconfig, KubeAccess.load(str(running.kubeconfig)))


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[KubeClient]:
    async with KubeClient(sandbox.access) as kube:
        yield kube


@pytest.fixture
async def namespace(client: KubeClient) -> str:
    return await cluster.create_namespace(client)


STORES: dict[str, Callable[[StoreSettings], Any]] = {"crd": CrdStore, "configmap": ConfigMapStore}


@pytest.fixture(params=sorted(STORES))
async def store(request: pytest.FixtureRequest, client: KubeClient) -> AsyncIterator[Store]:
    made: Store = STORES[request.param](StoreSettings(kube=client))
    yield made
    await made.aclose()


def record(namespace: str, name: str = "orders", service: str | None = None,
           client: str = "alice@laptop", ttl: int = 60) -> TunnelRecord:
    return TunnelRecord(
        namespace=namespace, name=name, service=service or name,
        ports=(PortMapping(service_port=80, local_port=8080, target_port=8080, name="http"),),
        client=client, lease_ttl_seconds=ttl,
    )


def fast_settings(namespace: str, /, **changes: Any) -> OperatorSettings:
    settings = OperatorSettings(
        watch_namespaces=(namespace,), resync=2.0, agent_grace=1.0, workers=4,
        agent_image="ghcr.io/we-dcode/kubetunnel:test", leader_lease=f"op-{namespace}",
        leader_lease_seconds=3.0,
    )
    return replace(settings, **changes)


OperatorFactory = Callable[..., Awaitable[Operator]]


@pytest.fixture
async def start_operator(
    client: KubeClient, store: Store, namespace: str
) -> AsyncIterator[OperatorFactory]:
    """Start operators (several for restarts and leader election); all stopped at the end."""
    started: list[Operator] = []

    async def start(wait_synced: bool = True, **changes: Any) -> Operator:
        op = Operator(fast_settings(namespace, **changes), client, store)
        started.append(op)
        await op.start("127.0.0.1", 0, 0)
        if wait_synced:
            await cluster.eventually(_synced(op), timeout=15)
        return op

    yield start
    for op in started:
        await op.aclose()


def _synced(op: Operator) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return op.synced.is_set()

    return probe


async def token_of(client: KubeClient, namespace: str, service: str = "orders") -> str:
    secret = await client.get(f"/api/v1/namespaces/{namespace}/secrets/kubetunnel-{service}")
    return base64.b64decode(secret["data"]["token"]).decode()


async def report(op: Operator, namespace: str, name: str, token: str | None,
                 body: Any = None, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{op.api_port}/v1/namespaces/{namespace}/tunnels/{name}/status"
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = raw if raw is not None else None
    async with aiohttp.ClientSession() as session, session.post(
        url, headers=headers, json=body if raw is None else None, data=data
    ) as resp:
        return resp.status, await resp.json()
