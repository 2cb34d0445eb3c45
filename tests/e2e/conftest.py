"""Whole flows on a sandbox with its node: the operator, agents and echo pods run as processes.

One sandbox and one operator per module; every test deploys its workload in a namespace of its
own and cleans up after itself; no process outlives the test that started it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modes.sandbox.testing import CONTROL_PLANES, RunningSandbox, cluster_get, running_sandbox

HERE = Path(__file__).parent
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module", params=CONTROL_PLANES)
def sandbox(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """Each module's flows run on both control planes: the builtin API server and Kubernetes'
    own (``--control-plane real``, built by ``python3 build.py --control-plane``)."""
    with running_sandbox(tmp_path_factory.mktemp("e2e-sandbox"),
                         control_plane=request.param) as running:
        env = {**os.environ, "KUBECONFIG": str(running.kubeconfig)}
        installed = subprocess.run(
            [sys.executable, "-m", "modes", "cli", "install", "--timeout", "60"],
            capture_output=True, text=True, env=env, timeout=90, check=False,
        )
        assert installed.returncode == 0, installed.stderr
        yield running


@pytest.fixture
def env(sandbox: RunningSandbox) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(sandbox.kubeconfig)}


@pytest.fixture
def kubectl(env: dict[str, str]) -> Run:
    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True,
                              env=env, timeout=60, check=False)

    return run


@pytest.fixture
def namespace(kubectl: Run) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    assert kubectl("apply", "-f", "-", stdin=json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})).returncode == 0
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


def deploy_echo(kubectl: Run, namespace: str, name: str, replicas: int = 2) -> str:
    """The sandbox echo workload as Service ``name``; returns its ClusterIP once it answers."""
    labels = {"app": name}
    objects = [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": name, "namespace": namespace},
         "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                      "name": "echo", "image": "kubetunnel/sandbox-echo",
                      "env": [{"name": "PORT", "value": "8080"}],
                      "ports": [{"name": "http", "containerPort": 8080}],
                      "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                  }]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
         "spec": {"selector": labels, "ports": [{"name": "http", "port": 80,
                                                 "targetPort": "http"}]}},
    ]
    for obj in objects:
        result = kubectl("apply", "-f", "-", stdin=json.dumps(obj))
        assert result.returncode == 0, result.stderr
    rollout = kubectl("-n", namespace, "rollout", "status", f"deployment/{name}",
                      "--timeout=30s")
    assert rollout.returncode == 0, rollout.stderr
    ip = kubectl("-n", namespace, "get", "service", name, "-o", "jsonpath={.spec.clusterIP}")
    return ip.stdout.strip()


def ask_here(address: str, port: int = 80, timeout: float = 1.0) -> str:
    """One GET to an address of this machine; the answer or ``error:<kind>``."""
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/", timeout=timeout) as response:
            return str(response.read().decode())
    except (OSError, ValueError) as exc:
        return f"error:{type(exc).__name__}"


Ask = Callable[..., str]


@pytest.fixture
def ask(sandbox: RunningSandbox) -> Ask:
    """One GET to a ClusterIP or pod address, sent from inside the cluster's network as a pod
    would send it (the real control plane's pods live in a network namespace)."""
    def ask_in(address: str, port: int = 80, timeout: float = 1.0) -> str:
        try:
            status, body = cluster_get(sandbox, address, port, timeout=timeout)
        except (OSError, ValueError) as exc:
            return f"error:{type(exc).__name__}"
        return body if status == 200 else f"error:HTTP{status}"

    return ask_in


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.05, details: Callable[[], str] | None = None) -> float:
    """Seconds until ``predicate()`` is truthy; fails the test with ``what`` after ``timeout``
    (and ``details()``, such as a process's output, to say why)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            more = f"\n{details()[-3000:]}" if details is not None else ""
            pytest.fail(f"{what} did not happen within {timeout}s{more}")
        time.sleep(interval)
    return time.monotonic() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalServer:
    port: int
    name: str
    process: subprocess.Popen[bytes] | None = None
    args: tuple[str, ...] = ()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "local_server.py"), str(self.port), self.name,
             *self.args])
        wait_for(lambda: ask_here("127.0.0.1", self.port) == f"local:{self.name}", 10,
                 "the local server to answer")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def local_server() -> Iterator[Callable[..., LocalServer]]:
    servers: list[LocalServer] = []

    def make(name: str, *args: str) -> LocalServer:
        server = LocalServer(free_port(), name, args=args)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@dataclass
class Connect:
    process: subprocess.Popen[str]
    log: Path  # stdout: the progress a person reads
    err_log: Path  # stderr: log events and errors

    def output(self) -> str:
        return self.log.read_text() + self.err_log.read_text()

    def errors(self) -> str:
        return self.err_log.read_text()

    def wait_line(self, text: str, timeout: float = 30) -> None:
        wait_for(lambda: text in self.output() or self.process.poll() is not None, timeout,
                 f"connect printing {text!r}", details=self.output)
        assert text in self.output(), self.output()

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.process.wait(timeout)
        self.process.kill()
        return self.process.wait()


@pytest.fixture
def connect(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Connect]]:
    sessions: list[Connect] = []

    # The CLI starts a `-- COMMAND` in a session of its own, which a SIGKILLed CLI leaves
    # behind; the command inherits this marker, so whatever a failed test left is found.
    marker = f"KUBETUNNEL_TEST_CONNECT={uuid.uuid4().hex}"

    def start(*args: str) -> Connect:
        log = tmp_path / f"connect-{len(sessions)}.log"
        err_log = tmp_path / f"connect-{len(sessions)}.err"
        with log.open("w") as stdout, err_log.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "modes", "cli", "connect", *args],
                stdout=stdout, stderr=stderr, text=True,
                env={**env, marker.split("=")[0]: marker.split("=")[1]},
            )
        session = Connect(process, log, err_log)
        sessions.append(session)
        return session

    yield start
    for session in sessions:
        session.stop(signal.SIGKILL, timeout=5)
    for pid in processes_with(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def processes_with(marker: str) -> list[int]:
    """Processes whose environment holds ``marker`` (NAME=VALUE)."""
    needle = marker.encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def selector(kubectl: Run, namespace: str, service: str) -> dict[str, Any]:
    out = kubectl("-n", namespace, "get", "service", service, "-o", "json")
    spec: dict[str, Any] = json.loads(out.stdout)
    return {"selector": spec["spec"].get("selector"),
            "annotations": {k: v for k, v in spec["metadata"].get("annotations", {}).items()
                            if k.startswith("kubetunnel.dev/")}}


def tunnel_objects(kubectl: Run, namespace: str) -> list[str]:
    out = kubectl("-n", namespace, "get",
                  "kubetunnels,deployments,secrets,serviceaccounts,services", "-o", "name")
    return sorted(line for line in out.stdout.split() if "kubetunnel" in line)
