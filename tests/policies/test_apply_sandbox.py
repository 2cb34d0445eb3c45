"""``policy apply`` against the sandbox API server: server-side apply, idempotent, converging.

The objects are read back with the official client, a third party to both our CLI and the
sandbox, so the test sees what any other tool would see.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from kubetunnel.plugins import PolicyRequest
from kubetunnel.policies import EGRESS_POLICY_NAME, INGRESS_POLICY_NAME
from kubetunnel.policies.networkpolicy import NetworkPolicyRenderer
from modes.main import main
from modes.sandbox.testing import CONTROL_PLANES, RunningSandbox, running_sandbox

# The first test also starts the sandbox (the real control plane takes a while).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture(scope="module", params=CONTROL_PLANES)
def sandbox(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    with running_sandbox(tmp_path_factory.mktemp("policy-sandbox"),
                         control_plane=request.param) as running:
        api = config.new_client_from_config(config_file=str(running.kubeconfig))
        try:
            core = client.CoreV1Api(api)
            for namespace in ("kubetunnel", "shop", "web", "blog"):
                core.create_namespace({"metadata": {"name": namespace}})
        finally:
            api.close()
        yield running


@pytest.fixture
def read(sandbox: RunningSandbox) -> Iterator[Any]:
    api = config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    networking = client.NetworkingV1Api(api)

    def read(namespace: str, name: str) -> dict[str, Any]:
        obj = networking.read_namespaced_network_policy(name, namespace)
        data: dict[str, Any] = api.sanitize_for_serialization(obj)
        return data

    yield read
    api.close()


def apply(
    capsys: pytest.CaptureFixture[str], kubeconfig: Path, *args: str
) -> tuple[int, str, str]:
    code: object = 0
    try:
        main(["cli", "policy", "apply", "--kubeconfig", str(kubeconfig), *args])
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return (code if isinstance(code, int) else 1), out, err


def versions(read: Any, *keys: tuple[str, str]) -> dict[tuple[str, str], tuple[str, int]]:
    found = {}
    for key in keys:
        meta = read(*key)["metadata"]
        found[key] = (meta["resourceVersion"], meta["generation"])
    return found


EGRESS_SHOP = ("shop", EGRESS_POLICY_NAME)
EGRESS_WEB = ("web", EGRESS_POLICY_NAME)
EGRESS_BLOG = ("blog", EGRESS_POLICY_NAME)
INGRESS = ("kubetunnel", INGRESS_POLICY_NAME)


def test_apply_twice_changes_nothing_the_second_time(
    sandbox: RunningSandbox, read: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--app-namespace", "shop", "--app-namespace", "web")
    assert apply(capsys, sandbox.kubeconfig, *args)[::2] == (0, "")
    rendered = NetworkPolicyRenderer().render(PolicyRequest("kubetunnel", ("shop", "web")))
    for obj in rendered:
        live = read(obj["metadata"]["namespace"], obj["metadata"]["name"])
        assert live["spec"] == obj["spec"]
        assert live["metadata"]["labels"] == obj["metadata"]["labels"]
        managers = {(m["manager"], m["operation"]) for m in live["metadata"]["managedFields"]}
        assert managers == {("kubetunnel", "Apply")}
    before = versions(read, EGRESS_SHOP, EGRESS_WEB, INGRESS)
    assert apply(capsys, sandbox.kubeconfig, *args)[::2] == (0, "")
    assert versions(read, EGRESS_SHOP, EGRESS_WEB, INGRESS) == before


def test_apply_converges_when_the_request_changes(
    sandbox: RunningSandbox, read: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ("--app-namespace", "shop", "--app-namespace", "web")
    assert apply(capsys, sandbox.kubeconfig, *base)[0] == 0
    before = versions(read, EGRESS_SHOP, EGRESS_WEB, INGRESS)

    # A new namespace: its egress policy appears, the ingress policy is updated in place.
    assert apply(capsys, sandbox.kubeconfig, *base, "--app-namespace", "blog")[0] == 0
    ingress = read(*INGRESS)
    assert ingress["metadata"]["generation"] == before[INGRESS][1] + 1
    peers = ingress["spec"]["ingress"][0]["from"]
    assert [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for p in peers] == ["blog", "shop", "web"]
    assert read(*EGRESS_BLOG)["metadata"]["generation"] == 1
    assert versions(read, EGRESS_SHOP, EGRESS_WEB) == {
        k: before[k] for k in (EGRESS_SHOP, EGRESS_WEB)
    }

    # A rule added by a flag goes away again when the flag is dropped.
    assert apply(capsys, sandbox.kubeconfig, *base, "--allow-dns")[0] == 0
    assert len(read(*EGRESS_SHOP)["spec"]["egress"]) == 2
    assert apply(capsys, sandbox.kubeconfig, *base)[0] == 0
    live = read(*EGRESS_SHOP)
    assert live["spec"] == NetworkPolicyRenderer().egress_policy(
        "shop", PolicyRequest("kubetunnel", ("shop",))
    )["spec"]


def test_apply_into_a_missing_namespace_is_one_line(
    sandbox: RunningSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = apply(capsys, sandbox.kubeconfig, "--app-namespace", "nowhere")
    assert code == 1
    assert out == ""
    assert err.splitlines() == [
        "kubetunnel: error: cannot apply NetworkPolicy nowhere/kubetunnel-agent-egress: "
        'namespaces "nowhere" not found'
    ]
