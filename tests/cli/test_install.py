"""cli install / uninstall / status / disconnect against the sandbox API server."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from modes.sandbox.testing import RunningSandbox
from tests.cli.conftest import Run, apply


def test_install_is_idempotent_and_says_so(kt: Run, kubectl: Run) -> None:
    first = kt("cli", "install", "--no-wait")
    assert first.returncode == 0, first.stderr
    assert "namespace/kubetunnel created" in first.stdout
    assert ("customresourcedefinition.apiextensions.k8s.io/kubetunnels.application.dcode.tech "
            "created") in first.stdout
    assert "deployment.apps/kubetunnel-operator created" in first.stdout
    got = kubectl("-n", "kubetunnel", "get", "deployment,service,serviceaccount", "-o", "name")
    assert {
        "deployment.apps/kubetunnel-operator",
        "service/kubetunnel-operator",
        "serviceaccount/kubetunnel-operator",
    } <= set(got.stdout.split())
    second = kt("cli", "install", "--no-wait")
    assert second.returncode == 0, second.stderr
    lines = second.stdout.strip().splitlines()
    assert all(line.endswith(" unchanged") for line in lines[:-1]), second.stdout
    assert lines[-1] == "KubeTunnel is already installed in namespace kubetunnel; nothing changed."


def test_dry_run_prints_yaml_and_changes_nothing(kt: Run, kubectl: Run) -> None:
    out = kt("cli", "install", "--dry-run", "-n", "kt-dry", "--image", "example/kt:9")
    assert out.returncode == 0, out.stderr
    assert "image: example/kt:9" in out.stdout
    assert "name: kt-dry" in out.stdout
    assert kubectl("get", "namespace", "kt-dry").returncode != 0


def test_status_and_disconnect(kt: Run, kubectl: Run, namespace: str) -> None:
    assert kt("cli", "install", "--no-wait").returncode == 0
    apply(kubectl, {
        "apiVersion": "application.dcode.tech/v1", "kind": "Kubetunnel",
        "metadata": {"name": "orders", "namespace": namespace},
        "spec": {"service": "orders", "client": "ada@laptop",
                 "ports": [{"servicePort": 80, "localPort": 8080}]},
    })
    listed = kt("cli", "status", "-n", namespace, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["service"], r["client"], r["connected"]) for r in rows] == [
        ("orders", "ada@laptop", False)]
    table = kt("cli", "status", "-n", namespace)
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAMESPACE", "SERVICE", "CLIENT", "MODE", "CONNECTED", "SINCE",
                              "REQUESTS", "PORTS", "FILTER"]
    assert row.split() == [namespace, "orders", "ada@laptop", "exclusive", "no", "-", "-",
                           "8080:80", "-"]
    gone = kt("cli", "disconnect", "orders", "-n", namespace)
    assert gone.returncode == 0, gone.stderr
    assert json.loads(kt("cli", "status", "-n", namespace, "-o", "json").stdout) == []
    again = kt("cli", "disconnect", "orders", "-n", namespace)
    assert again.returncode == 2
    assert again.stderr.strip() == f"kubetunnel: error: no tunnel for Service {namespace}/orders"


def test_uninstall_refuses_while_tunnels_exist_unless_forced(
    kt: Run, kubectl: Run, namespace: str
) -> None:
    assert kt("cli", "install", "--no-wait").returncode == 0
    apply(kubectl, {
        "apiVersion": "application.dcode.tech/v1", "kind": "Kubetunnel",
        "metadata": {"name": "cart", "namespace": namespace},
        "spec": {"service": "cart", "client": "bob@box",
                 "ports": [{"servicePort": 80, "localPort": 9090}]},
    })
    refused = kt("cli", "uninstall")
    assert refused.returncode == 2
    assert f"{namespace}/cart (bob@box)" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert kubectl("get", "deployment", "-n", "kubetunnel", "kubetunnel-operator").returncode == 0
    forced = kt("cli", "uninstall", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "deployment.apps/kubetunnel-operator deleted" in forced.stdout
    assert kubectl("get", "crd", "kubetunnels.application.dcode.tech").returncode != 0


def test_unreachable_cluster_is_one_line(kt: Run, tmp_path: object) -> None:
    from pathlib import Path

    config = Path(str(tmp_path)) / "kubeconfig"
    config.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }))
    out = kt("cli", "status", "--kubeconfig", str(config))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("kubetunnel: error: cannot reach the Kubernetes API at "
                               "https://127.0.0.1:9")


def test_image_option_sets_the_agent_image_too(kt: Run) -> None:
    import yaml

    out = kt("cli", "install", "--dry-run", "--image", "registry.local/kt:dev")
    assert out.returncode == 0, out.stderr
    deployment = next(d for d in yaml.safe_load_all(out.stdout) if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.local/kt:dev"
    assert {"name": "KUBETUNNEL_AGENT_IMAGE", "value": "registry.local/kt:dev"} in container["env"]


def _kubeconfig_for(kubectl: Run, sandbox_kubeconfig: Path, namespace: str, account: str,
                    path: Path) -> Path:
    """A kubeconfig that acts as a ServiceAccount (token from TokenRequest, as kubectl makes)."""
    assert kubectl("create", "serviceaccount", account, "-n", namespace).returncode == 0
    token = kubectl("create", "token", account, "-n", namespace)
    assert token.returncode == 0, token.stderr
    config = yaml.safe_load(sandbox_kubeconfig.read_text())
    config["users"][0]["user"] = {"token": token.stdout.strip()}
    path.write_text(yaml.safe_dump(config))
    return path


def test_install_without_permissions_names_them_and_changes_nothing(
    kt: Run, kubectl: Run, namespace: str, sandbox: RunningSandbox, tmp_path: Path,
) -> None:
    kubeconfig = _kubeconfig_for(kubectl, sandbox.kubeconfig, namespace, "dev", tmp_path / "kc")
    # Allowed to create namespaces (cluster-wide, through a ClusterRoleBinding), nothing else.
    apply(kubectl, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": f"{namespace}-ns-maker"},
        "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["create", "patch"]}],
    }, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{namespace}-ns-maker"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": f"{namespace}-ns-maker"},
        "subjects": [{"kind": "ServiceAccount", "name": "dev", "namespace": namespace}],
    })
    before = kubectl("get", "namespaces,customresourcedefinitions,clusterroles", "-o", "name")
    denied = kt("cli", "install", "-n", "kt-denied", "--no-wait", KUBECONFIG=str(kubeconfig))
    assert denied.returncode == 1, denied.stderr
    lines = denied.stderr.strip().splitlines()
    assert len(lines) == 1, denied.stderr
    assert lines[0].startswith("kubetunnel: error: cannot install: you need ")
    assert "on namespaces" not in lines[0]  # granted above
    assert "you need create on customresourcedefinitions.apiextensions.k8s.io cluster-wide" in (
        lines[0])
    assert "you need create on deployments.apps in namespace kt-denied" in lines[0]
    after = kubectl("get", "namespaces,customresourcedefinitions,clusterroles", "-o", "name")
    assert after.stdout == before.stdout
