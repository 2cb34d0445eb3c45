"""The memory store keeps the Kubernetes semantics the store protocol promises."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from kubetunnel.errors import AlreadyExists, Conflict, NotFound
from kubetunnel.records import PortMapping, TunnelRecord, TunnelStatus, now
from kubetunnel.stores.memory import MemoryStore


def _record(name: str = "orders", namespace: str = "shop") -> TunnelRecord:
    return TunnelRecord(
        namespace=namespace, name=name, service=name,
        ports=(PortMapping(service_port=80, local_port=8080),), client="dev@laptop",
    )


async def test_create_assigns_identity_and_refuses_duplicates() -> None:
    store = MemoryStore()
    created = await store.create(_record())
    assert created.uid
    assert created.resource_version
    assert created.generation == 1
    assert created.created_at is not None
    with pytest.raises(AlreadyExists):
        await store.create(_record())
    assert await store.get("shop", "orders") == created
    assert await store.get("shop", "missing") is None


async def test_stale_replace_conflicts() -> None:
    store = MemoryStore()
    first = await store.create(_record())
    second = await store.replace(first.replace(client="other@host"))
    assert second.generation == 2
    with pytest.raises(Conflict):
        await store.replace(first.replace(client="late@host"))
    with pytest.raises(NotFound):
        await store.replace(_record("ghost"))


async def test_generation_moves_with_spec_only_and_status_is_separate() -> None:
    store = MemoryStore()
    rec = await store.create(_record())
    same_spec = await store.replace(rec.replace(finalizers=("kubetunnel/selector",)))
    assert same_spec.generation == 1
    ignored = await store.replace(same_spec.replace(status=TunnelStatus(phase="Failed")))
    assert ignored.status.phase == "Pending"  # replace ignores status
    with_status = await store.replace_status(
        ignored.replace(status=TunnelStatus(phase="Connected", connected=True), client="x")
    )
    assert with_status.status.connected
    assert with_status.client == "dev@laptop"  # replace_status ignores everything else
    assert with_status.generation == 1


async def test_finalizers_hold_deletion_until_removed() -> None:
    store = MemoryStore()
    rec = await store.create(_record())
    rec = await store.replace(rec.replace(finalizers=("kubetunnel/selector",)))
    await store.delete("shop", "orders")
    marked = await store.get("shop", "orders")
    assert marked is not None
    assert marked.deleting
    await store.replace(marked.replace(finalizers=()))
    assert await store.get("shop", "orders") is None
    with pytest.raises(NotFound):
        await store.delete("shop", "orders")


async def test_watch_lists_then_follows_changes_in_its_namespace() -> None:
    store = MemoryStore()
    await store.create(_record("a"))
    await store.create(_record("elsewhere", namespace="other"))
    events: list[tuple[str, str]] = []

    async def follow() -> None:
        async for event in store.watch("shop"):
            events.append((event.type, event.record.name))
            if event.type == "DELETED":
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    b = await store.create(_record("b"))
    await store.replace(b.replace(client="x@y"))
    await store.create(_record("noise", namespace="other"))
    await store.delete("shop", "b")
    await asyncio.wait_for(task, 2)
    assert events == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "b"), ("DELETED", "b")]


async def test_close_ends_watches() -> None:
    store = MemoryStore()

    async def follow() -> int:
        return len([e async for e in store.watch()])

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    await store.aclose()
    assert await asyncio.wait_for(task, 2) == 0


def test_lease_expiry() -> None:
    rec = _record().replace(lease_ttl_seconds=10, renewed_at=now() - timedelta(seconds=11))
    assert rec.lease_expired()
    assert not rec.replace(renewed_at=now()).lease_expired()


def test_record_round_trips_through_spec() -> None:
    from kubetunnel.records import record_from_spec

    rec = _record().replace(renewed_at=now())
    back = record_from_spec("shop", "orders", rec.spec_dict())
    assert back.spec_dict() == rec.spec_dict()
    assert back.ports == rec.ports
