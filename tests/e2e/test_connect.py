"""The whole loop of issue 7 on the sandbox: connect, fail back, come back, Ctrl-C, SIGKILL."""

from __future__ import annotations

import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    Ask,
    Connect,
    LocalServer,
    Run,
    deploy_echo,
    selector,
    tunnel_objects,
    wait_for,
)

# The first test of each control plane also starts its sandbox and operator (the real one
# starts etcd and three Kubernetes components): the timeout only bounds a hang.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_intercept_failback_return_and_ctrl_c(
    kubectl: Run, namespace: str, connect: Callable[..., Connect],
    ask: Ask,
    local_server: Callable[[str], LocalServer], tmp_path: Path,
) -> None:
    ip = deploy_echo(kubectl, namespace, "orders")
    assert ask(ip).startswith("orders-")
    before = selector(kubectl, namespace, "orders")
    local = local_server("orders")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    session = connect("orders", "-n", namespace, "-p", f"{local.port}:80",
                      "--hosts-file", str(hosts))
    session.wait_line("traffic switched")
    # As a pod in the cluster would: the Service's ClusterIP, answered on this machine.
    assert wait_for(lambda: ask(ip) == "local:orders", 2, "requests reaching the local server")
    assert [ask(ip) for _ in range(5)] == ["local:orders"] * 5

    local.stop()
    failback = wait_for(lambda: ask(ip).startswith("orders-"), 1.0, "failback to the cluster")
    assert ask(ip).startswith("orders-")
    session.wait_line("traffic goes back to the cluster")
    # Said with its time and its reason: the agent sends new connections to the Service's pods.
    session.wait_line("traffic -> cluster via agent (local process down)")

    local.start()
    wait_for(lambda: ask(ip) == "local:orders", 2.0, "traffic coming back to the local server")
    session.wait_line("traffic returns to it")

    assert session.stop(signal.SIGINT) == 0, session.output()
    assert "restored" in session.output()
    assert selector(kubectl, namespace, "orders") == before
    assert tunnel_objects(kubectl, namespace) == []
    assert hosts.read_text() == "127.0.0.1 localhost\n"
    assert ask(ip).startswith("orders-")
    assert failback < 1.0


def test_sigterm_cleans_up_like_ctrl_c(
    kubectl: Run, namespace: str, connect: Callable[..., Connect],
    ask: Ask,
    local_server: Callable[[str], LocalServer],
) -> None:
    ip = deploy_echo(kubectl, namespace, "cart", replicas=1)
    before = selector(kubectl, namespace, "cart")
    local = local_server("cart")
    session = connect("cart", "-n", namespace, "-p", f"{local.port}:http", "--no-forward")
    session.wait_line("traffic switched")
    assert session.stop(signal.SIGTERM) == 0, session.output()
    assert selector(kubectl, namespace, "cart") == before
    assert tunnel_objects(kubectl, namespace) == []
    assert ask(ip).startswith("cart-")


def test_killed_cli_fails_back_then_lease_cleans_up(
    kubectl: Run, namespace: str, connect: Callable[..., Connect],
    ask: Ask,
    local_server: Callable[[str], LocalServer],
) -> None:
    ip = deploy_echo(kubectl, namespace, "orders", replicas=1)
    before = selector(kubectl, namespace, "orders")
    local = local_server("orders")
    session = connect("orders", "-n", namespace, "-p", f"{local.port}:80", "--no-forward",
                      "--lease-ttl", "5")
    session.wait_line("traffic switched")
    assert wait_for(lambda: ask(ip) == "local:orders", 2, "interception")
    session.stop(signal.SIGKILL)
    renewed = datetime.fromisoformat(kubectl(
        "-n", namespace, "get", "kubetunnels", "orders", "-o", "jsonpath={.spec.renewTime}"
    ).stdout.strip().replace("Z", "+00:00"))  # the CLI's last renewal: nobody renews after the kill
    # The tunnel drops with the process: the agent reports at once (local server still up).
    wait_for(lambda: ask(ip).startswith("orders-"), 2.0, "failback after SIGKILL")
    # Nobody renews the lease any more: the operator removes the leftovers after the TTL.
    wait_for(lambda: tunnel_objects(kubectl, namespace) == [], 25, "lease clean-up",
             interval=0.5)
    # Not before the lease expired: its last renewal plus the TTL (5 s).
    assert datetime.now(UTC) >= renewed + timedelta(seconds=5)
    assert selector(kubectl, namespace, "orders") == before


def test_two_services_connected_at_once(
    kubectl: Run, namespace: str, connect: Callable[..., Connect],
    ask: Ask,
    local_server: Callable[[str], LocalServer],
) -> None:
    ips = {name: deploy_echo(kubectl, namespace, name, replicas=1)
           for name in ("orders", "payments")}
    sessions = {}
    for name in ips:
        local = local_server(name)
        sessions[name] = connect(name, "-n", namespace, "-p", f"{local.port}:80",
                                 "--no-forward")
    for name, session in sessions.items():
        session.wait_line("traffic switched")
        def answered(n: str = name) -> bool:
            return ask(ips[n]) == f"local:{n}"

        assert wait_for(answered, 2, f"{name} intercepted")
    for session in sessions.values():
        assert session.stop(signal.SIGINT) == 0, session.output()
    assert ask(ips["orders"]).startswith("orders-")
    assert ask(ips["payments"]).startswith("payments-")
    assert tunnel_objects(kubectl, namespace) == []
