"""`cli forward` and the hosts file, as a user runs it: a clean exit restores it byte for byte,
through a symlink; a block left by a killed run is repaired and said so by default."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modes.sandbox.testing import RunningSandbox
from tests.cli.conftest import Run, apply


def _forward(sandbox: RunningSandbox, namespace: str, hosts: Path,
             log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "modes", "cli", "forward", "-n", namespace,
             "--hosts-file", str(hosts)],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(sandbox.kubeconfig)},
        )


def _wait_for(predicate: object, what: str, process: subprocess.Popen[bytes], log: Path,
              timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen: {log.read_text()}")
        time.sleep(0.05)


@pytest.fixture
def service(kubectl: Run, namespace: str) -> str:
    # Port above 1024: forward listens on it, and the tests need not run as root.
    apply(kubectl, {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "payments", "namespace": namespace},
        "spec": {"selector": {"app": "payments"}, "ports": [{"name": "http", "port": 8080}]},
    })
    return "payments"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
@pytest.mark.usefixtures("service")
def test_clean_exit_restores_a_symlinked_hosts_file_byte_for_byte(
    sandbox: RunningSandbox, namespace: str, tmp_path: Path, sig: signal.Signals
) -> None:
    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "hosts"
    content = b"127.0.0.1\tlocalhost\r\n# written by hand\n\n\n"
    target.write_bytes(content)
    target.chmod(0o604)
    link = tmp_path / "hosts"
    link.symlink_to(target)
    log = tmp_path / "forward.log"
    process = _forward(sandbox, namespace, link, log)
    try:
        _wait_for(lambda: b"payments." in target.read_bytes(), "hosts entries in the target",
                  process, log)
        assert link.is_symlink()
    finally:
        process.send_signal(sig)
        code = process.wait(30)
    assert code == 0, log.read_text()
    assert link.is_symlink()
    assert target.read_bytes() == content
    assert target.stat().st_mode & 0o777 == 0o604


@pytest.mark.usefixtures("service")
def test_a_repaired_block_is_said_by_default(
    sandbox: RunningSandbox, namespace: str, tmp_path: Path
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n# BEGIN kubetunnel killed pid={dead.pid}\n"
                     "127.77.0.9\told\n# END kubetunnel killed\n")
    log = tmp_path / "forward.log"
    process = _forward(sandbox, namespace, hosts, log)
    try:
        _wait_for(lambda: "old" not in hosts.read_text(), "the stale block's removal", process,
                  log)
        _wait_for(lambda: "hosts.repaired" in log.read_text(), "the hosts.repaired warning",
                  process, log)
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(30)
    assert code == 0, log.read_text()
    assert "killed" in log.read_text()
    assert hosts.read_text() == "127.0.0.1 localhost\n"


@pytest.mark.usefixtures("service")
def test_an_address_another_session_holds_is_skipped(
    sandbox: RunningSandbox, namespace: str, tmp_path: Path
) -> None:
    # Another session (with its own hosts file, or none) listens on the first address.
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with contextlib.suppress(OSError):  # already held by someone else: just as busy
        holder.bind(("127.77.0.1", 8080))
        holder.listen()
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    log = tmp_path / "forward.log"
    try:
        process = _forward(sandbox, namespace, hosts, log)
        try:
            _wait_for(lambda: "payments" in hosts.read_text(), "hosts entries", process, log)
            written = hosts.read_text()
        finally:
            process.send_signal(signal.SIGINT)
            code = process.wait(30)
    finally:
        holder.close()
    assert code == 0, log.read_text()
    assert "\n127.77.0.1\t" not in written
    assert f"\tpayments payments.{namespace} " in written
