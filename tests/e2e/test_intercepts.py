"""Issue 14 on the sandbox: several developers on one Service, each getting only their requests.

Every request is sent from inside the cluster's network to the Service's ClusterIP over ONE
kept-alive connection that carries requests for different developers one after another.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from modes.sandbox.testing import RunningSandbox, cluster_socket
from tests.e2e.conftest import (
    Ask,
    Connect,
    LocalServer,
    Run,
    deploy_echo,
    free_port,
    selector,
    tunnel_objects,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


class KeepAlive:
    """One HTTP/1.1 connection as a pod would open it; fails if the agent closes it."""

    def __init__(self, sandbox: RunningSandbox, ip: str) -> None:
        self.connection = http.client.HTTPConnection(ip, 80, timeout=5)
        self.connection.sock = cluster_socket(sandbox, ip, 80, 5)
        self.sock = self.connection.sock

    def get(self, dev: str | None, path: str = "/") -> tuple[int, str]:
        headers = {"x-dev": dev} if dev is not None else {}
        self.connection.request("GET", path, headers=headers)
        response = self.connection.getresponse()
        body = response.read().decode()
        assert self.connection.sock is self.sock, "the connection was not kept alive"
        return response.status, body

    def close(self) -> None:
        self.connection.close()


def who(answer: tuple[int, str]) -> str:
    """``alice`` for ``local:alice``, ``cluster`` for an echo pod's answer."""
    status, body = answer
    assert status == 200, answer
    return body.removeprefix("local:") if body.startswith("local:") else "cluster"


def records(kubectl: Run, namespace: str) -> list[dict[str, object]]:
    out = kubectl("-n", namespace, "get", "kubetunnels", "-o", "json")
    return list(json.loads(out.stdout or '{"items": []}')["items"])


def intercept(connect: Callable[..., Connect], namespace: str, local: LocalServer,
              *options: str) -> Connect:
    session = connect("orders", "-n", namespace, "-p", f"{local.port}:80", "--no-forward",
                      *options)
    session.wait_line("traffic switched", timeout=90)
    return session


def test_three_developers_keep_alive_failback_and_last_ctrl_c(
    kubectl: Run, namespace: str, connect: Callable[..., Connect], ask: Ask,
    sandbox: RunningSandbox, local_server: Callable[..., LocalServer],
) -> None:
    ip = deploy_echo(kubectl, namespace, "orders")
    before = selector(kubectl, namespace, "orders")
    devs = {name: local_server(name, "http/1.1") for name in ("alice", "bob", "carol")}
    alice = intercept(connect, namespace, devs["alice"], "--header", "x-dev=alice")
    bob = intercept(connect, namespace, devs["bob"], "--header", "x-dev~bob|robert")
    wanted = ["alice", "bob", None, "alice", None, "bob", "bob"]
    client = KeepAlive(sandbox, ip)
    try:
        assert [who(client.get(d)) for d in wanted] == [
            "alice", "bob", "cluster", "alice", "cluster", "bob", "bob"]
        carol = intercept(connect, namespace, devs["carol"], "--header", "x-dev=carol")
        wanted = ["carol", "alice", None, "bob", "carol", "nobody"] * 3
        expected = [d if d in devs else "cluster" for d in wanted]
        assert [who(client.get(d)) for d in wanted] == expected

        # Bob's process stops: his requests go to the cluster, the others' stay theirs.
        devs["bob"].stop()
        wait_for(lambda: who(client.get("bob")) == "cluster", 2, "bob's failback")
        assert [who(client.get(d)) for d in ("alice", "bob", "carol", None)] == [
            "alice", "cluster", "carol", "cluster"]
        bob.wait_line("traffic goes back to the cluster")
        devs["bob"].start()
        wait_for(lambda: who(client.get("bob")) == "bob", 5, "bob's requests coming back")
        assert [who(client.get(d)) for d in ("alice", "bob", "carol", None)] == [
            "alice", "bob", "carol", "cluster"]
        bob.wait_line("requests routed here")

        # Ending two intercepts keeps the third (and the shared agent) working.
        assert alice.stop(signal.SIGINT) == 0, alice.output()
        assert carol.stop(signal.SIGINT) == 0, carol.output()
        assert [who(client.get(d)) for d in ("alice", "bob", "carol")] == [
            "cluster", "bob", "cluster"]
    finally:
        client.close()
    # The last one restores the Service and takes the shared agent and its objects along.
    assert bob.stop(signal.SIGINT) == 0, bob.output()
    assert "restored" in bob.output()
    assert selector(kubectl, namespace, "orders") == before
    wait_for(lambda: tunnel_objects(kubectl, namespace) == [], 30, "shared objects removed",
             interval=0.5, details=lambda: "\n".join(tunnel_objects(kubectl, namespace)))
    assert ask(ip).startswith("orders-")


def test_killed_cli_removes_only_its_intercept(
    kubectl: Run, namespace: str, connect: Callable[..., Connect],
    sandbox: RunningSandbox, local_server: Callable[..., LocalServer],
) -> None:
    ip = deploy_echo(kubectl, namespace, "orders", replicas=1)
    alice_local = local_server("alice", "http/1.1")
    bob_local = local_server("bob", "http/1.1")
    alice = intercept(connect, namespace, alice_local, "--header", "x-dev=alice",
                      "--lease-ttl", "5")
    bob = intercept(connect, namespace, bob_local, "--header", "x-dev=bob")
    client = KeepAlive(sandbox, ip)
    try:
        assert [who(client.get(d)) for d in ("alice", "bob")] == ["alice", "bob"]
        alice.stop(signal.SIGKILL)
        # Its tunnel drops with the process: its requests go to the cluster at once...
        wait_for(lambda: who(client.get("alice")) == "cluster", 2, "alice's failback")
        # ...and its record goes once its lease expires; bob's intercept stays.
        wait_for(lambda: len(records(kubectl, namespace)) == 1, 30, "alice's record removed",
                 interval=0.5)
        assert [who(client.get(d)) for d in ("alice", "bob", None)] == [
            "cluster", "bob", "cluster"]
        assert selector(kubectl, namespace, "orders")["selector"] == {
            "we-dcode-app": "kubetunnel", "kubetunnel.dev/tunnel": "orders.shared"}
    finally:
        client.close()
    assert bob.process.poll() is None, bob.output()
    assert bob.stop(signal.SIGINT) == 0, bob.output()


def test_plain_connect_refused_while_filtered_and_the_reverse(
    kubectl: Run, namespace: str, connect: Callable[..., Connect],
    local_server: Callable[..., LocalServer],
) -> None:
    deploy_echo(kubectl, namespace, "orders", replicas=1)
    local = local_server("alice", "http/1.1")
    alice = intercept(connect, namespace, local, "--header", "x-dev=alice")
    plain = connect("orders", "-n", namespace, "-p", f"{local.port}:80", "--no-forward")
    assert plain.process.wait(60) != 0
    assert "has filtered or mirrored intercepts by" in plain.output()
    assert "(filtered: x-dev=alice)" in plain.output()
    assert "Traceback" not in plain.output()
    assert alice.stop(signal.SIGINT) == 0, alice.output()
    wait_for(lambda: tunnel_objects(kubectl, namespace) == [], 30, "shared objects removed",
             interval=0.5)

    holder = connect("orders", "-n", namespace, "-p", f"{local.port}:80", "--no-forward")
    holder.wait_line("traffic switched", timeout=90)
    filtered = connect("orders", "-n", namespace, "-p", f"{local.port}:80", "--no-forward",
                       "--header", "x-dev=bob")
    assert filtered.process.wait(60) != 0
    assert "is already tunneled by" in filtered.output()
    assert "Traceback" not in filtered.output()
    assert [r["spec"]["mode"] for r in records(kubectl, namespace)  # type: ignore[index]
            ] == ["exclusive"]
    assert holder.stop(signal.SIGINT) == 0, holder.output()


def test_status_lists_intercepts_with_requests_and_overlaps(
    kubectl: Run, namespace: str, connect: Callable[..., Connect], env: dict[str, str],
    sandbox: RunningSandbox, local_server: Callable[..., LocalServer],
) -> None:
    ip = deploy_echo(kubectl, namespace, "orders", replicas=1)
    alice = intercept(connect, namespace, local_server("alice", "http/1.1"),
                      "--header", "x-dev=alice")
    anyone = intercept(connect, namespace, local_server("anyone", "http/1.1"),
                       "--header", "x-dev~.*", "--path-prefix", "/api/")
    assert "overlaps" in anyone.output()  # warned at start: alice's requests to /api/ stay hers
    client = KeepAlive(sandbox, ip)
    try:
        assert [who(client.get(d, p)) for d, p in (("alice", "/api/x"), ("bob", "/api/x"),
                                                    ("bob", "/other"), ("alice", "/"))] == [
            "alice", "anyone", "cluster", "alice"]
    finally:
        client.close()

    def status() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "modes", "cli", "status", "-n", namespace],
                              capture_output=True, text=True, env=env, timeout=60, check=False)

    def rows(shown: subprocess.CompletedProcess[str]) -> tuple[list[str], list[str]]:
        lines = shown.stdout.splitlines()
        alice_row = next((line.split() for line in lines if "x-dev=alice" in line), [])
        anyone_row = next((line.split() for line in lines if "x-dev~.*," in line), [])
        return alice_row, anyone_row

    # The agent reports each intercept's counters about once a second.
    shown = status()
    deadline = time.monotonic() + 15
    while [row[6:7] for row in rows(shown)] != [["2"], ["1"]]:
        assert time.monotonic() < deadline, shown.stdout + shown.stderr
        time.sleep(0.2)
        shown = status()
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].split()[:7] == [
        "NAMESPACE", "SERVICE", "CLIENT", "MODE", "CONNECTED", "SINCE", "REQUESTS"]
    alice_row, anyone_row = rows(shown)
    assert alice_row[3:5] == ["filtered", "yes"]
    assert anyone_row[-3:] == ["x-dev~.*,", "path", "/api/*"]
    assert "overlap" in shown.stderr
    assert "first made wins" in shown.stderr
    assert anyone.stop(signal.SIGINT) == 0, anyone.output()
    assert alice.stop(signal.SIGINT) == 0, alice.output()


@pytest.mark.parametrize("trouble", ["slow", "dead", "500"])
def test_mirror_leaves_cluster_answers_unchanged(
    kubectl: Run, namespace: str, connect: Callable[..., Connect], env: dict[str, str],
    sandbox: RunningSandbox, local_server: Callable[..., LocalServer], trouble: str,
    tmp_path: Path,
) -> None:
    ip = deploy_echo(kubectl, namespace, "orders", replicas=1)
    local = local_server("mirror", "http/1.1")
    session = intercept(connect, namespace, local, "--mirror")
    client = KeepAlive(sandbox, ip)
    try:
        assert who(client.get("x")) == "cluster"
        wait_for(lambda: "copies 1," in session.output(), 10, "the copy reaching the laptop",
                 details=session.output)
        if trouble == "dead":
            local.stop()
        paths = {"slow": f"/slow?seconds=3&mark={tmp_path / 'mark'}", "dead": "/",
                 "500": "/status/500"}
        for _ in range(20):
            status, body = client.get("x", paths[trouble])
            assert status == 200, body  # the cluster's answer, whatever the copy got
            assert body.startswith("orders-"), body
    finally:
        client.close()
    if trouble == "slow":  # the copies do arrive (batched, a few ms late), and are waited for
        wait_for((tmp_path / "mark").exists, 10, "a copy reaching the slow local process",
                 details=session.output)
    assert session.stop(signal.SIGINT) == 0, session.output()


def test_h2c_streams_routed_by_metadata_header(
    kubectl: Run, namespace: str, connect: Callable[..., Connect], sandbox: RunningSandbox,
) -> None:
    """gRPC's way: one HTTP/2 connection, each stream routed by its own metadata. (The echo pods
    speak HTTP/1.1 only, so every stream here matches a developer.)"""
    ip = deploy_echo(kubectl, namespace, "orders", replicas=1)
    servers, sessions = {}, []
    try:
        for name in ("alice", "bob"):
            port = free_port()
            servers[name] = subprocess.Popen(
                [sys.executable, str(Path(__file__).parent / "h2c_server.py"), str(port), name])
            wait_for(partial(_h2c_up, port, name), 10, "the local h2c server", interval=0.2)
            sessions.append(connect("orders", "-n", namespace, "-p", f"{port}:80",
                                    "--no-forward", "--header", f"x-dev={name}"))
        for session in sessions:
            session.wait_line("traffic switched", timeout=90)
        devs = ["alice", "bob", "bob", "alice", "bob"]
        answers = _h2c(cluster_socket(sandbox, ip, 80, 5), devs)
        assert answers == [f"h2c:{d}" for d in devs]
        for session in sessions:
            assert session.stop(signal.SIGINT) == 0, session.output()
    finally:
        for server in servers.values():
            server.kill()
            server.wait()


def _h2c_up(port: int, name: str) -> bool:
    try:
        return _h2c(socket.create_connection(("127.0.0.1", port), 5), [None]) == [f"h2c:{name}"]
    except OSError:
        return False


def _h2c(sock: socket.socket, devs: list[str | None]) -> list[str]:
    """One h2c connection, one stream per entry (all open at once), their bodies in order."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sids = []
    for dev in devs:
        sid = conn.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"), (":authority", "orders"),
                   (":path", "/orders.Orders/Get"), ("content-type", "application/grpc")]
        conn.send_headers(sid, headers + ([("x-dev", dev)] if dev else []))
        conn.send_data(sid, b"\x00\x00\x00\x00\x00", end_stream=True)
        sids.append(sid)
    bodies: dict[int, bytes] = dict.fromkeys(sids, b"")
    ended: set[int] = set()
    with sock:
        sock.settimeout(10)
        sock.sendall(conn.data_to_send())
        while ended != set(sids):
            data = sock.recv(65536)
            assert data, "the connection closed"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    ended.add(event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    raise AssertionError(f"stream {event.stream_id} reset")
            sock.sendall(conn.data_to_send())
    return [bodies[sid].decode() for sid in sids]
