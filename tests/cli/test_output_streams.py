"""Human output on stdout, log events and errors on stderr, as kubectl keeps klog apart: with
``--log-format json`` (the default off a terminal) no JSON line lands among the progress lines."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from modes.sandbox.testing import RunningSandbox
from tests.cli.conftest import Run, apply, service

LOGGING = ("--log-format", "json", "--log-level", "debug")


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _separated(stdout: str, stderr: str) -> None:
    assert stdout.strip(), "no human output on stdout"
    assert not [line for line in stdout.splitlines() if _is_json(line)], stdout
    for line in stderr.splitlines():
        assert _is_json(line) or line.startswith("kubetunnel: error: "), line


@pytest.mark.usefixtures("installed")
def test_connect_progress_is_on_stdout_and_log_events_on_stderr(
    kt: Run, kubectl: Run, namespace: str
) -> None:
    apply(kubectl, service(namespace, "orders"))
    # No node in this sandbox: the tunnel pod never starts, so connect gives up after 1 s.
    result = kt("cli", *LOGGING, "connect", "orders", "-n", namespace, "-p", "8080:80",
                "--no-forward", "--timeout", "1")
    assert result.returncode == 1
    assert f"✓ record {namespace}/orders written" in result.stdout
    assert "waiting for the tunnel pod" in result.stdout
    assert "✓ disconnected" in result.stdout
    assert result.stderr.splitlines()[-1].startswith("kubetunnel: error: the tunnel pod was not "
                                                     "Ready after 1s")
    _separated(result.stdout, result.stderr)


def test_forward_table_is_on_stdout_and_log_events_on_stderr(
    sandbox: RunningSandbox, kubectl: Run, namespace: str, tmp_path: object
) -> None:
    import os
    from pathlib import Path

    apply(kubectl, service(namespace, "payments", ports=[{"name": "http", "port": 8080}]))
    out, err = Path(str(tmp_path)) / "out", Path(str(tmp_path)) / "err"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "modes", "cli", *LOGGING, "forward", "-n", namespace,
             "--no-hosts"], stdout=stdout, stderr=stderr,
            env={**os.environ, "KUBECONFIG": str(sandbox.kubeconfig)})
    try:
        deadline = time.monotonic() + 30
        while "Ctrl-C to stop" not in out.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"forward did not start: {out.read_text()} {err.read_text()}")
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(30)
    assert code == 0, err.read_text()
    assert f"payments.{namespace}" in out.read_text()
    assert err.read_text().strip(), "debug logging produced no events at all"
    _separated(out.read_text(), err.read_text())
