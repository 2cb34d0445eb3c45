"""Ctrl-C under load: the Service is restored first, the request in flight completes, then the
tunnel closes."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from modes.sandbox.testing import RunningSandbox, cluster_get
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

pytestmark = pytest.mark.e2e


def test_request_in_flight_at_ctrl_c_completes(
    kubectl: Run, namespace: str, connect: Callable[..., Connect],
    local_server: Callable[[str], LocalServer], tmp_path: Path, ask: Ask,
    sandbox: RunningSandbox,
) -> None:
    ip = deploy_echo(kubectl, namespace, "orders")
    before = selector(kubectl, namespace, "orders")
    local = local_server("orders")
    session = connect("orders", "-n", namespace, "-p", f"{local.port}:80", "--no-forward")
    session.wait_line("traffic switched")
    wait_for(lambda: ask(ip) == "local:orders", 2, "requests reaching the local server")

    mark = tmp_path / "arrived"
    answers: list[str] = []

    def slow() -> None:
        try:
            status, body = cluster_get(sandbox, ip, 80, f"/slow?seconds=2&mark={mark}",
                                       timeout=20)
            answers.append(body if status == 200 else f"error:HTTP{status}")
        except OSError as exc:
            answers.append(f"error:{exc}")

    thread = threading.Thread(target=slow)
    thread.start()
    wait_for(mark.exists, 10, "the slow request reaching the local server")
    session.process.send_signal(signal.SIGINT)
    # While it drains, new requests are answered by the cluster's pods.
    wait_for(lambda: ask(ip).startswith("orders-"), 5, "new requests going to the cluster")
    thread.join(20)
    assert answers == ["local:orders"], session.output()
    assert session.stop(signal.SIGINT, timeout=30) == 0, session.output()
    assert selector(kubectl, namespace, "orders") == before
    assert tunnel_objects(kubectl, namespace) == []
