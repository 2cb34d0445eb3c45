"""forward: the local process reaches the cluster's Services by name, through the tunnel while a
connect session is up, else through port-forward, and survives a pod being replaced."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import Connect, LocalServer, Run, ask_here, deploy_echo, wait_for

# The first test of each control plane also starts its sandbox and operator (the real one
# starts etcd and three Kubernetes components): the timeout only bounds a hang.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def resolve(hosts: Path, name: str) -> str | None:
    """Look a name up in a hosts file, as the resolver would."""
    for line in hosts.read_text().splitlines():
        fields = line.split("#")[0].split()
        if len(fields) > 1 and name in fields[1:]:
            return fields[0]
    return None


def replace_pods(kubectl: Run, namespace: str, app: str) -> None:
    before = kubectl("-n", namespace, "get", "pods", "-l", f"app={app}", "-o", "name").stdout
    assert kubectl("-n", namespace, "delete", "pods", "-l", f"app={app}").returncode == 0
    rollout = kubectl("-n", namespace, "rollout", "status", f"deployment/{app}", "--timeout=30s")
    assert rollout.returncode == 0, rollout.stderr
    after = kubectl("-n", namespace, "get", "pods", "-l", f"app={app}", "-o", "name").stdout
    assert set(before.split()).isdisjoint(after.split())


def test_connect_forwards_other_services_through_the_tunnel(
    kubectl: Run, namespace: str, connect: Callable[..., Connect],
    local_server: Callable[[str], LocalServer], tmp_path: Path,
) -> None:
    deploy_echo(kubectl, namespace, "orders", replicas=1)
    deploy_echo(kubectl, namespace, "payments", replicas=1)
    local = local_server("orders")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    session = connect("orders", "-n", namespace, "-p", f"{local.port}:80",
                      "--hosts-file", str(hosts))
    session.wait_line("traffic switched")
    address = resolve(hosts, f"payments.{namespace}.svc.cluster.local")
    assert address is not None, hosts.read_text()
    assert resolve(hosts, "payments") == address
    assert resolve(hosts, "orders") is None  # its own Service would loop back to itself
    first = ask_here(address)
    assert first.startswith("payments-"), first
    replace_pods(kubectl, namespace, "payments")
    wait_for(lambda: ask_here(address).startswith("payments-") and ask_here(address) != first, 10,
             "the replacement pod answering through the forward")
    assert session.stop(signal.SIGINT) == 0, session.output()
    assert resolve(hosts, "payments") is None


def test_forward_alone_uses_port_forward_and_survives_pod_replacement(
    kubectl: Run, namespace: str, env: dict[str, str], tmp_path: Path,
) -> None:
    deploy_echo(kubectl, namespace, "payments", replicas=1)
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    log = tmp_path / "forward.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "modes", "cli", "forward", "-n", namespace,
             "--hosts-file", str(hosts)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    try:
        wait_for(lambda: resolve(hosts, "payments") is not None, 15, "hosts entries")
        address = resolve(hosts, f"payments.{namespace}")
        assert address is not None
        first = ask_here(address, timeout=3)
        assert first.startswith("payments-"), (first, log.read_text())
        replace_pods(kubectl, namespace, "payments")
        wait_for(lambda: ask_here(address, timeout=3) not in (first, "") and
                 ask_here(address, timeout=3).startswith("payments-"), 10,
                 "the replacement pod answering through port-forward")
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(15)
    assert code == 0, log.read_text()
    assert hosts.read_text() == "127.0.0.1 localhost\n"
