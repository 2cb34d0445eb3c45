"""``sandbox up --control-plane real``: Kubernetes' own control plane over the process node.

Checked with kubectl, a third party to both: the server version that was built, the node Ready
and heartbeating, pods scheduled by kube-scheduler and run by the node, their logs through
kube-apiserver's call to the kubelet API, and a stop that leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modes.sandbox.controlplane.binary import KUBERNETES_VERSION
from modes.sandbox.testing import RunningSandbox, cluster_get, running_sandbox

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
