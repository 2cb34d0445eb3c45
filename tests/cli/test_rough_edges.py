"""Bad input found by trying the CLI as a new user would: each is one line and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cli.conftest import Run, apply, snapshot


def _one_line(result: Any, code: int, *fragments: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def installed(kt: Run) -> None:
    result = kt("cli", "install", "--no-wait")
    assert result.returncode == 0, result.stderr


@pytest.mark.usefixtures("installed")
def test_two_ports_with_one_target_port_to_two_local_ports_is_refused(
    kt: Run, kubectl: Run, namespace: str
) -> None:
    apply(kubectl, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": namespace},
        "spec": {"selector": {"app": "a"}, "ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "admin", "port": 81, "targetPort": 8080}]},
    })
    before = snapshot(kubectl, namespace)
    result = kt("cli", "connect", "a", "-n", namespace, "--no-forward", "--timeout", "5",
                "-p", "19101:http", "-p", "19102:admin")
    _one_line(result, 2, f"ports http and admin of Service {namespace}/a both reach target "
                         "port 8080", "map them to the same local port")
    assert snapshot(kubectl, namespace) == before
