"""`cli install` into a namespace that is still terminating: it waits with a live line until the
namespace is gone and creates it again, or says after --timeout what holds it.

A finalizer of the test's own keeps the namespace Terminating for as long as the test wants."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from modes.sandbox.testing import RunningSandbox
from tests.cli.conftest import Run

HOLD = "kubetunnel.dev/test-hold"


def _namespace(kubectl: Run, name: str) -> dict[str, object] | None:
    out = kubectl("get", "namespace", name, "-o", "json")
    return json.loads(out.stdout) if out.returncode == 0 else None


def _release(kubectl: Run, name: str) -> None:
    kubectl("patch", "namespace", name, "--type=merge", "-p",
            json.dumps({"metadata": {"finalizers": None}}))


@pytest.fixture
def terminating(kubectl: Run) -> Iterator[str]:
    name = f"kt-{uuid.uuid4().hex[:8]}"
    created = kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "finalizers": [HOLD]}}))
    assert created.returncode == 0, created.stderr
    deleted = kubectl("delete", "namespace", name, "--wait=false")
    assert deleted.returncode == 0, deleted.stderr
    current = _namespace(kubectl, name)
    assert current is not None
    assert current["metadata"]["deletionTimestamp"]  # type: ignore[index]
    try:
        yield name
    finally:
        _release(kubectl, name)
        kubectl("delete", "namespace", name, "--wait=false")


def test_install_waits_for_a_terminating_namespace_then_creates_it(
    sandbox: RunningSandbox, kubectl: Run, terminating: str, tmp_path: Path
) -> None:
    out = tmp_path / "install.out"
    with out.open("w") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "modes", "cli", "install", "-n", terminating, "--no-wait",
             "--timeout", "60"], stdout=stdout, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "KUBECONFIG": str(sandbox.kubeconfig)})
    try:
        deadline = time.monotonic() + 30
        while f"namespace {terminating} is terminating; waiting" not in out.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no progress line: {out.read_text()}")
            time.sleep(0.05)
        assert f"(finalizers: {HOLD}" in out.read_text()
        _release(kubectl, terminating)
        _, stderr = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    text = out.read_text()
    assert f"✓ namespace {terminating} finished terminating" in text
    assert f"namespace/{terminating} created" in text
    current = _namespace(kubectl, terminating)
    assert current is not None
    assert not current["metadata"].get("deletionTimestamp")  # type: ignore[attr-defined]
    deployment = kubectl("-n", terminating, "get", "deployment", "kubetunnel-operator")
    assert deployment.returncode == 0, deployment.stderr


def test_install_into_a_namespace_that_stays_terminating_gives_up_in_one_line(
    kt: Run, kubectl: Run, terminating: str
) -> None:
    result = kt("cli", "install", "-n", terminating, "--no-wait", "--timeout", "1")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    # The namespace controller may or may not have removed its own finalizer ("kubernetes") yet.
    assert re.fullmatch(
        f"kubetunnel: error: namespace {terminating} is still terminating after 1s \\(finalizers: "
        f"{re.escape(HOLD)}(, kubernetes)?\\); install again once 'kubectl get namespace "
        f"{terminating}' says NotFound, or install into another namespace with -n", lines[0]
    ), lines[0]
    assert kubectl("-n", terminating, "get", "serviceaccount", "kubetunnel-operator"
                   ).returncode != 0
