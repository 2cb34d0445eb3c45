"""The operator converges, and never loses an original selector, while the API server answers a
share of requests with 409/429/500 (some after the write happened), cuts watches and answers
410 Gone. Agents report through :class:`kubetunnel.reporting.StatusReporter`, whose retries
carry them over the operator's 503s."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from kubetunnel.kube import JSON_PATCH, KubeClient
from kubetunnel.plugins import Store, StoreSettings
from kubetunnel.reporting import StatusReporter
from modes.operator.runtime import Operator
from modes.operator.selectors import ORIGINAL_ANNOTATION, TUNNEL_ANNOTATION
from tests.operator import cluster
from tests.operator.conftest import STORES, Sandbox, fast_settings, record, token_of
from tests.operator.faults import FaultProxy, Faults, proxied

SERVICES = ("s0", "s1", "s2", "s3")


def _tunnel(name: str) -> dict[str, str]:
    return {"we-dcode-app": "kubetunnel", "kubetunnel.dev/tunnel": name}


@pytest.fixture
async def proxy(sandbox: Sandbox) -> AsyncIterator[FaultProxy]:
    faults = Faults(error_rate=0.1, error_after_write_rate=0.04, watch_gone_rate=0.2,
                    watch_cut_after=(0.1, 0.6), seed=3)
    made = FaultProxy(sandbox.server, await sandbox.access.ssl_context(), faults)
    await made.start()
    yield made
    await made.aclose()


async def _no_original_lost(client: KubeClient, namespace: str) -> None:
    for name in SERVICES:
        service = await client.get(f"/api/v1/namespaces/{namespace}/services/{name}")
        selector = service["spec"]["selector"]
        annotations = service["metadata"].get("annotations") or {}
        if selector == _tunnel(name):
            assert json.loads(annotations[ORIGINAL_ANNOTATION]) == {"app": name}
            assert annotations[TUNNEL_ANNOTATION] == name


async def test_operator_converges_under_api_faults(
    client: KubeClient, store: Store, namespace: str, sandbox: Sandbox, proxy: FaultProxy
) -> None:
    kind = type(store).__name__.lower().removesuffix("store")
    async with KubeClient(proxied(sandbox.access, proxy.url)) as faulty:
        faulty_store: Store = STORES[kind](StoreSettings(kube=faulty))
        op = Operator(fast_settings(namespace, resync=1.0, backoff_cap=1.0), faulty, faulty_store)
        reporters: dict[str, StatusReporter] = {}
        try:
            await op.start("127.0.0.1", 0, 0)
            await _scenario(client, store, namespace, op, reporters)
        finally:
            for reporter in reporters.values():
                await reporter.aclose()
            await op.aclose()
            await faulty_store.aclose()
    counts = proxy.faults.counts
    assert counts.get("error-500", 0), counts
    assert counts.get("error-409", 0), counts
    assert counts.get("watch-drop", 0), counts
    assert counts.get("watch-410", 0), counts


async def _scenario(client: KubeClient, store: Store, namespace: str, op: Operator,
                    reporters: dict[str, StatusReporter]) -> None:
    for name in SERVICES:
        await cluster.create_service(client, namespace, name, {"app": name})
        await store.create(record(namespace, name))
    for name in SERVICES:
        await cluster.eventually(lambda n=name: cluster.get_or_none(  # type: ignore[misc]
            client, f"/apis/apps/v1/namespaces/{namespace}/deployments/kubetunnel-{n}"),
            timeout=20)
        await cluster.run_agent_pod(client, namespace, f"kubetunnel-{name}")
        reporter = StatusReporter(f"http://127.0.0.1:{op.api_port}", namespace, name,
                                  await token_of(client, namespace, name), backoff_cap=0.5)
        reporters[name] = reporter
        await reporter(True, "tunnel up")

    async def all_switched() -> bool:
        for name in SERVICES:
            assert await cluster.selector_of(client, namespace, name) == _tunnel(name), name
        await _no_original_lost(client, namespace)
        return True

    await cluster.eventually(all_switched, timeout=30)

    await reporters["s0"](False, "local process stopped")
    await store.delete(namespace, "s1")
    mine = {"app": "s2", "version": "mine"}
    await client.patch(f"/api/v1/namespaces/{namespace}/services/s2",
                       [{"op": "replace", "path": "/spec/selector", "value": mine}], JSON_PATCH)

    async def converged() -> bool:
        await _no_original_lost(client, namespace)
        assert await cluster.selector_of(client, namespace, "s0") == {"app": "s0"}
        assert await cluster.selector_of(client, namespace, "s1") == {"app": "s1"}
        assert await store.get(namespace, "s1") is None
        assert await cluster.get_or_none(
            client, f"/apis/apps/v1/namespaces/{namespace}/deployments/kubetunnel-s1") is None
        s2 = await client.get(f"/api/v1/namespaces/{namespace}/services/s2")
        assert s2["spec"]["selector"] == mine
        assert TUNNEL_ANNOTATION not in (s2["metadata"].get("annotations") or {})
        assert await cluster.selector_of(client, namespace, "s3") == _tunnel("s3")
        s3 = await store.get(namespace, "s3")
        assert s3 is not None
        assert s3.status.phase == "Connected"
        return True

    await cluster.eventually(converged, timeout=30)

    for name in ("s0", "s2", "s3"):
        await store.delete(namespace, name)

    async def all_gone() -> bool:
        assert await store.list(namespace) == []
        for name in ("s0", "s1", "s3"):
            assert await cluster.selector_of(client, namespace, name) == {"app": name}
        assert await cluster.selector_of(client, namespace, "s2") == mine
        return True

    await cluster.eventually(all_gone, timeout=30)
