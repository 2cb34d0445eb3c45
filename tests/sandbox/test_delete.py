"""Deletion: finalizers, propagation policies, preconditions, deletecollection, namespaces."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.sandbox.conftest import Raw


def _owned(core: client.CoreV1Api, ns: str, name: str, owner: Any) -> Any:
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": owner.metadata.name,
        "uid": owner.metadata.uid,
        "blockOwnerDeletion": True,
    }
    return core.create_namespaced_config_map(
        ns, {"metadata": {"name": name, "ownerReferences": [ref]}}
    )


def _exists(core: client.CoreV1Api, ns: str, name: str) -> bool:
    try:
        core.read_namespaced_config_map(name, ns)
    except ApiException as exc:
        if exc.status != 404:
            raise
        return False
    return True


def test_finalizers_hold_the_object_until_removed(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(
        ns, {"metadata": {"name": "f", "finalizers": ["example.com/hold"]}}
    )
    core.delete_namespaced_config_map("f", ns)
    held = core.read_namespaced_config_map("f", ns)
    assert held.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as info:  # no new finalizers once deleting
        core.patch_namespaced_config_map(
            "f", ns, {"metadata": {"finalizers": ["example.com/more"]}}
        )
    assert info.value.status == 422
    core.patch_namespaced_config_map("f", ns, {"metadata": {"$patch": "merge", "finalizers": None}})
    assert not _exists(core, ns, "f")


def test_background_propagation_deletes_dependents(core: client.CoreV1Api, ns: str) -> None:
    owner = core.create_namespaced_config_map(ns, {"metadata": {"name": "owner"}})
    _owned(core, ns, "dep", owner)
    core.delete_namespaced_config_map("owner", ns, propagation_policy="Background")
    assert not _exists(core, ns, "owner")
    assert not _exists(core, ns, "dep")


def test_orphan_propagation_keeps_dependents_without_the_reference(
    core: client.CoreV1Api, ns: str
) -> None:
    owner = core.create_namespaced_config_map(ns, {"metadata": {"name": "owner"}})
    _owned(core, ns, "dep", owner)
    core.delete_namespaced_config_map("owner", ns, propagation_policy="Orphan")
    assert not _exists(core, ns, "owner")
    assert core.read_namespaced_config_map("dep", ns).metadata.owner_references is None


def test_foreground_waits_for_dependents(core: client.CoreV1Api, ns: str) -> None:
    owner = core.create_namespaced_config_map(ns, {"metadata": {"name": "owner"}})
    dep = _owned(core, ns, "dep", owner)
    core.patch_namespaced_config_map("dep", ns, {"metadata": {"finalizers": ["example.com/slow"]}})
    core.delete_namespaced_config_map("owner", ns, propagation_policy="Foreground")
    waiting = core.read_namespaced_config_map("owner", ns)
    assert waiting.metadata.finalizers == ["foregroundDeletion"]
    assert waiting.metadata.deletion_timestamp is not None
    assert core.read_namespaced_config_map("dep", ns).metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("dep", ns, {"metadata": {"finalizers": None}})
    assert not _exists(core, ns, "dep")
    assert not _exists(core, ns, "owner")
    assert dep.metadata.uid


def test_delete_preconditions(core: client.CoreV1Api, ns: str) -> None:
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "pre"}})
    for pre in ({"uid": "not-the-uid"}, {"resourceVersion": "1"}):
        with pytest.raises(ApiException) as info:
            core.delete_namespaced_config_map("pre", ns, body={"preconditions": pre})
        assert info.value.status == 409
        assert "Precondition failed" in json.loads(info.value.body)["message"]
    core.delete_namespaced_config_map("pre", ns, body={"preconditions": {"uid": cm.metadata.uid}})
    assert not _exists(core, ns, "pre")


def test_delete_answers_status_for_configmaps_and_object_for_pods(
    raw: Raw, core: client.CoreV1Api, ns: str
) -> None:
    core.create_namespaced_config_map(ns, {"metadata": {"name": "s"}})
    code, _, body = raw("DELETE", f"/api/v1/namespaces/{ns}/configmaps/s")
    assert code == 200
    assert isinstance(body, dict)
    assert (body["kind"], body["status"], body["details"]["name"]) == ("Status", "Success", "s")
    core.create_namespaced_pod(
        ns, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    )
    code, _, body = raw("DELETE", f"/api/v1/namespaces/{ns}/pods/p")
    assert code == 200
    assert isinstance(body, dict)
    assert body["kind"] == "Pod"


def test_deletecollection_with_selector(core: client.CoreV1Api, ns: str) -> None:
    for name, tier in (("a", "web"), ("b", "web"), ("c", "db")):
        core.create_namespaced_config_map(
            ns, {"metadata": {"name": name, "labels": {"tier": tier}}}
        )
    core.delete_collection_namespaced_config_map(ns, label_selector="tier=web")
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns).items] == ["c"]


def _eventually(check: Callable[[], bool], timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_namespace_deletion_removes_its_content(core: client.CoreV1Api, ns: str) -> None:
    name = f"{ns}-doomed"
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(name, {"metadata": {"name": "plain"}})
    core.create_namespaced_config_map(
        name, {"metadata": {"name": "held", "finalizers": ["example.com/x"]}}
    )
    core.delete_namespace(name)
    terminating = core.read_namespace(name)
    assert terminating.status.phase == "Terminating"
    # As on a real cluster, the namespace controller empties it a little later.
    assert _exists(core, name, "plain")
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map(name, {"metadata": {"name": "late"}})
    assert info.value.status == 403
    assert _eventually(lambda: not _exists(core, name, "plain"))
    assert core.read_namespaced_config_map("held", name).metadata.deletion_timestamp is not None
    assert core.read_namespace(name).status.phase == "Terminating"
    core.patch_namespaced_config_map("held", name, {"metadata": {"finalizers": None}})

    def namespace_gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as exc:
            return exc.status == 404
        return False

    assert _eventually(namespace_gone)


def test_unknown_propagation_policy_is_400(raw: Raw, core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, {"metadata": {"name": "x"}})
    code, _, _ = raw("DELETE", f"/api/v1/namespaces/{ns}/configmaps/x?propagationPolicy=Sideways")
    assert code == 400
