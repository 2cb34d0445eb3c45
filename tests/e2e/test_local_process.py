"""``connect ... -- COMMAND`` on the sandbox: the process gets the pod's configuration, signals
reach it first, its exit ends the tunnel with its exit code, a process that never listens
times out, --mount files live as long as the session."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    HERE,
    Ask,
    Connect,
    Run,
    ask_here,
    deploy_echo,
    free_port,
    selector,
    tunnel_objects,
    wait_for,
)

# Builtin control plane only so far (not yet run on the real one).
pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("sandbox", ["builtin"], indirect=True)]

PASSWORD = "hunter2-e2e-s3cret"  # must never appear in a log line
SERVER = str(HERE / "env_server.py")


def deploy_orders(kubectl: Run, ns: str) -> str:
    """Service ``orders`` whose pods read a ConfigMap and a Secret; returns its ClusterIP."""
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app", "namespace": ns},
         "data": {"GREETING": "hello from the configmap", "greeting.txt": "hello from a file"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": ns},
         "data": {"password": base64.b64encode(PASSWORD.encode()).decode()}},
    ]
    for obj in objects:
        assert kubectl("apply", "-f", "-", stdin=json.dumps(obj)).returncode == 0
    ip = deploy_echo(kubectl, ns, "orders", replicas=1)
    patch = [{"op": "add", "path": "/spec/template/spec/containers/0/envFrom",
              "value": [{"configMapRef": {"name": "app"}}]},
             {"op": "add", "path": "/spec/template/spec/containers/0/env/-",
              "value": {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {
                  "name": "creds", "key": "password"}}}},
             {"op": "add", "path": "/spec/template/spec/containers/0/env/-",
              "value": {"name": "POD_IP", "valueFrom": {"fieldRef": {
                  "fieldPath": "status.podIP"}}}},
             {"op": "add", "path": "/spec/template/spec/containers/0/volumeMounts",
              "value": [{"name": "cfg", "mountPath": "/etc/app"},
                        {"name": "creds", "mountPath": "/var/run/creds"}]},
             {"op": "add", "path": "/spec/template/spec/volumes",
              "value": [{"name": "cfg", "configMap": {"name": "app"}},
                        {"name": "creds", "secret": {"secretName": "creds"}}]}]
    patched = kubectl("-n", ns, "patch", "deployment", "orders", "--type", "json", "-p",
                      json.dumps(patch))
    assert patched.returncode == 0, patched.stderr
    rollout = kubectl("-n", ns, "rollout", "status", "deployment/orders", "--timeout=30s")
    assert rollout.returncode == 0, rollout.stderr
    return ip


def child_pid(session: Connect) -> int:
    match = re.search(r"started .*? \(pid (\d+)\)", session.output(), re.S)
    assert match, session.output()
    return int(match.group(1))


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_command_gets_the_pods_environment_and_ctrl_c_goes_to_it_first(
    ask: Ask, kubectl: Run, namespace: str, connect: Callable[..., Connect], tmp_path: Path,
    env: dict[str, str],
) -> None:
    ip = deploy_orders(kubectl, namespace)
    before = selector(kubectl, namespace, "orders")
    port, marker = free_port(), tmp_path / "signal"
    session = connect("orders", "-n", namespace, "-p", f"{port}:80", "--no-forward",
                      "--log-level", "debug", "--env-file", str(tmp_path / "orders.env"),
                      "--", sys.executable, SERVER, str(port), "GREETING", str(marker))
    session.wait_line("traffic switched")
    wait_for(lambda: ask(ip) == "hello from the configmap", 5, "the local process answering")
    env_file = tmp_path / "orders.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    lines = env_file.read_text().splitlines()
    assert f"DB_PASSWORD='{PASSWORD}'" in lines
    pods = json.loads(kubectl("-n", namespace, "get", "pods", "-l", "app=orders", "-o",
                              "json").stdout)["items"]
    ips = [line for line in lines if line.startswith("POD_IP=")]
    assert len(ips) == 1
    assert ips[0] in {f"POD_IP='{p['status'].get('podIP')}'" for p in pods}  # a live pod's
    # While tunneled, the Service selects the tunnel pod: `cli env` still reads the app's pods.
    shown = subprocess.run([sys.executable, "-m", "modes", "cli", "env", "orders", "-n",
                            namespace, "-o", "json"], capture_output=True, text=True,
                           env=env, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["GREETING"] == "hello from the configmap"
    assert shown.stderr.startswith("# deployment/orders container echo (pod orders-")
    pid = child_pid(session)

    assert session.stop(signal.SIGINT) == 3, session.output()  # the process's exit code
    assert marker.read_text() == "SIGINT"  # it got the Ctrl-C...
    output = session.output()
    assert output.index("SIGINT passed to") < output.index("restored")  # ...before the tunnel
    assert gone(pid)
    assert selector(kubectl, namespace, "orders") == before
    assert tunnel_objects(kubectl, namespace) == []
    assert ask(ip).startswith("orders-")
    assert "DB_PASSWORD" in output  # the debug log names the variables...
    assert PASSWORD not in output  # ...never a Secret's value


def test_process_exiting_by_itself_ends_the_tunnel_with_its_code(
    ask: Ask, kubectl: Run, namespace: str, connect: Callable[..., Connect], tmp_path: Path,
) -> None:
    ip = deploy_orders(kubectl, namespace)
    before = selector(kubectl, namespace, "orders")
    port, root = free_port(), tmp_path / "root"
    session = connect("orders", "-n", namespace, "-p", f"{port}:80", "--no-forward",
                      "--mount", str(root), "--", sys.executable, SERVER, str(port),
                      "file:etc/app/greeting.txt", str(tmp_path / "signal"))
    session.wait_line("traffic switched")
    wait_for(lambda: ask(ip) == "hello from a file", 5, "the local process answering")
    secret_file = root / "var/run/creds/password"
    assert secret_file.read_text() == PASSWORD
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/exit?code=7", timeout=5) as answer:
        assert answer.read() == b"bye"
    assert session.process.wait(30) == 7, session.output()
    assert "exited with code 7" in session.output()
    assert not root.exists()  # removed on exit (no --keep-mount)
    assert selector(kubectl, namespace, "orders") == before
    assert tunnel_objects(kubectl, namespace) == []
    assert not (tmp_path / "signal").exists()


def test_process_that_never_listens_times_out_and_changes_nothing(
    kubectl: Run, namespace: str, connect: Callable[..., Connect], tmp_path: Path,
) -> None:
    deploy_orders(kubectl, namespace)
    before = selector(kubectl, namespace, "orders")
    port = free_port()
    session = connect("orders", "-n", namespace, "-p", f"{port}:80", "--no-forward",
                      "--start-timeout", "2", "--mount", str(tmp_path / "root"), "--keep-mount",
                      "--", sys.executable, "-c", "import time; time.sleep(600)")
    assert session.process.wait(60) == 1, session.output()
    assert (f"did not listen on 127.0.0.1:{port} within 2s; the Service was not switched"
            in session.output())
    assert gone(child_pid(session))
    assert "traffic switched" not in session.output()
    assert selector(kubectl, namespace, "orders") == before
    assert tunnel_objects(kubectl, namespace) == []
    assert (tmp_path / "root/etc/app/GREETING").read_text() == "hello from the configmap"


def test_forwarded_service_variables_point_at_local_addresses(
    ask: Ask, kubectl: Run, namespace: str, connect: Callable[..., Connect], tmp_path: Path,
) -> None:
    ip = deploy_orders(kubectl, namespace)
    deploy_echo(kubectl, namespace, "payments", replicas=1)
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    port = free_port()
    session = connect("orders", "-n", namespace, "-p", f"{port}:80", "--hosts-file",
                      str(hosts), "--", sys.executable, SERVER, str(port),
                      "PAYMENTS_SERVICE_HOST", str(tmp_path / "signal"))
    session.wait_line("traffic switched")
    address = ""

    def answered() -> bool:
        nonlocal address
        address = ask(ip)
        return address.startswith("127.77.")

    wait_for(answered, 5, "the local process answering with a forwarded address")
    # The variable works from this machine: it reaches the payments pods.
    assert ask_here(address).startswith("payments-")
    assert session.stop(signal.SIGTERM) == 3, session.output()


def test_missing_configmap_starts_nothing(
    kubectl: Run, namespace: str, connect: Callable[..., Connect], tmp_path: Path,
) -> None:
    deploy_orders(kubectl, namespace)
    assert kubectl("-n", namespace, "delete", "configmap", "app").returncode == 0
    before = selector(kubectl, namespace, "orders")
    marker = tmp_path / "started"
    session = connect("orders", "-n", namespace, "-p", f"{free_port()}:80", "--no-forward",
                      "--mount", str(tmp_path / "root"), "--", sys.executable, "-c",
                      f"open({str(marker)!r}, 'w')")
    assert session.process.wait(60) == 1, session.output()
    assert session.output().strip().splitlines()[-1] == (
        "kubetunnel: error: configmap \"app\" not found (envFrom of container 'echo')")
    assert not marker.exists()
    # Nothing but the test's own logs of the connect session (stdout and stderr).
    assert [p for p in tmp_path.iterdir() if not p.name.startswith("connect-")] == []
    assert tunnel_objects(kubectl, namespace) == []
    assert selector(kubectl, namespace, "orders") == before


STUBBORN = """
import signal, socket, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
server = socket.socket()
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
time.sleep(600)
"""


def test_process_ignoring_ctrl_c_is_stopped_by_the_third(
    kubectl: Run, namespace: str, connect: Callable[..., Connect],
) -> None:
    deploy_orders(kubectl, namespace)
    before = selector(kubectl, namespace, "orders")
    port = free_port()
    session = connect("orders", "-n", namespace, "-p", f"{port}:80", "--no-forward",
                      "--", sys.executable, "-c", STUBBORN, str(port))
    session.wait_line("traffic switched")
    pid = child_pid(session)
    for count in (1, 2):
        session.process.send_signal(signal.SIGINT)
        wait_for(lambda n=count: session.output().count("SIGINT passed to") == n, 10,
                 f"Ctrl-C number {count} passed on")
    assert session.process.poll() is None  # ignored: the tunnel stays
    # The third ends the tunnel and the process (SIGTERM, which it does not ignore).
    assert session.stop(signal.SIGINT) == 128 + signal.SIGTERM, session.output()
    assert gone(pid)
    assert session.output().count("SIGINT passed to") == 2
    assert selector(kubectl, namespace, "orders") == before
    assert tunnel_objects(kubectl, namespace) == []
