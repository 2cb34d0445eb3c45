"""Ctrl-C and SIGTERM while a relay through a forwarded address is open: a quiet exit 0 on both
event loops, the relay cancelled without a traceback, and the hosts file (a symlink ending in a
blank line) restored byte for byte."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Connect, LocalServer, Run, deploy_echo, wait_for
from tests.e2e.conftest import ask_here as ask

# Builtin control plane only so far (not yet run on the real one).
pytestmark = [pytest.mark.e2e,
              pytest.mark.parametrize("sandbox", ["builtin"], indirect=True)]

LOOPS = ["asyncio", "uvloop"]
SIGNALS = [signal.SIGINT, signal.SIGTERM]
LOGGING = ("--log-level", "debug", "--log-format", "json")


def _address(table: str, service: str, namespace: str) -> str | None:
    match = re.search(rf"^(127\.77\.\d+\.\d+)\s+{service}\.{namespace}\s", table, re.M)
    return match[1] if match else None


def _opened(stderr: str) -> int:
    """How many relays the process has opened (its debug event ``forward.open``)."""
    return stderr.count('"event": "forward.open"')


@contextlib.contextmanager
def _half_sent_request(address: str) -> Iterator[None]:
    """A connection whose request is not finished: its relay is open for as long as we like."""
    with socket.create_connection((address, 80), timeout=10) as held:
        held.sendall(b"GET / HTTP/1.1\r\nHost: payments\r\n")
        yield


def _quiet(stderr: str) -> None:
    for line in stderr.splitlines():
        event = json.loads(line) if line.startswith("{") else {"event": line, "level": "?"}
        assert event["level"] in ("debug", "info"), line
    for noise in ("Traceback", "Exception in callback", "CancelledError"):
        assert noise not in stderr, stderr


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_forward_stops_quietly_with_a_relay_open(
    kubectl: Run, namespace: str, env: dict[str, str], tmp_path: Path, loop: str,
    sig: signal.Signals,
) -> None:
    deploy_echo(kubectl, namespace, "payments", replicas=1)
    out, err = tmp_path / "forward.out", tmp_path / "forward.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "modes", "cli", *LOGGING, "forward", "-n", namespace,
             "--no-hosts", "--event-loop", loop], stdout=stdout, stderr=stderr, env=env)
    try:
        wait_for(lambda: _address(out.read_text(), "payments", namespace) is not None
                 or process.poll() is not None, 30, "the address table")
        address = _address(out.read_text(), "payments", namespace)
        assert address is not None, (out.read_text(), err.read_text())
        wait_for(lambda: ask(address, timeout=3).startswith("payments-"), 15,
                 "a request through the forwarded address")
        opened = _opened(err.read_text())
        with _half_sent_request(address):
            wait_for(lambda: _opened(err.read_text()) > opened, 15, "the held relay to open")
            process.send_signal(sig)
            code = process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0, err.read_text()
    _quiet(err.read_text())


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_connect_with_forward_stops_quietly_and_restores_the_hosts_file(
    kubectl: Run, namespace: str, connect: Callable[..., Connect],
    local_server: Callable[[str], LocalServer], tmp_path: Path, loop: str, sig: signal.Signals,
) -> None:
    deploy_echo(kubectl, namespace, "orders", replicas=1)
    deploy_echo(kubectl, namespace, "payments", replicas=1)
    local = local_server("orders")
    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "hosts"
    content = b"127.0.0.1 localhost\n# mine\n\n"
    target.write_bytes(content)
    hosts = tmp_path / "hosts"
    hosts.symlink_to(target)
    session = connect("orders", "-n", namespace, "-p", f"{local.port}:80", "--hosts-file",
                      str(hosts), "--event-loop", loop, *LOGGING)
    session.wait_line("traffic switched")
    line = next((line for line in target.read_text().splitlines()
                 if f" payments.{namespace} " in line), None)
    assert line is not None, target.read_text()
    address = line.split()[0]
    wait_for(lambda: ask(address, timeout=3).startswith("payments-"), 15,
             "a request through the forwarded address")
    opened = _opened(session.errors())
    with _half_sent_request(address):
        wait_for(lambda: _opened(session.errors()) > opened, 15, "the held relay to open")
        assert session.stop(sig) == 0, session.output()
    assert "restored" in session.output()
    _quiet(session.errors())
    assert hosts.is_symlink()
    assert target.read_bytes() == content
