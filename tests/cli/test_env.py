"""``cli env`` against the sandbox: the whole resolution from real API objects, errors that
change nothing, RBAC on Secrets, --env-file/--mount modes, no Secret value in any log line."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import yaml

from modes.sandbox.testing import RunningSandbox
from tests.cli.conftest import Run, apply

PASSWORD = "hunter2-s3cret"  # must never appear in a log line


def workload(ns: str, *, env: list[dict[str, Any]] | None = None,
             env_from: list[dict[str, Any]] | None = None, extra: dict[str, Any] | None = None,
             name: str = "orders-1", containers: list[dict[str, Any]] | None = None,
             links: bool | None = None) -> list[dict[str, Any]]:
    container = {"name": "app", "image": "kubetunnel/sandbox-echo",
                 "ports": [{"name": "http", "containerPort": 8080}],
                 "env": env or [], "envFrom": env_from or [], **(extra or {})}
    spec: dict[str, Any] = {"containers": containers or [container],
                            "volumes": (extra or {}).get("_volumes", [])}
    for c in spec["containers"]:
        c.pop("_volumes", None)
    if links is not None:
        spec["enableServiceLinks"] = links
    return [
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": name, "namespace": ns, "labels": {"app": "orders"},
                      "annotations": {"build": "42"}},
         "spec": spec},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "orders", "namespace": ns},
         "spec": {"selector": {"app": "orders"},
                  "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
    ]


def config(ns: str) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app", "namespace": ns},
         "data": {"LEVEL": "debug", "DB_HOST": "db", "1BAD": "x", "app.yaml": "debug: true\n"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": ns},
         "data": {"password": base64.b64encode(PASSWORD.encode()).decode()}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "pay-db", "namespace": ns},
         "spec": {"ports": [{"port": 5432, "protocol": "TCP"}]}},
    ]


def cluster_ip(kubectl: Run, ns: str, name: str) -> str:
    out = kubectl("-n", ns, "get", "service", name, "-o", "jsonpath={.spec.clusterIP}")
    return out.stdout.strip()


def test_env_resolves_every_source_as_the_kubelet(kt: Run, kubectl: Run, namespace: str) -> None:
    apply(kubectl, *config(namespace), *workload(namespace, env_from=[
        {"configMapRef": {"name": "app"}},
        {"configMapRef": {"name": "app"}, "prefix": "CFG_"},
        {"secretRef": {"name": "absent", "optional": True}},
    ], env=[
        {"name": "DB_URL", "value": "postgres://$(DB_HOST):$(PAY_DB_SERVICE_PORT)/$(LATER)"},
        {"name": "LATER", "value": "x"},
        {"name": "LITERAL", "value": "$$(DB_HOST)"},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "nope",
                                                            "optional": True}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "BUILD", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.annotations['build']"}}},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                           "divisor": "1Mi"}}},
    ], extra={"resources": {"limits": {"memory": "256Mi", "cpu": "500m"}}}))
    result = kt("cli", "env", "orders", "-n", namespace, "-o", "json")
    assert result.returncode == 0, result.stderr
    env = json.loads(result.stdout)
    orders, pay_db = cluster_ip(kubectl, namespace, "orders"), cluster_ip(kubectl, namespace,
                                                                          "pay-db")
    kubernetes = cluster_ip(kubectl, "default", "kubernetes")
    services = [("ORDERS", orders, 80, "http"), ("PAY_DB", pay_db, 5432, None)]
    if kubernetes:  # the API server's own Service, in every pod when it exists
        services.append(("KUBERNETES", kubernetes, 443, "https"))
    expected = {
        "LEVEL": "debug", "DB_HOST": "db", "app.yaml": "debug: true\n",
        # With the prefix, "1BAD" is a valid name: the check is on the prefixed key.
        "CFG_LEVEL": "debug", "CFG_DB_HOST": "db", "CFG_app.yaml": "debug: true\n",
        "CFG_1BAD": "x",
        "DB_URL": "postgres://db:5432/$(LATER)", "LATER": "x", "LITERAL": "$(DB_HOST)",
        "PASSWORD": PASSWORD, "POD": "orders-1", "NS": namespace, "BUILD": "42", "MEM": "256",
    }
    for prefix, ip, port, name in services:
        expected |= {f"{prefix}_SERVICE_HOST": ip, f"{prefix}_SERVICE_PORT": str(port),
                     f"{prefix}_PORT": f"tcp://{ip}:{port}",
                     f"{prefix}_PORT_{port}_TCP": f"tcp://{ip}:{port}",
                     f"{prefix}_PORT_{port}_TCP_PROTO": "tcp",
                     f"{prefix}_PORT_{port}_TCP_PORT": str(port),
                     f"{prefix}_PORT_{port}_TCP_ADDR": ip}
        if name:
            expected[f"{prefix}_SERVICE_PORT_{name.upper()}"] = str(port)
    assert env == expected
    assert "keys [1BAD] from the envFrom ConfigMap" in result.stderr
    assert "CFG_1BAD" not in result.stderr
    assert "# pod/orders-1 container app (pod orders-1)" in result.stderr


def test_service_links_off_and_dotenv_default(kt: Run, kubectl: Run, namespace: str) -> None:
    apply(kubectl, *config(namespace), *workload(namespace, links=False,
                                                 env=[{"name": "A", "value": "it's"}]))
    result = kt("cli", "env", "orders", "-n", namespace)
    assert result.returncode == 0, result.stderr
    names = [line.split("=", 1)[0] for line in result.stdout.splitlines()]
    assert names[0] == "A"
    assert result.stdout.splitlines()[0] == 'A="it\'s"'
    assert not [n for n in names if n.startswith(("ORDERS_", "PAY_DB_"))]
    assert names == ["A"] + [n for n in names if n.startswith("KUBERNETES_")]


def test_missing_configmap_is_one_line_and_writes_nothing(kt: Run, kubectl: Run, namespace: str,
                                                          tmp_path: Path) -> None:
    apply(kubectl, *workload(namespace, env=[{"name": "A", "valueFrom": {
        "configMapKeyRef": {"name": "settings", "key": "a"}}}]))
    out = tmp_path / "env"
    result = kt("cli", "env", "orders", "-n", namespace, "--env-file", str(out),
                "--mount", str(tmp_path / "root"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "kubetunnel: error: configmap \"settings\" not found (for A of container 'app')"]
    assert list(tmp_path.iterdir()) == []


def test_several_workloads_ask_for_a_choice(kt: Run, kubectl: Run, namespace: str) -> None:
    apply(kubectl, *workload(namespace), *workload(namespace, name="orders-2")[:1])
    result = kt("cli", "env", "orders", "-n", namespace)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"kubetunnel: error: Service {namespace}/orders selects several containers: "
        "pod/orders-1 (app), pod/orders-2 (app); choose with --workload KIND/NAME and "
        "-c CONTAINER")
    chosen = kt("cli", "env", "orders", "-n", namespace, "--workload", "pod/orders-2")
    assert chosen.returncode == 0, chosen.stderr
    assert "# pod/orders-2 container app" in chosen.stderr


def test_env_file_and_mount_are_private(kt: Run, kubectl: Run, namespace: str,
                                        tmp_path: Path) -> None:
    volumes = [{"name": "cfg", "configMap": {"name": "app", "items": [
                   {"key": "app.yaml", "path": "app.yaml"}]}},
               {"name": "creds", "secret": {"secretName": "creds"}},
               {"name": "info", "downwardAPI": {"items": [
                   {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]
    apply(kubectl, *config(namespace), *workload(namespace, extra={
        "volumeMounts": [{"name": "cfg", "mountPath": "/etc/app"},
                         {"name": "creds", "mountPath": "/var/run/creds", "readOnly": True},
                         {"name": "info", "mountPath": "/etc/podinfo"}],
        "_volumes": volumes}))
    root, env_file = tmp_path / "root", tmp_path / "app.env"
    result = kt("cli", "env", "orders", "-n", namespace, "--mount", str(root),
                "--env-file", str(env_file), "--log-level", "debug")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert f"KUBETUNNEL_ROOT='{root}'" in env_file.read_text().splitlines()
    files = {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file()}
    assert sorted(files) == ["etc/app/app.yaml", "etc/podinfo/labels", "var/run/creds/password"]
    assert files["var/run/creds/password"].read_text() == PASSWORD
    assert files["etc/podinfo/labels"].read_text() == 'app="orders"'
    assert {stat.S_IMODE(p.stat().st_mode) for p in files.values()} == {0o600}
    assert PASSWORD not in result.stderr


def _limited_kubeconfig(sandbox: RunningSandbox, kubectl: Run, ns: str, tmp_path: Path) -> Path:
    """A kubeconfig for a ServiceAccount that may read pods, services and configmaps only."""
    rbac = "rbac.authorization.k8s.io/v1"
    apply(kubectl, {"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "dev", "namespace": ns}},
          {"apiVersion": rbac, "kind": "Role", "metadata": {"name": "dev", "namespace": ns},
           "rules": [{"apiGroups": [""], "resources": ["pods", "services", "configmaps"],
                      "verbs": ["get", "list"]}]},
          {"apiVersion": rbac, "kind": "RoleBinding", "metadata": {"name": "dev", "namespace": ns},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "dev"},
           "subjects": [{"kind": "ServiceAccount", "name": "dev", "namespace": ns}]})
    token = kubectl("-n", ns, "create", "token", "dev")
    assert token.returncode == 0, token.stderr
    config = yaml.safe_load(sandbox.kubeconfig.read_text())
    config["users"][0]["user"] = {"token": token.stdout.strip()}
    path = tmp_path / "dev-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_secrets_without_rbac_are_named_and_no_secrets_goes_on(
        kt: Run, kubectl: Run, namespace: str, sandbox: RunningSandbox, tmp_path: Path) -> None:
    apply(kubectl, *config(namespace), *workload(namespace, env=[
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "LEVEL"}}}]))
    kubeconfig = str(_limited_kubeconfig(sandbox, kubectl, namespace, tmp_path))
    denied = kt("cli", "env", "orders", "-n", namespace, KUBECONFIG=kubeconfig)
    assert denied.returncode == 1
    assert denied.stderr.strip() == (
        f"kubetunnel: error: you may not read Secrets in namespace {namespace} (Secret creds, "
        "which the container's environment or files use); run with --no-secrets to go on "
        "without them")
    allowed = kt("cli", "env", "orders", "-n", namespace, "--no-secrets", "-o", "json",
                 KUBECONFIG=kubeconfig)
    assert allowed.returncode == 0, allowed.stderr
    env = json.loads(allowed.stdout)
    assert env["LEVEL"] == "debug"
    assert "PASSWORD" not in env
    assert "--no-secrets: PASSWORD (from Secret creds) is left out" in allowed.stderr
