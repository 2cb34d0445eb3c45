"""The in-process API that part 2's controllers call directly: same semantics as over HTTP."""

from __future__ import annotations

import asyncio
import json

import pytest

from modes.sandbox.errors import ApiError
from modes.sandbox.selectors import Selector
from modes.sandbox.server import Sandbox
from modes.sandbox.storage import Store, WriteOptions
from modes.sandbox.watching import Watcher


def _pod(name: str, **labels: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "i:1"}]},
    }


def test_python_api_crud_patch_delete() -> None:
    store = Sandbox().store
    pods = store.resource("pods")
    created = store.create(pods, _pod("a", app="x"), "default")
    assert created["status"]["phase"] == "Pending"
    assert store.get(pods, "default", "a")["metadata"]["uid"] == created["metadata"]["uid"]
    patch = json.dumps({"status": {"phase": "Running"}}).encode()
    running = store.patch(
        pods, "default", "a", "application/merge-patch+json", patch, subresource="status"
    )
    assert running["status"]["phase"] == "Running"
    assert [
        p["metadata"]["name"]
        for p in store.list(pods, "default", Selector.parse("app=x", None, "pods"))
    ] == ["a"]
    with pytest.raises(ApiError) as info:
        store.create(pods, _pod("a"), "default")
    assert info.value.code == 409
    gone, now = store.delete(pods, "default", "a")
    assert now
    assert gone["metadata"]["name"] == "a"
    assert store.resource("deployments.apps").kind == "Deployment"


def test_graceful_pod_deletion_waits_for_the_kubelet() -> None:
    store = Sandbox().store
    pods = store.resource("pods")
    pod = _pod("g")
    pod["spec"]["nodeName"] = "sandbox"  # type: ignore[index]
    store.create(pods, pod, "default")
    still, now = store.delete(pods, "default", "g")
    assert not now
    assert still["metadata"]["deletionGracePeriodSeconds"] == 30
    _, now = store.delete(pods, "default", "g", {"gracePeriodSeconds": 0})
    assert now
    with pytest.raises(ApiError):
        store.get(pods, "default", "g")


def test_dry_run_does_not_persist() -> None:
    store = Store()
    namespaces = store.resource("namespaces")
    store.create(namespaces, {"metadata": {"name": "dry"}}, opts=WriteOptions(dry_run=True))
    with pytest.raises(ApiError) as info:
        store.get(namespaces, "", "dry")
    assert info.value.code == 404


async def test_python_api_watch_sees_changes() -> None:
    sandbox = await asyncio.to_thread(Sandbox)
    store = sandbox.store
    pods = store.resource("pods")
    watcher = store.watch(pods, "default", Selector(), None)
    store.create(pods, _pod("w"), "default")
    event = await watcher.next(timeout=1)
    assert event is not None
    assert event[1] == "ADDED"
    assert event[2]["metadata"]["name"] == "w"
    watcher.close()
    assert await watcher.next(timeout=0.1) is None


async def _until_deleted(store: Store, watcher: Watcher, name: str, timeout: float = 10) -> None:
    """Read the namespace watch until ``name`` is DELETED; the deadline only bounds a hang."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        event = await watcher.next(timeout=left)
        if event is not None and event[1] == "DELETED" and event[2]["metadata"]["name"] == name:
            return
    ns = store.peek(store.resource("namespaces"), "", name)
    raise AssertionError(f"namespace {name} still there: {ns and ns.get('status')}")


async def test_a_namespace_emptied_at_once_goes_at_once() -> None:
    """Content the namespace controller deletes immediately must not hold the namespace.

    It used to count what it had just deleted as still there and waited for some other
    deletion, anywhere, to run it again: `cli uninstall; cli install` failed as the
    namespace stayed Terminating.
    """
    store = (await asyncio.to_thread(Sandbox)).store
    namespaces, configmaps = store.resource("namespaces"), store.resource("configmaps")
    store.create(namespaces, {"metadata": {"name": "doomed"}})
    for name in ("one", "two"):
        store.create(configmaps, {"metadata": {"name": name}}, "doomed")
    watcher = store.watch(namespaces, None, Selector(), str(store.rv))
    try:
        store.delete(namespaces, "", "doomed")
        await _until_deleted(store, watcher, "doomed")
    finally:
        watcher.close()
    assert store.list(configmaps, "doomed") == []


async def test_a_namespace_goes_when_its_last_graceful_pod_does() -> None:
    store = (await asyncio.to_thread(Sandbox)).store
    namespaces, pods = store.resource("namespaces"), store.resource("pods")
    configmaps = store.resource("configmaps")
    store.create(namespaces, {"metadata": {"name": "doomed"}})
    store.create(configmaps, {"metadata": {"name": "plain"}}, "doomed")
    pod = _pod("p")
    pod["spec"]["nodeName"] = "sandbox"  # type: ignore[index]
    store.create(pods, pod, "doomed")
    pod_watch = store.watch(pods, "doomed", Selector(), str(store.rv))
    ns_watch = store.watch(namespaces, None, Selector(), str(store.rv))
    try:
        store.delete(namespaces, "", "doomed")
        # The controller asks the pod to stop; until its kubelet confirms, the namespace stays.
        event = await pod_watch.next(timeout=10)
        assert event is not None
        assert event[1] == "MODIFIED", event
        assert event[2]["metadata"]["deletionTimestamp"]
        assert store.get(namespaces, "", "doomed")["status"]["phase"] == "Terminating"
        # The kubelet's final delete is the last object going: that alone finishes it.
        store.delete(pods, "doomed", "p", {"gracePeriodSeconds": 0})
        await _until_deleted(store, ns_watch, "doomed")
    finally:
        pod_watch.close()
        ns_watch.close()
