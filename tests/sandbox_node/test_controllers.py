"""Deployments, ReplicaSets, Endpoints, the proxy and ServiceAccounts in the real API server,
observed through the official client and plain sockets only."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.sandbox_node.sandboxed import ThreadedSandbox, eventually


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[ThreadedSandbox]:
    sb = ThreadedSandbox(tmp_path)
    try:
        yield sb
    finally:
        sb.close()


def deployment(name: str, replicas: int, version: str = "1") -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {
                     "terminationGracePeriodSeconds": 5,
                     "containers": [{
                         "name": "echo", "image": "kubetunnel/sandbox-echo",
                         "env": [{"name": "VERSION", "value": version},
                                 {"name": "POD_NAME", "valueFrom": {
                                     "fieldRef": {"fieldPath": "metadata.name"}}}],
                         "ports": [{"name": "http", "containerPort": 8080}],
                         "readinessProbe": {"httpGet": {"path": "/", "port": "http"}}}]}}},
    }


def service(name: str, selector: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector,
                     "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}}


def ask(ip: str, port: int = 80) -> str:
    with socket.create_connection((ip, port), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return data.partition(b"\r\n\r\n")[2].decode()


def available(apps: client.AppsV1Api, name: str) -> bool:
    status = apps.read_namespaced_deployment_status(name, "default").status
    conditions = {c.type: c.status for c in status.conditions or []}
    return conditions.get("Available") == "True" and status.updated_replicas == \
        status.ready_replicas == status.replicas


def test_deployment_service_and_rollout(sandbox: ThreadedSandbox) -> None:
    api = sandbox.api_client()
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment("default", deployment("web", 2))
    core.create_namespaced_service("default", service("web", {"app": "web"}))
    eventually(lambda: available(apps, "web") and
               apps.read_namespaced_deployment("web", "default").status.ready_replicas == 2)

    pods = core.list_namespaced_pod("default", label_selector="app=web").items
    assert len(pods) == 2
    rs = apps.list_namespaced_replica_set("default").items
    assert len(rs) == 1
    assert rs[0].metadata.owner_references[0].kind == "Deployment"
    pod_hash = rs[0].metadata.labels["pod-template-hash"]
    for pod in pods:
        assert pod.metadata.labels["pod-template-hash"] == pod_hash
        assert pod.metadata.owner_references[0].name == rs[0].metadata.name
        assert pod.metadata.owner_references[0].controller

    endpoints = core.read_namespaced_endpoints("web", "default")
    assert sorted(a.ip for a in endpoints.subsets[0].addresses) == \
        sorted(p.status.pod_ip for p in pods)
    assert endpoints.subsets[0].ports[0].port == 8080  # named targetPort resolved
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=web").items
    assert len(slices) == 1
    assert all(e.conditions.ready for e in slices[0].endpoints)

    cluster_ip = core.read_namespaced_service("web", "default").spec.cluster_ip
    answers = {ask(cluster_ip) for _ in range(4)}
    assert answers == {p.metadata.name for p in pods}  # round robin over both pods

    # A template change rolls out a new ReplicaSet; the old one ends at zero.
    apps.patch_namespaced_deployment("web", "default", deployment("web", 2, version="2"))
    def rolled() -> bool:
        sets = apps.list_namespaced_replica_set("default").items
        live = core.list_namespaced_pod("default", label_selector="app=web").items
        return (len(sets) == 2 and sorted(s.spec.replicas for s in sets) == [0, 2]
                and len(live) == 2
                and all(p.metadata.labels["pod-template-hash"] != pod_hash for p in live)
                and available(apps, "web"))

    eventually(rolled, timeout=15)
    live = core.list_namespaced_pod("default", label_selector="app=web").items
    assert {ask(cluster_ip) for _ in range(4)} == {p.metadata.name for p in live}

    apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 3}})
    eventually(lambda: apps.read_namespaced_deployment("web", "default").status.ready_replicas == 3)

    # Only revisionHistoryLimit scaled-down ReplicaSets are kept.
    apps.patch_namespaced_deployment("web", "default", {"spec": {"revisionHistoryLimit": 0}})
    eventually(lambda: len(apps.list_namespaced_replica_set("default").items) == 1)


def test_selector_change_reaches_new_connections_and_keeps_open_ones(
        sandbox: ThreadedSandbox) -> None:
    api = sandbox.api_client()
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment("default", deployment("blue", 1))
    apps.create_namespaced_deployment("default", deployment("green", 1))
    core.create_namespaced_service("default", service("app", {"app": "blue"}))
    eventually(lambda: available(apps, "blue") and available(apps, "green"))
    cluster_ip = core.read_namespaced_service("app", "default").spec.cluster_ip
    eventually(lambda: ask(cluster_ip).startswith("blue-"))
    held = socket.create_connection((cluster_ip, 80), timeout=5)  # opened before the switch

    core.patch_namespaced_service("app", "default", {"spec": {"selector": {"app": "green"}}})
    eventually(lambda: ask(cluster_ip).startswith("green-"))  # how fast: bench/sandbox_node.py

    held.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := held.recv(65536):
        data += chunk
    held.close()
    assert data.partition(b"\r\n\r\n")[2].startswith(b"blue-")  # not cut, still the old pod


def test_default_serviceaccount_and_cascading_delete(sandbox: ThreadedSandbox) -> None:
    api = sandbox.api_client()
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "team"}})
    eventually(lambda: [sa for sa in core.list_namespaced_service_account("team").items
                        if sa.metadata.name == "default"])
    core.delete_namespaced_service_account("default", "team")
    eventually(lambda: [sa for sa in core.list_namespaced_service_account("team").items
                        if sa.metadata.name == "default"])

    apps.create_namespaced_deployment("default", deployment("doomed", 2))
    eventually(lambda: available(apps, "doomed"))
    apps.delete_namespaced_deployment("doomed", "default",
                                      body={"propagationPolicy": "Foreground"})

    def all_gone() -> bool:
        deployments = apps.list_namespaced_deployment("default").items
        return not deployments \
            and not core.list_namespaced_pod("default", label_selector="app=doomed").items \
            and not apps.list_namespaced_replica_set("default").items

    eventually(all_gone, timeout=15)


def test_a_terminating_pod_serves_while_no_other_is_ready(sandbox: ThreadedSandbox) -> None:
    """KEP-1669 as kube-proxy does it: a deleted pod still in its grace period and still Ready is
    a serving terminating endpoint, used only while the Service has no ready endpoint."""
    api = sandbox.api_client()
    core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    pod = echo_pod("old")
    pod["spec"]["terminationGracePeriodSeconds"] = 60
    pod["spec"]["containers"][0]["env"].append({"name": "SHUTDOWN_DELAY", "value": "60"})
    core.create_namespaced_pod("default", pod)
    core.create_namespaced_service("default", service("app", {"app": "echo"}))
    cluster_ip = core.read_namespaced_service("app", "default").spec.cluster_ip
    eventually(lambda: answer(cluster_ip) == "old")

    core.delete_namespaced_pod("old", "default")

    def terminating_and_serving() -> bool:
        slices = discovery.list_namespaced_endpoint_slice(
            "default", label_selector="kubernetes.io/service-name=app").items
        conditions = [e.conditions for s in slices for e in s.endpoints or []]
        return [(c.ready, c.serving, c.terminating) for c in conditions] == [(False, True, True)]

    eventually(terminating_and_serving)
    endpoints = core.read_namespaced_endpoints("app", "default")
    assert not any(s.addresses for s in endpoints.subsets or [])  # Endpoints leave it out
    assert ask(cluster_ip) == "old"  # yet the proxy still sends it what nobody else can take

    core.create_namespaced_pod("default", echo_pod("new"))
    eventually(lambda: answer(cluster_ip) == "new")  # a ready endpoint wins over a terminating one
    assert {ask(cluster_ip) for _ in range(4)} == {"new"}
    core.delete_namespaced_pod("old", "default", grace_period_seconds=0)


def test_a_selectorless_service_reaches_the_endpoints_its_user_wrote(
        sandbox: ThreadedSandbox) -> None:
    """kube-proxy reads only slices: the user's Endpoints reach it through the mirroring."""
    core = client.CoreV1Api(sandbox.api_client())
    core.create_namespaced_pod("default", echo_pod("db"))
    ip = eventually(lambda: core.read_namespaced_pod("db", "default").status.pod_ip)
    core.create_namespaced_service("default", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "external"},
        "spec": {"ports": [{"name": "web", "port": 80, "targetPort": 8080}]}})
    core.create_namespaced_endpoints("default", {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "external"},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "web", "port": 8080}]}]})
    cluster_ip = core.read_namespaced_service("external", "default").spec.cluster_ip
    eventually(lambda: answer(cluster_ip) == "db")
    core.delete_namespaced_endpoints("external", "default")
    eventually(lambda: answer(cluster_ip) == "")


def answer(ip: str) -> str:
    """``ask``, with a refused or reset connection (no endpoint yet) as an empty answer."""
    try:
        return ask(ip)
    except OSError:
        return ""


def echo_pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "echo"}},
            "spec": {"containers": [{
                "name": "echo", "image": "kubetunnel/sandbox-echo",
                "env": [{"name": "POD_NAME",
                         "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}}}]}}
