"""kubectl against the sandbox: the project's manifests, tables, patches, delete, wait, watch."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.sandbox.conftest import MANIFESTS, Kubectl

TUNNEL = """apiVersion: application.dcode.tech/v1
kind: Kubetunnel
metadata:
  name: {name}
  namespace: {ns}
spec:
  service: orders
  client: me@laptop
  ports:
    - servicePort: 80
      localPort: 8080
"""


@pytest.fixture(scope="module")
def installed(kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's manifests, applied once (from a copy: the test edits it)."""
    if not (MANIFESTS / "kustomization.yaml").exists():
        pytest.skip("manifests/ has no kustomization.yaml yet")
    copy = tmp_path_factory.mktemp("manifests") / "manifests"
    shutil.copytree(MANIFESTS, copy)
    out = kubectl("apply", "-k", str(copy)).stdout
    assert (
        "customresourcedefinition.apiextensions.k8s.io/kubetunnels.application.dcode.tech created"
        in out
    )
    return copy


def test_apply_k_is_idempotent_and_applies_changes(kubectl: Kubectl, installed: Path) -> None:
    again = kubectl("apply", "-k", str(installed)).stdout
    assert again.strip()
    assert all(line.endswith("unchanged") for line in again.strip().splitlines()), again
    deployment = installed / "deployment.yaml"
    doc = yaml.safe_load(deployment.read_text())
    name, ns = doc["metadata"]["name"], "kubetunnel"
    before = int(
        kubectl("get", "deploy", name, "-n", ns, "-o", "jsonpath={.metadata.generation}").stdout
    )
    doc["spec"]["replicas"] = 3
    doc["metadata"].setdefault("labels", {})["sandbox-test"] = "yes"
    deployment.write_text(yaml.safe_dump(doc))
    out = kubectl("apply", "-k", str(installed)).stdout
    assert f"deployment.apps/{name} configured" in out
    got = yaml.safe_load(kubectl("get", "deploy", name, "-n", ns, "-o", "yaml").stdout)
    assert got["spec"]["replicas"] == 3
    assert got["metadata"]["labels"]["sandbox-test"] == "yes"
    assert got["metadata"]["generation"] == before + 1
    assert "kubectl.kubernetes.io/last-applied-configuration" in got["metadata"]["annotations"]


def test_get_table_and_yaml(kubectl: Kubectl, installed: Path) -> None:
    table = kubectl("get", "deploy,svc", "-n", "kubetunnel").stdout
    assert "NAME" in table
    assert "READY" in table
    assert "UP-TO-DATE" in table
    assert "CLUSTER-IP" in table
    ns = yaml.safe_load(kubectl("get", "ns", "kubetunnel", "-o", "yaml").stdout)
    assert ns["kind"] == "Namespace"
    assert ns["status"]["phase"] == "Active"
    wide = kubectl("get", "pods", "-A").stdout
    assert wide == "" or "NAMESPACE" in wide


def test_custom_resource_by_short_name_with_columns(
    kubectl: Kubectl, installed: Path, ns: str
) -> None:
    kubectl("apply", "-f", "-", stdin=TUNNEL.format(name="t1", ns=ns))
    lines = kubectl("get", "kt", "-n", ns).stdout.splitlines()
    assert lines[0].split() == ["NAME", "SERVICE", "CONNECTED", "CLIENT", "MODE", "PHASE", "AGE"]
    # CONNECTED is filled in by the operator, which runs as a pod once installed.
    assert lines[1].split()[:2] == ["t1", "orders"]
    assert "me@laptop" in lines[1].split()
    obj = yaml.safe_load(kubectl("get", "kt", "t1", "-n", ns, "-o", "yaml").stdout)
    assert obj["spec"]["leaseTTLSeconds"] == 60  # the CRD's default


def test_kubectl_patch_types(kubectl: Kubectl, installed: Path, ns: str) -> None:
    kubectl("apply", "-f", "-", stdin=TUNNEL.format(name="p", ns=ns))
    kubectl("patch", "kt", "p", "-n", ns, "--type", "merge", "-p", '{"spec":{"client":"a@b"}}')
    kubectl(
        "patch",
        "kt",
        "p",
        "-n",
        ns,
        "--type",
        "json",
        "-p",
        '[{"op":"test","path":"/spec/client","value":"a@b"},{"op":"replace","path":"/spec/client","value":"c@d"}]',
    )
    assert kubectl("get", "kt", "p", "-n", ns, "-o", "jsonpath={.spec.client}").stdout == "c@d"
    refused = kubectl(
        "patch",
        "kt",
        "p",
        "-n",
        ns,
        "--type",
        "strategic",
        "-p",
        '{"spec":{"client":"x"}}',
        check=False,
    )
    assert refused.returncode != 0
    kubectl(
        "create",
        "-f",
        "-",
        stdin=f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n  namespace: {ns}\n"
        "  finalizers: [a.example/x]\n",
    )
    kubectl(
        "patch",
        "cm",
        "cm",
        "-n",
        ns,
        "--type",
        "strategic",
        "-p",
        '{"metadata":{"finalizers":["b.example/y"]}}',
    )
    assert (
        kubectl("get", "cm", "cm", "-n", ns, "-o", "jsonpath={.metadata.finalizers}").stdout
        == '["a.example/x","b.example/y"]'
    )
    kubectl(
        "patch", "cm", "cm", "-n", ns, "--type", "merge", "-p", '{"metadata":{"finalizers":null}}'
    )


def test_delete_and_wait_for_delete(kubectl: Kubectl, installed: Path, ns: str) -> None:
    kubectl("apply", "-f", "-", stdin=TUNNEL.format(name="d", ns=ns))
    kubectl(
        "patch",
        "kt",
        "d",
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        '{"metadata":{"finalizers":["example.com/hold"]}}',
    )
    assert "deleted" in kubectl("delete", "kt", "d", "-n", ns, "--wait=false").stdout
    release = threading.Timer(
        0.5,
        lambda: kubectl(
            "patch",
            "kt",
            "d",
            "-n",
            ns,
            "--type",
            "json",
            "-p",
            '[{"op":"remove","path":"/metadata/finalizers"}]',
        ),
    )
    release.start()
    started = time.monotonic()
    kubectl("wait", "--for=delete", "kt/d", "-n", ns, "--timeout=10s")
    release.join()
    assert time.monotonic() - started >= 0.3  # it really waited for the finalizer
    missing = kubectl("get", "kt", "d", "-n", ns, check=False)
    assert missing.returncode == 1
    assert "NotFound" in missing.stderr


def test_get_watch_with_timeout(kubectl: Kubectl, sandbox: object, ns: str) -> None:
    kubectl(
        "create",
        "-f",
        "-",
        stdin=f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: before\n  namespace: {ns}\n",
    )
    later = threading.Timer(
        0.7,
        lambda: kubectl(
            "create",
            "-f",
            "-",
            stdin=f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: after\n  namespace: {ns}\n",
        ),
    )
    later.start()
    result = kubectl(
        "get", "cm", "-n", ns, "--watch", "--request-timeout=3s", check=False, timeout=20
    )
    later.join()
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names[0] == "NAME"
    assert "before" in names
    assert "after" in names
    assert names.count("NAME") == 1


def test_kubectl_errors_are_status_messages(kubectl: Kubectl, ns: str) -> None:
    result = kubectl("get", "cm", "nope", "-n", ns, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == 'Error from server (NotFound): configmaps "nope" not found'
    bad = kubectl(
        "apply",
        "-f",
        "-",
        check=False,
        stdin=(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n  namespace: "
            f"{ns}\nspec:\n"
            "  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: c}}\n"
            "    spec: {containers: [{name: c, image: i}]}\n"
        ),
    )
    assert bad.returncode == 1
    assert "is invalid" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert subprocess.CompletedProcess  # keep the import honest for type checkers


def test_wide_output_has_priority_columns(kubectl: Kubectl, ns: str) -> None:
    kubectl(
        "create",
        "-f",
        "-",
        stdin=(
            f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: {ns}\n"
            "spec:\n  containers: [{name: c, image: 'i:1'}]\n"
        ),
    )
    narrow = kubectl("get", "pods", "-n", ns).stdout.splitlines()[0].split()
    wide = kubectl("get", "pods", "-n", ns, "-o", "wide").stdout.splitlines()[0].split()
    assert narrow == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert wide == [*narrow, "IP", "NODE"]


def test_unknown_fields_strict_by_default_and_warned_on_request(kubectl: Kubectl, ns: str) -> None:
    manifest = (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: u\n  namespace: {ns}\n"
        "data: {a: b}\nbogus: 1\n"
    )
    strict = kubectl("create", "-f", "-", stdin=manifest, check=False)
    assert strict.returncode == 1
    assert 'unknown field "bogus"' in strict.stderr
    warned = kubectl("create", "--validate=warn", "-f", "-", stdin=manifest)
    assert 'Warning: unknown field "bogus"' in warned.stderr


def test_apply_a_list_validates_each_item_client_side(kubectl: Kubectl, ns: str) -> None:
    """kubectl validates a kind: List against /openapi/v2 in its protobuf form."""

    def listing(*items: dict[str, object]) -> str:
        return yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": list(items)})

    good = listing(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "one", "namespace": ns},
         "data": {"k": "v"}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "two", "namespace": ns}},
    )
    out = kubectl("apply", "-f", "-", stdin=good).stdout
    assert out.split("\n")[:2] == ["configmap/one created", "serviceaccount/two created"]
    bad = listing(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "three", "namespace": ns},
         "dataa": {"k": "v"}},
    )
    refused = kubectl("apply", "-f", "-", stdin=bad, check=False)
    assert refused.returncode == 1
    assert ('ValidationError(ConfigMap): unknown field "dataa" in io.k8s.api.core.v1.ConfigMap'
            in refused.stderr)
    assert kubectl("get", "configmap", "three", "-n", ns, check=False).returncode == 1


ENDPOINTS = """apiVersion: v1
kind: Service
metadata: {{name: db, namespace: {ns}}}
spec:
  ports: [{{name: pg, port: 5432}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: db, namespace: {ns}}}
subsets:
- addresses: [{{ip: 127.1.2.3}}, {{ip: 127.1.2.4}}]
  ports: [{{name: pg, port: 5432}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-manual
  namespace: {ns}
  labels: {{kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{{name: pg, port: 5432, protocol: TCP}}]
endpoints:
- addresses: [127.1.2.3]
- addresses: [127.1.2.4]
"""


def test_get_endpoints_endpointslices_services_columns(kubectl: Kubectl, ns: str) -> None:
    """The columns kube-apiserver's printers give these kinds (kubectl prints what it gets)."""
    kubectl("apply", "-f", "-", stdin=ENDPOINTS.format(ns=ns))
    lines = kubectl("get", "endpoints", "db", "-n", ns).stdout.splitlines()
    assert lines[0].split() == ["NAME", "ENDPOINTS", "AGE"]
    assert lines[1].split()[:2] == ["db", "127.1.2.3:5432,127.1.2.4:5432"]
    lines = kubectl("get", "endpointslices", "db-manual", "-n", ns).stdout.splitlines()
    assert lines[0].split() == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    assert lines[1].split()[:4] == ["db-manual", "IPv4", "5432", "127.1.2.3,127.1.2.4"]
    lines = kubectl("get", "services", "db", "-n", ns, "-o", "wide").stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE",
                                "SELECTOR"]
    cells = lines[1].split()
    assert cells[:2] == ["db", "ClusterIP"]
    assert cells[3:5] == ["<none>", "5432/TCP"]
    assert cells[-1] == "<none>"


def test_expose_after_the_pods_are_ready_serves_the_cluster_ip(kubectl: Kubectl, ns: str) -> None:
    """Endpoints that follow a new Service at once (its pods already Ready) reach the proxy.

    Every earlier test applied the Service before its pods were Ready, which hid that the
    proxy lost Endpoints arriving while it bound the ClusterIP.
    """
    kubectl("create", "deployment", "api", "-n", ns, "--image=kubetunnel/sandbox-echo",
            "--port=8080")
    kubectl("wait", "-n", ns, "--for=condition=Available", "deployment/api", "--timeout=20s")
    kubectl("expose", "deployment", "api", "-n", ns, "--port=18080", "--target-port=8080")
    cluster_ip = kubectl("get", "service", "api", "-n", ns, "-o",
                         "jsonpath={.spec.clusterIP}").stdout
    pod = kubectl("get", "pods", "-n", ns, "-l", "app=api", "-o",
                  "jsonpath={.items[0].metadata.name}").stdout

    def answer() -> str | None:
        try:
            with urllib.request.urlopen(f"http://{cluster_ip}:18080/", timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            return None

    # Until the proxy has seen the Service a connection may be refused, so it is retried; the
    # defect closed every connection without an answer until the next endpoints change.
    deadline = time.monotonic() + 10
    while (got := answer()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got is not None, f"{cluster_ip}:18080 never answered"
    assert pod in got
