"""Bad input found by trying the CLI as a new user would: each is one line and changes nothing."""

from __future__ import annotations

import socket

import pytest

from tests.cli.conftest import Run, apply, one_line, service, snapshot


@pytest.mark.usefixtures("installed")
def test_two_ports_with_one_target_port_to_two_local_ports_is_refused(
    kt: Run, kubectl: Run, namespace: str
) -> None:
    apply(kubectl, service(namespace, "a", ports=[
        {"name": "http", "port": 80, "targetPort": 8080},
        {"name": "admin", "port": 81, "targetPort": 8080}]))
    before = snapshot(kubectl, namespace)
    result = kt("cli", "connect", "a", "-n", namespace, "--no-forward", "--timeout", "5",
                "-p", "19101:http", "-p", "19102:admin")
    one_line(result, 2, f"ports http and admin of Service {namespace}/a both reach target "
                         "port 8080", "map them to the same local port")
    assert snapshot(kubectl, namespace) == before


def test_forward_in_a_missing_namespace_says_so_and_prints_no_table(kt: Run) -> None:
    result = kt("cli", "forward", "-n", "no-such-namespace", "--no-hosts")
    one_line(result, 2, "namespace no-such-namespace does not exist (kubectl get namespaces)")
    assert result.stdout == ""


def test_forward_with_nothing_to_forward_says_so_and_prints_no_table(
    kt: Run, namespace: str
) -> None:
    result = kt("cli", "forward", "-n", namespace, "--no-hosts")
    one_line(result, 1, f"nothing to forward: no Service with a TCP port in namespace "
                         f"{namespace}")
    assert result.stdout == ""


@pytest.mark.usefixtures("installed")
def test_connect_in_a_missing_namespace_says_the_namespace_does_not_exist(kt: Run) -> None:
    result = kt("cli", "connect", "orders", "-n", "no-such-namespace", "-p", "8080:80",
                "--no-forward")
    one_line(result, 2, "namespace no-such-namespace does not exist")


@pytest.mark.usefixtures("installed")
def test_no_wait_local_checks_the_local_port_before_creating_anything(
    kt: Run, kubectl: Run, namespace: str
) -> None:
    apply(kubectl, service(namespace, "orders"))
    with socket.socket() as probe:  # a port nothing listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        before = snapshot(kubectl, namespace)
        result = kt("cli", "connect", "orders", "-n", namespace, "-p", f"{port}:80",
                    "--no-forward", "--no-wait-local", "--timeout", "5")
    one_line(result, 1, f"nothing answers on 127.0.0.1:{port}", "drop --no-wait-local")
    assert "record" not in result.stdout + result.stderr
    assert snapshot(kubectl, namespace) == before


@pytest.mark.usefixtures("installed")
def test_uninstall_of_a_namespace_with_nothing_installed_leaves_the_other_install(
    kt: Run, kubectl: Run
) -> None:
    result = kt("cli", "uninstall", "-n", "not-here")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "KubeTunnel is not installed in namespace not-here (it is installed in namespace "
        "kubetunnel: kubetunnel cli uninstall -n kubetunnel); nothing to remove."]
    assert kubectl("get", "crd", "kubetunnels.application.dcode.tech").returncode == 0
    assert kubectl("get", "clusterrole", "kubetunnel-operator").returncode == 0
