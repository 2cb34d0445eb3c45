"""``kubetunnel cli policy render`` and ``apply`` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubetunnel.plugins import PolicyRequest
from kubetunnel.policies.cilium import CiliumPolicyRenderer
from kubetunnel.policies.networkpolicy import NetworkPolicyRenderer
from modes.main import main
from tests.policies.fake_apiserver import APPLY, FakeApiServer

NAMESPACE_ARGS = ["--app-namespace", "web", "--app-namespace", "shop"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the console entry point in-process, as the installed ``kubetunnel`` would."""
    code: object = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return (code if isinstance(code, int) else 1), out, err


def test_render_prints_one_yaml_document_per_object(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "cli", "policy", "render", *NAMESPACE_ARGS, "--allow-dns")
    assert (code, err) == (0, "")
    expected = NetworkPolicyRenderer().render(
        PolicyRequest("kubetunnel", ("web", "shop"), allow_dns=True)
    )
    assert list(yaml.safe_load_all(out)) == expected


def test_render_json_is_a_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "cli", "policy", "render", "--operator-namespace", "tools",
        "--app-namespace", "shop", "--renderer", "cilium", "--allow-namespace-egress",
        "-o", "json",
    )
    assert code == 0
    listing = json.loads(out)
    assert (listing["apiVersion"], listing["kind"]) == ("v1", "List")
    assert listing["items"] == CiliumPolicyRenderer().render(
        PolicyRequest("tools", ("shop",), allow_namespace_egress=True)
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Missing option '--app-namespace'"),
        (["--app-namespace", "Shop"], "invalid application namespace 'Shop'"),
        (["--app-namespace", "shop", "--operator-namespace", "x" * 64],
         "invalid operator namespace"),
        (["--app-namespace", "shop", "--renderer", "calico"],
         "unknown policy plugin 'calico' (installed: cilium, networkpolicy)"),
        (["--app-namespace", "shop", "-o", "toml"], "Invalid value for '-o'"),
    ],
)
@pytest.mark.parametrize("command", ["render", "apply"])
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], command: str, args: list[str], message: str
) -> None:
    if command == "apply" and "-o" in args:
        args = ["--app-namespace", "shop", "--context"]  # an option without its value
        message = "Option '--context' requires an argument"
    code, out, err = run(capsys, "cli", "policy", command, *args)
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("kubetunnel: error: ")
    assert message in err


def test_render_through_the_real_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modes", "cli", "policy", "render", "--app-namespace", "shop"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    kinds = [(o["kind"], o["metadata"]["name"]) for o in yaml.safe_load_all(result.stdout)]
    assert kinds == [
        ("NetworkPolicy", "kubetunnel-agent-egress"),
        ("NetworkPolicy", "kubetunnel-operator-ingress"),
    ]


def test_apply_is_server_side_and_idempotent(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with FakeApiServer() as api:
        args = ["cli", "policy", "apply", *NAMESPACE_ARGS, "--kubeconfig",
                str(api.kubeconfig(tmp_path))]
        first = run(capsys, *args)
        versions = {key: obj["metadata"]["resourceVersion"] for key, obj in api.objects.items()}
        second = run(capsys, *args)
    assert first == second
    code, out, err = first
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "NetworkPolicy shop/kubetunnel-agent-egress applied",
        "NetworkPolicy web/kubetunnel-agent-egress applied",
        "NetworkPolicy kubetunnel/kubetunnel-operator-ingress applied",
    ]
    patches = [r for r in api.requests if r.method == "PATCH"]
    assert len(patches) == 6
    expected = NetworkPolicyRenderer().render(PolicyRequest("kubetunnel", ("web", "shop")))
    assert [p.body for p in patches] == expected + expected
    for patch in patches:
        assert patch.content_type == APPLY
        assert patch.query == {"fieldManager": "kubetunnel", "force": "true"}
    assert patches[0].path == (
        "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/kubetunnel-agent-egress"
    )
    # The second run changed nothing on the server.
    assert {k: o["metadata"]["resourceVersion"] for k, o in api.objects.items()} == versions


def test_apply_refused_is_one_line_naming_the_object(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with FakeApiServer(forbidden_namespaces={"web"}) as api:
        code, out, err = run(capsys, "cli", "policy", "apply", *NAMESPACE_ARGS,
                             "--kubeconfig", str(api.kubeconfig(tmp_path)))
    assert code == 1
    assert out == "NetworkPolicy shop/kubetunnel-agent-egress applied\n"
    assert err.splitlines() == [
        "kubetunnel: error: cannot apply NetworkPolicy web/kubetunnel-agent-egress: "
        'networkpolicies "kubetunnel-agent-egress" is forbidden: User "dev" cannot patch '
        'resource "networkpolicies" in "web"'
    ]
    assert list(api.objects) == ["shop/kubetunnel-agent-egress"]


def test_apply_without_a_cluster_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "cli", "policy", "apply", "--app-namespace", "shop",
                       "--kubeconfig", str(tmp_path / "missing"))
    assert code == 1
    assert len(err.splitlines()) == 1
    assert "cannot load kubeconfig" in err
    with FakeApiServer() as api:
        kubeconfig = api.kubeconfig(tmp_path)
    # The server is gone now: the connection error is one line too.
    code, _, err = run(capsys, "cli", "policy", "apply", "--app-namespace", "shop",
                       "--kubeconfig", str(kubeconfig))
    assert code == 1
    assert len(err.splitlines()) == 1
    assert "cannot reach the Kubernetes API at http://127.0.0.1:" in err


def test_apply_cilium_where_cilium_is_absent_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with FakeApiServer() as api:
        code, _, err = run(capsys, "cli", "policy", "apply", "--app-namespace", "shop",
                           "--renderer", "cilium", "--kubeconfig", str(api.kubeconfig(tmp_path)))
    assert code == 1
    assert len(err.splitlines()) == 1
    assert err == (
        "kubetunnel: error: the cluster does not serve CiliumNetworkPolicy (cilium.io/v2); "
        "choose a --renderer for the network policy engine it runs\n"
    )
    assert not [r for r in api.requests if r.method == "PATCH"]
