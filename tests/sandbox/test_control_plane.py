"""``sandbox up --control-plane real``: Kubernetes' own control plane over the process node.

Checked with kubectl, a third party to both: the server version that was built, the node Ready
and heartbeating, pods scheduled by kube-scheduler and run by the node, their logs and
port-forwards through kube-apiserver's calls to the kubelet API (the official Python client's
port-forward too), and a stop that leaves nothing behind.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from kubernetes import client, config
from kubernetes.stream import portforward

from modes.sandbox.controlplane import binary
from modes.sandbox.controlplane.binary import KUBERNETES_VERSION
from modes.sandbox.testing import (
    RunningSandbox,
    cluster_get,
    cluster_listener,
    running_sandbox,
)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def test_go_module_builds_the_version_the_sandbox_names() -> None:
    go_mod = (ROOT / "controlplane" / "go.mod").read_text()
    required = re.search(r"^\s*k8s.io/kubernetes (v\S+)$", go_mod, re.M)
    assert required is not None
    assert required.group(1) == KUBERNETES_VERSION
    # Every staging module maps to its release of the same minor and patch version.
    _, minor, patch = KUBERNETES_VERSION.split(".")
    replaced = re.findall(r"^\s*(k8s.io/\S+) => k8s.io/\S+ (v\S+)$", go_mod, re.M)
    assert len(replaced) > 20
    assert {version for _, version in replaced} == {f"v0.{minor}.{patch}"}


def test_real_control_plane_needs_its_binary(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-binary"
    result = subprocess.run(
        [sys.executable, "-m", "modes", "sandbox", "up", "--control-plane", "real",
         "--kubeconfig", str(tmp_path / "kubeconfig")],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "KUBETUNNEL_CONTROL_PLANE": str(missing)},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"kubetunnel: error: no control-plane binary at $KUBETUNNEL_CONTROL_PLANE ({missing}): "
        "build it with 'python3 build.py --control-plane' (needs Go, see README), or use "
        "--control-plane builtin")
    assert not (tmp_path / "kubeconfig").exists()


def test_no_node_is_refused_for_the_real_control_plane(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modes", "sandbox", "up", "--control-plane", "real", "--no-node",
         "--kubeconfig", str(tmp_path / "kubeconfig")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "--no-node applies to --control-plane builtin only" in result.stderr


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    with running_sandbox(tmp_path_factory.mktemp("real"), control_plane="real") as running:
        yield running


@pytest.fixture
def kubectl(real: RunningSandbox) -> Kubectl:
    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True,
                              env={**os.environ, "KUBECONFIG": str(real.kubeconfig)},
                              timeout=60, check=False)

    return run


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout}s")
        time.sleep(0.1)


def test_kubectl_version_is_the_one_built(kubectl: Kubectl) -> None:
    result = kubectl("version", "-o", "json")
    assert result.returncode == 0, result.stderr
    server = json.loads(result.stdout)["serverVersion"]
    assert server["gitVersion"] == KUBERNETES_VERSION
    assert server["minor"] == KUBERNETES_VERSION.split(".")[1]


def test_node_is_ready_and_renews_its_lease(kubectl: Kubectl) -> None:
    node = json.loads(kubectl("get", "node", "sandbox", "-o", "json").stdout)
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] > 0
    assert node["status"]["nodeInfo"]["kubeletVersion"] == KUBERNETES_VERSION
    table = kubectl("get", "nodes")
    assert re.search(r"^sandbox\s+Ready\s", table.stdout, re.M), table.stdout

    def renew_time() -> str:
        lease = kubectl("-n", "kube-node-lease", "get", "lease", "sandbox", "-o", "json")
        return str(json.loads(lease.stdout)["spec"]["renewTime"]) if lease.returncode == 0 else ""

    first = renew_time()
    assert first
    wait_until(lambda: renew_time() not in ("", first), 30, "the node's Lease was not renewed")


def test_scheduled_pod_runs_answers_and_logs(kubectl: Kubectl, real: RunningSandbox) -> None:
    created = kubectl("create", "deployment", "logs", "--image=kubetunnel/sandbox-echo",
                      "--port=8080")
    assert created.returncode == 0, created.stderr
    rolled = kubectl("rollout", "status", "deployment/logs", "--timeout=60s")
    assert rolled.returncode == 0, rolled.stderr
    pod = json.loads(kubectl("get", "pods", "-l", "app=logs", "-o", "json").stdout)["items"][0]
    assert pod["spec"]["nodeName"] == "sandbox"  # bound by kube-scheduler
    ip = pod["status"]["podIP"]
    assert ip.startswith("198.18."), ip
    # No readiness probe: Ready once started, which may be just before it listens.
    def answers() -> bool:
        try:
            return cluster_get(real, ip, 8080, timeout=5) == (200, pod["metadata"]["name"])
        except OSError:
            return False

    wait_until(answers, 30, "the pod did not answer on its IP from inside the pod network")
    # kube-apiserver reads logs from the kubelet API of the pod's node.
    logs = kubectl("logs", f"pod/{pod['metadata']['name']}")
    assert logs.returncode == 0, logs.stderr
    assert "echo.serving" in logs.stdout
    assert kubectl("delete", "deployment", "logs").returncode == 0


class EchoPod(NamedTuple):
    name: str
    ip: str
    raw_port: int  # a byte echo on the pod's address, beside the pod's HTTP server on 8080


def _echo_connections(listener: socket.socket) -> None:
    """Each connection gets back every byte it sends and, after its half-close, an EOF."""
    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    while True:
        try:
            conn, _ = listener.accept()
        except OSError:  # shut down: the fixture is done
            return
        threading.Thread(target=echo, args=(conn,), name="test-byte-echo", daemon=True).start()


@pytest.fixture(scope="module")
def echo_pod(real: RunningSandbox) -> Iterator[EchoPod]:
    """A sandbox-echo pod run by the node, and a byte echo listening on its address."""
    env = {**os.environ, "KUBECONFIG": str(real.kubeconfig)}

    def kubectl(*args: str) -> str:
        done = subprocess.run(["kubectl", *args], capture_output=True, text=True, env=env,
                              timeout=90, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    kubectl("create", "deployment", "forwarded", "--image=kubetunnel/sandbox-echo", "--port=8080")
    kubectl("rollout", "status", "deployment/forwarded", "--timeout=60s")
    pod = json.loads(kubectl("get", "pods", "-l", "app=forwarded", "-o", "json"))["items"][0]
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]

    def answers() -> bool:
        try:
            return cluster_get(real, ip, 8080, timeout=5) == (200, name)
        except OSError:
            return False

    wait_until(answers, 30, "the pod did not answer on its IP")
    listener = cluster_listener(real, ip)
    acceptor = threading.Thread(target=_echo_connections, args=(listener,), name="test-accept")
    acceptor.start()
    try:
        yield EchoPod(name, ip, listener.getsockname()[1])
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        acceptor.join(10)
        listener.close()
        kubectl("delete", "deployment", "forwarded")


def _payload(seed: int) -> bytes:
    return bytes((seed + i) % 251 for i in range(256 * 1024))


def _echoed(port: int, seed: int) -> None:
    """One connection to a forwarded byte echo: all it sends comes back, then EOF."""
    payload = _payload(seed)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sender = threading.Thread(target=lambda: (sock.sendall(payload),
                                                  sock.shutdown(socket.SHUT_WR)))
        sender.start()
        received = bytearray()
        while chunk := sock.recv(1 << 20):  # ends once the echo, seeing our EOF, hangs up
            received += chunk
        sender.join()
    assert bytes(received) == payload


def _http_body(sock: socket.socket) -> str:
    sock.sendall(b"GET / HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n")
    response = http.client.HTTPResponse(sock)
    response.begin()
    assert response.status == 200
    return response.read().decode()


def _forwarded(proc: subprocess.Popen[bytes], count: int) -> dict[int, int]:
    """Pod port -> local port, from kubectl's ``Forwarding from`` lines (printed once its
    connection to kube-apiserver is upgraded)."""
    assert proc.stdout is not None
    out = b""
    deadline = time.monotonic() + 30  # bounds a hang only
    while len(found := re.findall(rb"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)\n", out)) < count:
        # Unbuffered reads: a buffered reader may hold the next line where select cannot see it.
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        more = os.read(proc.stdout.fileno(), 4096) if ready else b""
        assert more, f"kubectl port-forward printed {out!r} and then stopped (or hung)"
        out += more
    return {int(remote): int(local) for local, remote in found}


@pytest.mark.parametrize("websockets", [True, False], ids=["tunnel", "spdy"])
def test_kubectl_port_forward_through_kube_apiserver(
        real: RunningSandbox, echo_pod: EchoPod, websockets: bool, tmp_path: Path) -> None:
    """kubectl tunnels SPDY in a websocket (or, websockets off, upgrades to SPDY itself);
    kube-apiserver speaks plain SPDY/3.1 to the node's /portForward either way."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECTL_PORT_FORWARD_WEBSOCKETS"}
    if not websockets:
        env["KUBECTL_PORT_FORWARD_WEBSOCKETS"] = "false"
    log = tmp_path / "kubectl.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [str(binary.locate()), "kubectl", "--kubeconfig", str(real.kubeconfig),
             "port-forward", "--address", "127.0.0.1", f"pod/{echo_pod.name}", ":8080",
             f":{echo_pod.raw_port}", "-v=6"],
            stdout=subprocess.PIPE, stderr=stderr, env=env)
    try:
        local = _forwarded(proc, 2)
        for seed in range(2):  # each a new connection through the same kubectl session
            _echoed(local[echo_pod.raw_port], seed)
            with socket.create_connection(("127.0.0.1", local[8080]), timeout=30) as sock:
                assert _http_body(sock) == echo_pod.name
    finally:
        proc.send_signal(signal.SIGINT)  # as Ctrl-C: kubectl closes its streams and exits 0
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise
        finally:
            assert proc.stdout is not None
            proc.stdout.close()
    assert code == 0, log.read_text()
    verb = "GET" if websockets else "POST"
    assert re.search(rf'verb="{verb}" url="[^"]+/pods/{echo_pod.name}/portforward" '
                     r'status="101', log.read_text()), log.read_text()


def test_official_client_port_forward_through_kube_apiserver(
        real: RunningSandbox, echo_pod: EchoPod) -> None:
    """The official Python client's websocket (v4.channel.k8s.io), which kube-apiserver turns
    into SPDY towards the node: several ports, a refused one reported on its error channel."""
    api = config.new_client_from_config(config_file=str(real.kubeconfig))
    core = client.CoreV1Api(api)
    try:
        for seed in range(2):
            pf = portforward(core.connect_get_namespaced_pod_portforward, echo_pod.name,
                             "default", ports=f"8080,{echo_pod.raw_port},9")
            try:
                raw = pf.socket(echo_pod.raw_port)
                raw.settimeout(30)
                payload = _payload(seed)
                raw.sendall(payload)
                received = bytearray()
                while len(received) < len(payload):
                    chunk = raw.recv(1 << 20)
                    assert chunk, f"the stream ended after {len(received)} bytes"
                    received += chunk
                assert bytes(received) == payload
                web = pf.socket(8080)
                web.settimeout(30)
                assert _http_body(web) == echo_pod.name
                refused = pf.socket(9)
                refused.settimeout(30)
                assert refused.recv(1024) == b""  # the client closes a port's socket on error
                error = pf.error(9)
                assert error is not None
                assert f"failed to connect to {echo_pod.ip}:9" in error, error
                assert "connection refused" in error, error
            finally:
                pf.close()
                deadline = time.monotonic() + 5
                while pf.connected and time.monotonic() < deadline:
                    time.sleep(0.01)
                pf.websocket.shutdown()
    finally:
        api.close()


def test_stop_leaves_no_process_namespace_or_state(tmp_path: Path) -> None:
    with running_sandbox(tmp_path, control_plane="real") as running:
        assert running.netns is not None
        assert Path(running.netns).exists()
        children = subprocess.run(["pgrep", "-P", str(running.pid)], capture_output=True,
                                  text=True, check=False).stdout.split()
        assert len(children) >= 4  # etcd, kube-apiserver, controller-manager, scheduler
        os.kill(running.pid, signal.SIGTERM)
        wait_until(lambda: not Path(f"/proc/{running.pid}").exists()
                   or _zombie(running.pid), 60, "the sandbox did not stop")
        netns = running.netns
    assert not Path(netns).exists()
    for child in children:
        assert not Path(f"/proc/{child}").exists() or _zombie(int(child)), child


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True
