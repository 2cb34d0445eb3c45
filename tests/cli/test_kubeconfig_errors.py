"""A kubeconfig that cannot be used, or a cluster that does not answer: one line that says what
is wrong, in kubectl's terms, and what to do; never a Python error or an object's repr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GOOD = {
    "apiVersion": "v1", "kind": "Config",
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
    "current-context": "x",
}

COMMANDS = {
    "status": ("cli", "status"),
    "connect": ("cli", "connect", "orders", "-p", "8080:80", "--no-forward"),
    "forward": ("cli", "forward", "--no-hosts"),
    "install": ("cli", "install", "--no-wait"),
}


def _run(args: tuple[str, ...], home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",
                                                                "KUBERNETES_SERVICE_HOST")}
    return subprocess.run([sys.executable, "-m", "modes", *args], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**clean, "HOME": str(home), **env})


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("kubetunnel: error: "), line
    for leak in ("object at 0x", "object does not support", "Traceback", "Error:",
                 "No configuration found"):
        assert leak not in line, line
    return line


@pytest.mark.parametrize(("content", "fragments"), [
    ("clusters: [\n  {name: c\n", ("not valid YAML (line 3:",)),
    ("just a sentence\n", ("not a kubeconfig (it holds a string",)),
    ("- a\n- b\n", ("not a kubeconfig (it holds a list",)),
    ("clusters: oops\n", ("clusters must be a list of named entries, not a string",)),
    (json.dumps({**GOOD, "current-context": ""}),
     ("has no current context", "kubectl config use-context NAME", "(it has: x)")),
    (json.dumps({k: v for k, v in GOOD.items() if k != "current-context"}),
     ("has no current context",)),
    (json.dumps({**GOOD, "current-context": "gone"}),
     ("the current context 'gone'", "does not exist (it has: x)")),
    ("", ("has no current context", "(it has: none)")),
], ids=["yaml", "string", "list", "clusters", "empty-current", "no-current", "gone-current",
        "empty-file"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_kubeconfig_that_cannot_be_used_is_one_line(
    tmp_path: Path, command: str, content: str, fragments: tuple[str, ...]
) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(content)
    line = _error_line(_run((*COMMANDS[command], "--kubeconfig", str(config)), tmp_path))
    assert str(config) in line
    for fragment in fragments:
        assert fragment in line, line


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_missing_kubeconfig_says_file_not_found_and_where_it_looked(
    tmp_path: Path, command: str
) -> None:
    missing = tmp_path / "nope" / "config"
    line = _error_line(_run((*COMMANDS[command], "--kubeconfig", str(missing)), tmp_path))
    assert f"cannot load kubeconfig {missing}: file not found" in line
    line = _error_line(_run(COMMANDS[command], tmp_path, KUBECONFIG=str(missing)))
    assert f"cannot load kubeconfig {missing}: file not found (KUBECONFIG)" in line
    assert "pass --kubeconfig PATH or set KUBECONFIG" in line
    line = _error_line(_run(COMMANDS[command], tmp_path))  # HOME has no .kube/config
    assert "cannot load kubeconfig ~/.kube/config: file not found (the default location)" in line


def test_missing_files_in_a_kubeconfig_list_are_skipped_as_kubectl_skips_them(
    tmp_path: Path
) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps(GOOD))
    listed = os.pathsep.join([str(tmp_path / "absent"), str(config)])
    line = _error_line(_run(COMMANDS["status"], tmp_path, KUBECONFIG=listed))
    assert "cannot reach the Kubernetes API at https://127.0.0.1:1: connection refused" in line


def test_an_unknown_context_lists_the_ones_there_are(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps(GOOD))
    line = _error_line(_run((*COMMANDS["status"], "--kubeconfig", str(config), "--context",
                             "prod"), tmp_path))
    assert f"context 'prod' not found in kubeconfig {config} (it has: x)" in line


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unreachable_api_server_is_connection_refused(tmp_path: Path, command: str) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps(GOOD))
    line = _error_line(_run((*COMMANDS[command], "--kubeconfig", str(config)), tmp_path))
    assert ("cannot reach the Kubernetes API at https://127.0.0.1:1: connection refused; is the "
            "cluster running, and is this the right context? (kubectl cluster-info)") in line
