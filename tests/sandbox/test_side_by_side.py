"""Several sandboxes on one machine: each keeps its own kubeconfig and its own addresses."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from modes.sandbox.claims import claim_ranges
from modes.sandbox.testing import RunningSandbox, running_sandbox

ECHO_POD = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "echo"},
    "spec": {"containers": [{
        "name": "echo", "image": "kubetunnel/sandbox-echo",
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"tcpSocket": {"port": "http"}},
    }]},
}


def _kubectl(sb: RunningSandbox, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(["kubectl", "--kubeconfig", str(sb.kubeconfig), *args], input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _up(kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    """`sandbox up` that is expected to refuse (so it returns quickly)."""
    return subprocess.run(
        [sys.executable, "-m", "modes", "sandbox", "up", "--kubeconfig", str(kubeconfig),
         "--no-node"],
        capture_output=True, text=True, timeout=30, check=False,
    )


def _until_dead(pid: int, timeout: float = 10) -> None:
    """Until ``pid`` has exited (a zombie until its parent reaps it: its files are closed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} still running after SIGKILL")


def test_two_sandboxes_with_default_ranges_both_run_their_pods(tmp_path: Path) -> None:
    # Whatever `sandbox up` would pick first is held here, so this also shows a held range is
    # skipped, and this test never takes the defaults from a person's sandbox.
    with claim_ranges() as held, \
            running_sandbox(tmp_path / "a", own_ranges=True) as a, \
            running_sandbox(tmp_path / "b", own_ranges=True) as b:
        addresses = []
        for sb in (a, b):
            _kubectl(sb, "apply", "-f", "-", stdin=json.dumps(ECHO_POD))
        for sb in (a, b):
            _kubectl(sb, "wait", "--for=condition=Ready", "pod/echo", "--timeout=30s")
            pod = json.loads(_kubectl(sb, "get", "pod", "echo", "-o", "json"))
            addresses.append(pod["status"]["podIP"])
            with urllib.request.urlopen(f"http://{pod['status']['podIP']}:8080/",
                                        timeout=10) as answer:
                assert answer.status == 200
        assert addresses[0] != addresses[1]
        for address in addresses:
            assert ipaddress.ip_address(address) not in ipaddress.ip_network(held.pod_cidr)


def test_a_kubeconfig_of_a_live_sandbox_is_not_overwritten(tmp_path: Path) -> None:
    with running_sandbox(tmp_path, extra_args=("--no-node",)) as first:
        before = first.kubeconfig.read_bytes()
        second = _up(first.kubeconfig)
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert lines[0].startswith(f"kubetunnel: error: kubeconfig {first.kubeconfig} belongs to "
                                   f"the running sandbox at {first.url} (pid {first.pid})")
        assert first.kubeconfig.read_bytes() == before
        # The first one is still what the kubeconfig reaches.
        assert "default" in _kubectl(first, "get", "namespaces", "-o", "name")


def test_the_kubeconfig_of_a_killed_sandbox_can_be_reused(tmp_path: Path) -> None:
    with running_sandbox(tmp_path, extra_args=("--no-node",)) as first:
        os.kill(first.pid, signal.SIGKILL)
        _until_dead(first.pid)
        with running_sandbox(tmp_path, extra_args=("--no-node",)) as second:
            config = yaml.safe_load(second.kubeconfig.read_text())
            assert config["clusters"][0]["cluster"]["server"] == second.url


def test_a_sandbox_that_cannot_start_leaves_no_kubeconfig(tmp_path: Path) -> None:
    with running_sandbox(tmp_path / "a", extra_args=("--no-node",)) as first:
        port = first.url.rsplit(":", 1)[1]
        config = tmp_path / "b" / "kubeconfig"
        failed = subprocess.run(
            [sys.executable, "-m", "modes", "sandbox", "up", "--kubeconfig", str(config),
             "--no-node", "--port", port],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert failed.returncode == 1
        assert "cannot listen" in failed.stderr
        assert not config.exists()
