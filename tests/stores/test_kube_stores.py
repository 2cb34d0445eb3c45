"""The ``crd`` and ``configmap`` stores keep the store protocol's semantics on a real API server
(the sandbox), and their watch survives cut watches and 410 Gone with level events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from kubetunnel.errors import AlreadyExists, Conflict, NotFound
from kubetunnel.kube import KubeClient
from kubetunnel.plugins import Store, StoreEvent, StoreSettings
from kubetunnel.records import TunnelStatus
from kubetunnel.stores.configmap import ConfigMapStore
from tests.operator import cluster
from tests.operator.conftest import STORES, Sandbox, record

# Shared fixtures (one sandbox per module that uses them).
from tests.operator.conftest import client as client
from tests.operator.conftest import sandbox as sandbox
from tests.operator.conftest import store as store
from tests.operator.faults import FaultProxy, Faults, proxied


async def test_create_get_list_and_duplicates(client: KubeClient, store: Store) -> None:
    ns = await cluster.create_namespace(client)
    other = await cluster.create_namespace(client)
    created = await store.create(record(ns))
    assert created.uid
    assert created.resource_version
    assert created.generation == 1
    assert created.created_at is not None
    assert created.status == TunnelStatus()
    with pytest.raises(AlreadyExists):
        await store.create(record(ns))
    await store.create(record(other, "billing"))
    assert await store.get(ns, "orders") == created
    assert await store.get(ns, "missing") is None
    assert [r.name for r in await store.list(ns)] == ["orders"]
    names = {(r.namespace, r.name) for r in await store.list()}
    assert {(ns, "orders"), (other, "billing")} <= names


async def test_replace_semantics(client: KubeClient, store: Store) -> None:
    ns = await cluster.create_namespace(client)
    first = await store.create(record(ns))
    same_spec = await store.replace(first.replace(finalizers=("kubetunnel.dev/selector",)))
    assert same_spec.generation == 1
    assert same_spec.finalizers == ("kubetunnel.dev/selector",)
    with pytest.raises(Conflict):
        await store.replace(first.replace(client="late@host"))
    changed = await store.replace(same_spec.replace(client="bob@desk"))
    assert changed.generation == 2
    ignored = await store.replace(changed.replace(status=TunnelStatus(phase="Failed")))
    assert ignored.status.phase == "Pending"
    with_status = await store.replace_status(
        ignored.replace(status=TunnelStatus(phase="Connected", connected=True), client="x@y"))
    assert with_status.status.connected
    assert with_status.client == "bob@desk"
    assert with_status.generation == 2
    with pytest.raises(Conflict):
        await store.replace_status(ignored.replace(status=TunnelStatus(phase="Failed")))
    with pytest.raises(NotFound):
        await store.replace(record(ns, "ghost"))
    with pytest.raises(NotFound):
        await store.delete(ns, "ghost")


async def test_finalizers_hold_deletion(client: KubeClient, store: Store) -> None:
    ns = await cluster.create_namespace(client)
    rec = await store.create(record(ns))
    rec = await store.replace(rec.replace(finalizers=("kubetunnel.dev/selector",)))
    await store.delete(ns, "orders")
    marked = await store.get(ns, "orders")
    assert marked is not None
    assert marked.deleting
    await store.replace(marked.replace(finalizers=()))
    assert await store.get(ns, "orders") is None


async def test_owner_and_object_references(client: KubeClient, store: Store) -> None:
    ns = await cluster.create_namespace(client)
    rec = await store.create(record(ns))
    owner = store.owner_reference(rec)  # type: ignore[attr-defined]
    kind = "ConfigMap" if isinstance(store, ConfigMapStore) else "Kubetunnel"
    assert owner["kind"] == kind
    assert owner["uid"] == rec.uid
    # The reference names an object that exists, so garbage collection can follow it.
    path = await client.object_path(owner["apiVersion"], owner["kind"], ns, owner["name"])
    assert (await client.get(path))["metadata"]["uid"] == rec.uid


async def test_configmap_store_skips_unreadable_records(client: KubeClient) -> None:
    ns = await cluster.create_namespace(client)
    store = ConfigMapStore(StoreSettings(kube=client))
    await store.create(record(ns))
    await client.create(f"/api/v1/namespaces/{ns}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kubetunnel.broken", "labels": {"kubetunnel.dev/record": "broken"}},
        "data": {"spec": "{not json"}})
    await client.create(f"/api/v1/namespaces/{ns}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "orders"},
        "data": {"spec": "a person's own ConfigMap"}})
    assert [r.name for r in await store.list(ns)] == ["orders"]
    assert await store.get(ns, "broken") is None


@pytest.fixture
async def faulty_store(
    request: pytest.FixtureRequest, sandbox: Sandbox, store: Store
) -> AsyncIterator[tuple[Store, FaultProxy]]:
    faults = Faults(watch_gone_rate=0.3, watch_cut_after=(0.05, 0.3), seed=11)
    proxy = FaultProxy(sandbox.server, await sandbox.access.ssl_context(), faults)
    url = await proxy.start()
    async with KubeClient(proxied(sandbox.access, url)) as via_proxy:
        made: Store = STORES[type(store).__name__.lower().replace("store", "")](
            StoreSettings(kube=via_proxy))
        yield made, proxy
        await made.aclose()
    await proxy.aclose()


async def test_watch_is_level_across_cuts_and_410(
    client: KubeClient, store: Store, faulty_store: tuple[Store, FaultProxy]
) -> None:
    watched, proxy = faulty_store
    ns = await cluster.create_namespace(client)
    await store.create(record(ns, "early"))
    last: dict[str, StoreEvent] = {}
    seen_added = asyncio.Event()

    async def follow() -> None:
        async for event in watched.watch(ns):
            last[event.record.name] = event
            if event.record.name == "early":
                seen_added.set()

    task = asyncio.create_task(follow())
    try:
        await asyncio.wait_for(seen_added.wait(), 10)
        for i in range(6):
            rec = await store.create(record(ns, f"r{i}"))
            await store.replace_status(rec.replace(status=TunnelStatus(phase="Ready")))
            await asyncio.sleep(0.15)  # changes spread over several cut watches
        await store.delete(ns, "early")
        await store.delete(ns, "r0")
        current = {r.name: r for r in await store.list(ns)}

        async def converged() -> bool:
            alive = {n for n, e in last.items() if e.type != "DELETED"}
            assert alive == set(current), (alive, set(current))
            for name, rec in current.items():
                assert last[name].record.resource_version == rec.resource_version
            assert last["early"].type == "DELETED"
            return True

        await cluster.eventually(converged, timeout=15)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert proxy.faults.counts.get("watch-410", 0) + proxy.faults.counts.get("watch-cut", 0) > 0


async def test_crd_store_says_when_the_crd_is_missing(client: KubeClient) -> None:
    from kubetunnel.errors import KubetunnelError
    from kubetunnel.stores import crd

    class Elsewhere(crd.CrdStore):
        api_version = "nowhere.example.com/v1"  # a group the cluster does not serve

    store = Elsewhere(StoreSettings(kube=client))
    with pytest.raises(KubetunnelError, match="CRD is not installed"):
        await store.list()
