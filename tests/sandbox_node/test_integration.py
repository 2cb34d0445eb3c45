"""The node inside the real sandbox API server, driven by the official client only."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.stream import portforward

from tests.sandbox_node.sandboxed import ThreadedSandbox, eventually


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[ThreadedSandbox]:
    sb = ThreadedSandbox(tmp_path)
    try:
        yield sb
    finally:
        sb.close()


def echo_pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"terminationGracePeriodSeconds": 10, "containers": [{
            "name": "echo", "image": "kubetunnel/sandbox-echo",
            "env": [{"name": "POD_NAME",
                     "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}}}]},
    }


def ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True"
               for c in (pod.status.conditions or []))


def test_pod_runs_and_is_reachable_through_port_forward_and_logs(
        sandbox: ThreadedSandbox) -> None:
    core = client.CoreV1Api(sandbox.api_client())
    core.create_namespaced_pod("default", echo_pod("web-1", {"app": "web"}))
    pod = eventually(lambda: (p := core.read_namespaced_pod("web-1", "default")) and ready(p)
                     and p)
    assert pod.spec.node_name == "sandbox"
    assert pod.status.phase == "Running"
    assert pod.status.pod_ip.startswith("127.77.")
    assert pod.status.container_statuses[0].ready

    pf = portforward(core.connect_get_namespaced_pod_portforward, "web-1", "default",
                     ports="8080")
    try:
        sock = pf.socket(8080)
        sock.settimeout(10)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")
        assert answer.endswith(b"\r\n\r\nweb-1")
    finally:
        pf.close()
        eventually(lambda: not pf.connected)
        # The server closed the websocket after the pod closed its connection; the client's
        # proxy thread then returns without closing its socket, so close it here.
        pf.websocket.shutdown()

    logs = core.read_namespaced_pod_log("web-1", "default")
    assert "echo.serving" in logs
    assert core.read_namespaced_pod_log("web-1", "default", tail_lines=1).count("\n") == 1

    core.delete_namespaced_pod("web-1", "default")
    def gone() -> bool:
        try:
            core.read_namespaced_pod("web-1", "default")
        except ApiException as exc:
            return exc.status == 404
        return False

    eventually(gone)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(
            (pod.status.pod_ip, 8080), timeout=2):
        pass


def test_pod_kubeconfig_token_is_the_service_account_under_rbac(sandbox: ThreadedSandbox) -> None:
    assert sandbox.node.agent.config.api is not None
    token = sandbox.node.agent.config.api.token_for("default", "default")
    assert sandbox.sandbox.tokens[token] == "system:serviceaccount:default:default"
    as_pod = client.CoreV1Api(sandbox.api_client(token))
    # Accepted (not 401) but, like any ServiceAccount without bindings, allowed nothing.
    with pytest.raises(client.ApiException) as denied:
        as_pod.list_namespaced_pod("default")
    assert denied.value.status == 403
    assert json.loads(denied.value.body)["message"] == (
        'pods is forbidden: User "system:serviceaccount:default:default" cannot list '
        'resource "pods" in API group "" in the namespace "default"')
    rbac = client.RbacAuthorizationV1Api(sandbox.api_client())
    rbac.create_namespaced_role("default", {
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]})
    rbac.create_namespaced_role_binding("default", {
        "metadata": {"name": "pod-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}]})
    try:
        assert as_pod.list_namespaced_pod("default").items == []
    finally:
        rbac.delete_namespaced_role_binding("pod-reader", "default")
        rbac.delete_namespaced_role("pod-reader", "default")


def test_unknown_image_is_pending_with_a_reason(sandbox: ThreadedSandbox) -> None:
    core = client.CoreV1Api(sandbox.api_client())
    pod = echo_pod("db", {"app": "db"})
    pod["spec"]["containers"][0]["image"] = "postgres:16"
    core.create_namespaced_pod("default", pod)

    def refused() -> Any:
        # The first waiting state may be ContainerCreating: wait for the reason itself.
        statuses = core.read_namespaced_pod("db", "default").status.container_statuses or []
        waiting = statuses[0].state.waiting if statuses else None
        return waiting if waiting and waiting.reason == "ErrImageNeverPull" else None
    state = eventually(refused)
    assert "postgres:16" in state.message
    assert core.read_namespaced_pod("db", "default").status.phase == "Pending"
