"""CLI tests drive `python -m modes cli ...` as a user would, against one sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modes.sandbox.testing import RunningSandbox, running_sandbox

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    # API server only: these tests are about what the CLI itself writes, so no operator pod may
    # reconcile (and change) the objects they compare.
    with running_sandbox(tmp_path_factory.mktemp("sandbox"), extra_args=("--no-node",)) as running:
        yield running


@pytest.fixture
def kt(sandbox: RunningSandbox) -> Run:
    """Run the CLI with the sandbox's kubeconfig in KUBECONFIG."""

    def run(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "modes", *args], capture_output=True, text=True,
            timeout=timeout, env={**os.environ, "KUBECONFIG": str(sandbox.kubeconfig), **env},
            check=False,
        )

    return run


@pytest.fixture
def kubectl(sandbox: RunningSandbox) -> Run:
    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(sandbox.kubeconfig), *args], input=stdin,
            capture_output=True, text=True, timeout=60, check=False,
        )

    return run


@pytest.fixture
def namespace(kubectl: Run) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    created = kubectl("apply", "-f", "-", stdin=json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
    assert created.returncode == 0, created.stderr
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
def installed(kt: Run) -> None:
    """The operator's objects written (no pod runs them: this sandbox has no node)."""
    result = kt("cli", "install", "--no-wait")
    assert result.returncode == 0, result.stderr


def service(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    """A Service selecting ``app: name`` with one port, http 80, unless ``spec`` says else."""
    body = {"selector": {"app": name}, "ports": [{"name": "http", "port": 80}]}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}


def one_line(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """The exit code, and one line on stderr holding every fragment; returns that line."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def apply(kubectl: Run, *objects: dict[str, Any]) -> None:
    """kubectl apply of the objects as one v1 List, as one would from a file."""
    listing = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    result = kubectl("apply", "-f", "-", stdin=json.dumps(listing))
    assert result.returncode == 0, result.stderr


def snapshot(kubectl: Run, namespace: str) -> str:
    """Everything a test could have changed in a namespace, minus what changes by itself."""
    kinds = "services,deployments,secrets,serviceaccounts,configmaps,kubetunnels"
    out = kubectl("get", kinds, "-n", namespace, "-o", "json")
    assert out.returncode == 0, out.stderr
    items = json.loads(out.stdout)["items"]
    return json.dumps(sorted(
        (i["kind"], i["metadata"]["name"], i["metadata"]["resourceVersion"]) for i in items))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
