"""``kubectl port-forward`` (the real binary) against the sandbox: the SPDY tunnel in a
websocket (kubectl's default), plain SPDY (websockets off), ``svc/NAME``, errors."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import select
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.sandbox_node.sandboxed import ThreadedSandbox

MANIFEST = """
apiVersion: v1
kind: Pod
metadata: {name: echo, labels: {app: echo}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: echo
    image: kubetunnel/sandbox-echo:latest
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {tcpSocket: {port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{name: web, port: 80, targetPort: http}]
"""
KUBECTL = str(Path(sys.executable).with_name("kubectl")) if Path(
    sys.executable).with_name("kubectl").exists() else (shutil.which("kubectl") or "kubectl")


@dataclass
class Cluster:
    sandbox: ThreadedSandbox
    kubectl: list[str]
    pod_ip: str


def run(cmd: list[str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([*cmd, *args], input=stdin, capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    sb = ThreadedSandbox(tmp_path, tls=True)
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "sb", "cluster": {
            "server": sb.url, "certificate-authority-data": base64.b64encode(sb.ca_pem).decode()}}],
        "users": [{"name": "admin", "user": {"token": sb.sandbox.token}}],
        "contexts": [{"name": "sb", "context": {"cluster": "sb", "user": "admin",
                                                "namespace": "default"}}],
        "current-context": "sb"}))
    kubectl = [KUBECTL, "--kubeconfig", str(config)]
    try:
        run(kubectl, "apply", "--validate=false", "-f", "-", stdin=MANIFEST)
        run(kubectl, "wait", "--for=condition=Ready", "pod/echo", "--timeout=20s")
        pod_ip = run(kubectl, "get", "pod", "echo", "-o", "jsonpath={.status.podIP}")
        yield Cluster(sb, kubectl, pod_ip)
    finally:
        sb.close()


class Forward:
    """A running ``kubectl port-forward``; ``stop()`` ends it and returns its stderr."""

    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.port = port
        self.stderr: str | None = None

    def stop(self) -> str:
        if self.stderr is None:
            if self.proc.poll() is None:
                self.proc.terminate()
            self.stderr = self.proc.communicate(timeout=10)[1]
        return self.stderr


@contextlib.contextmanager
def port_forward(cluster: Cluster, target: str, port: str, *,
                 websockets: bool = True) -> Iterator[Forward]:
    """Run kubectl port-forward on a free local port; yields once kubectl listens there
    (kubectl listens only after its connection to the API server is upgraded)."""
    env = dict(os.environ)
    env.pop("KUBECTL_PORT_FORWARD_WEBSOCKETS", None)
    if not websockets:
        env["KUBECTL_PORT_FORWARD_WEBSOCKETS"] = "false"
    proc = subprocess.Popen(
        [*cluster.kubectl, "port-forward", "--address", "127.0.0.1", target, f":{port}", "-v=6"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    forward = Forward(proc, 0)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)  # bounds a hang only
        line = proc.stdout.readline() if ready else ""
        found = re.search(r"Forwarding from 127\.0\.0\.1:(\d+) ->", line)
        assert found, f"kubectl did not start forwarding: {line!r} {forward.stop()}"
        forward.port = int(found.group(1))
        yield forward
    finally:
        forward.stop()


def http_get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body


def test_port_forward_tunnels_spdy_in_a_websocket_by_default(cluster: Cluster) -> None:
    with port_forward(cluster, "pod/echo", "8080") as forward:
        with ThreadPoolExecutor(8) as pool:
            bodies = list(pool.map(lambda _: http_get(forward.port), range(16)))
        assert bodies == [b"echo"] * 16
        assert http_get(forward.port) == b"echo"  # after all of those have finished
        err = forward.stop()
    assert re.search(r'verb="GET" url="[^"]+/pods/echo/portforward" status="101', err), err
    assert 'verb="POST"' not in err  # no fallback to plain SPDY


def test_port_forward_over_plain_spdy_when_websockets_are_off(cluster: Cluster) -> None:
    with port_forward(cluster, "pod/echo", "8080", websockets=False) as forward:
        with ThreadPoolExecutor(8) as pool:
            bodies = list(pool.map(lambda _: http_get(forward.port), range(16)))
        assert bodies == [b"echo"] * 16
        err = forward.stop()
    assert re.search(r'verb="POST" url="[^"]+/pods/echo/portforward" status="101', err), err


def test_port_forward_to_a_service_reaches_its_pod(cluster: Cluster) -> None:
    with port_forward(cluster, "svc/echo", "web") as forward:
        assert http_get(forward.port) == b"echo"


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(1 << 20):
            self.request.sendall(data)


@pytest.fixture
def raw_port(cluster: Cluster) -> Iterator[int]:
    """A byte-echo port in the pod's network (its address), beside the pod's own HTTP port."""
    server = socketserver.ThreadingTCPServer((cluster.pod_ip, 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="test-raw-echo")
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def round_trip(port: int, size: int, seed: int) -> None:
    block = hashlib.sha256(str(seed).encode()).digest() * 4096  # 128 KiB
    payload = (block * (size // len(block) + 1))[:size]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sender = threading.Thread(target=lambda: (sock.sendall(payload),
                                                  sock.shutdown(socket.SHUT_WR)))
        sender.start()
        received = bytearray()
        while chunk := sock.recv(1 << 20):  # ends when the echo, seeing our EOF, hangs up
            received += chunk
        sender.join()
    assert len(received) == size
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


@pytest.mark.parametrize("websockets", [True, False], ids=["tunnel", "spdy"])
def test_port_forward_carries_megabytes_both_ways_on_parallel_connections(
        cluster: Cluster, raw_port: int, websockets: bool) -> None:
    with (port_forward(cluster, "pod/echo", str(raw_port), websockets=websockets) as forward,
          ThreadPoolExecutor(4) as pool):
        list(pool.map(lambda i: round_trip(forward.port, 8 << 20, i), range(4)))


def test_a_closed_pod_port_is_reported_by_kubectl(cluster: Cluster) -> None:
    with port_forward(cluster, "pod/echo", "9") as forward:
        with socket.create_connection(("127.0.0.1", forward.port), timeout=10) as sock:
            assert sock.recv(1024) == b""
        err = forward.stop()
    assert f"error forwarding port 9 to pod default/echo: failed to connect to {cluster.pod_ip}:9"\
        in err, err
    assert "connection refused" in err
