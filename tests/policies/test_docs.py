"""docs/network.md stays true: its rendered examples are what the commands print today, and its
hand-written example policy is valid and does what the text says.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modes.main import main
from tests.policies.evaluator import Cluster, Pod

DOC = Path(__file__).resolve().parents[2] / "docs" / "network.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)


def sessions() -> list[tuple[str, str]]:
    """(command, expected stdout) for every ``$ kubetunnel ...`` line of a console block."""
    found = []
    for block in blocks("console"):
        parts = re.split(r"^\$ (.*)\n", block, flags=re.M)
        assert parts[0] == "", f"console block must start with a command: {block[:60]!r}"
        found += list(zip(parts[1::2], parts[2::2], strict=True))
    return found


def test_the_doc_has_examples() -> None:
    assert len(sessions()) >= 2
    assert len(blocks("yaml")) >= 1


@pytest.mark.parametrize(("command", "expected"), sessions(), ids=[c for c, _ in sessions()])
def test_console_examples_match_the_command(
    capsys: pytest.CaptureFixture[str], command: str, expected: str
) -> None:
    argv = shlex.split(command)
    assert argv[0] == "kubetunnel"
    code: object = 0
    try:
        main(argv[1:])
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert out == expected, "regenerate the example in docs/network.md by running the command"


def example_policy() -> dict[str, Any]:
    (text,) = blocks("yaml")
    policy: dict[str, Any] = yaml.safe_load(text)
    return policy


def test_the_default_deny_example_is_valid_and_admits_clients_to_the_tunnel_pod() -> None:
    policy = example_policy()
    kubernetes_validate.validate(policy, "1.37.0", strict=True)
    default_deny = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny", "namespace": "shop"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    frontend = Pod("shop", {"role": "frontend"})
    tunnel = Pod("shop", {"we-dcode-app": "kubetunnel", "kubetunnel.dev/tunnel": "orders"})
    assert not Cluster([default_deny]).allows(frontend, tunnel, 8080)
    cluster = Cluster([default_deny, policy])
    assert cluster.allows(frontend, tunnel, 8080)
    assert not cluster.allows(frontend, tunnel, 7000)
    assert not cluster.allows(Pod("shop", {"role": "batch"}), tunnel, 8080)
