"""kubectl against the sandbox with the node on: apply, wait, rollout status, logs, delete."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.sandbox_node.sandboxed import ThreadedSandbox, eventually

MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello}
spec:
  replicas: 2
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: echo
        image: kubetunnel/sandbox-echo:latest
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: http}}
---
apiVersion: v1
kind: Service
metadata: {name: hello}
spec:
  selector: {app: hello}
  ports: [{port: 8080, targetPort: http}]
"""


@pytest.fixture
def kubectl(tmp_path: Path) -> Iterator[tuple[ThreadedSandbox, list[str]]]:
    sb = ThreadedSandbox(tmp_path, tls=True)
    config = tmp_path / "kubeconfig"
    authority = base64.b64encode(sb.ca_pem).decode()
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "sb", "cluster": {"server": sb.url,
                                                "certificate-authority-data": authority}}],
        "users": [{"name": "admin", "user": {"token": sb.sandbox.token}}],
        "contexts": [{"name": "sb", "context": {"cluster": "sb", "user": "admin",
                                                "namespace": "default"}}],
        "current-context": "sb"}))
    try:
        yield sb, ["kubectl", "--kubeconfig", str(config)]
    finally:
        sb.close()


def run(cmd: list[str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([*cmd, *args], input=stdin, capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_kubectl_apply_wait_rollout_logs_delete(
        kubectl: tuple[ThreadedSandbox, list[str]]) -> None:
    _, cmd = kubectl
    # --validate=false: schema download is part 1's concern; this checks the node
    run(cmd, "apply", "--validate=false", "-f", "-", stdin=MANIFEST)
    run(cmd, "wait", "--for=condition=Available", "deployment/hello", "--timeout=20s")
    assert "successfully rolled out" in run(cmd, "rollout", "status", "deployment/hello",
                                            "--timeout=20s")
    assert "echo.serving" in run(cmd, "logs", "deployment/hello")
    pods = run(cmd, "get", "pods", "-l", "app=hello", "-o", "name").split()
    assert len(pods) == 2
    run(cmd, "delete", "-f", "-", "--cascade=foreground", "--wait=true", stdin=MANIFEST)
    eventually(lambda: run(cmd, "get", "pods,replicasets", "-o", "name").strip() == "",
               timeout=15)


@pytest.mark.timeout(150)  # three CLI runs, each waiting on the operator or its namespace
def test_install_uninstall_install(kubectl: tuple[ThreadedSandbox, list[str]]) -> None:
    """The namespace of an uninstalled operator goes once its running pod has, and no later.

    It used to stay Terminating after the last object was gone, until an unrelated deletion,
    so a second `cli install` was refused ("... because it is being terminated").
    """
    _, cmd = kubectl

    def kt(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "modes", "cli", *args, "--kubeconfig",
                               cmd[-1]], capture_output=True, text=True, timeout=120,
                              check=False)

    def namespace_gone() -> bool:
        done = subprocess.run([*cmd, "get", "namespace", "kubetunnel"], capture_output=True,
                              text=True, timeout=30, check=False)
        return done.returncode != 0 and "NotFound" in done.stderr

    # As a person would: the operator Ready, then gone (its pod first, so the namespace
    # controller itself deletes the last objects, the case that used to hang).
    first = kt("install", "--timeout", "60")
    assert first.returncode == 0, first.stderr
    gone = kt("uninstall")
    assert gone.returncode == 0, gone.stderr
    eventually(namespace_gone, timeout=30)
    again = kt("install", "--no-wait")
    assert again.returncode == 0, again.stderr
    assert "namespace/kubetunnel created" in again.stdout
    assert kt("uninstall").returncode == 0
    eventually(namespace_gone, timeout=30)
