"""A container's environment, each expectation written by hand from the Kubernetes docs
(Define Dependent Environment Variables; Configure a Pod to Use a ConfigMap; Distribute
Credentials Securely Using Secrets; Services' environment variables) and kubelet's order:
envFrom, then env, then Service variables for names still undefined."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from modes.cli.envvars import ConfigError, Sources, resolve, service_env, valid_env_name


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def cm(name: str, **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop"}, "data": data}


def secret(name: str, **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop"},
            "data": {k: b64(v) for k, v in data.items()}}


POD = {"metadata": {"name": "orders-1", "namespace": "shop", "labels": {"app": "orders"}},
       "spec": {"nodeName": "node-a", "containers": []},
       "status": {"podIP": "10.1.0.7"}}


def sources(container: dict[str, Any], configmaps: Any = None, secrets: Any = None,
            no_secrets: bool = False) -> Sources:
    pod = {**POD, "spec": {**POD["spec"], "containers": [{"name": "app", **container}]}}
    return Sources("shop", pod, {"name": "app", **container},
                   {c["metadata"]["name"]: c for c in configmaps or []},
                   None if no_secrets else {s["metadata"]["name"]: s for s in secrets or []})


def env_of(container: dict[str, Any], service_vars: dict[str, str] | None = None,
           **kwargs: Any) -> dict[str, str]:
    return resolve(sources(container, **kwargs), service_vars or {}).env


def test_dependent_variables_example_from_the_docs() -> None:
    env = env_of({"env": [
        {"name": "SERVICE_PORT", "value": "80"},
        {"name": "SERVICE_IP", "value": "172.17.0.1"},
        {"name": "UNCHANGED_REFERENCE", "value": "$(PROTOCOL)://$(SERVICE_IP):$(SERVICE_PORT)"},
        {"name": "PROTOCOL", "value": "https"},
        {"name": "SERVICE_ADDRESS", "value": "$(PROTOCOL)://$(SERVICE_IP):$(SERVICE_PORT)"},
        {"name": "ESCAPED_REFERENCE", "value": "$$(PROTOCOL)://$(SERVICE_IP):$(SERVICE_PORT)"},
    ]})
    assert env == {
        "SERVICE_PORT": "80", "SERVICE_IP": "172.17.0.1",
        "UNCHANGED_REFERENCE": "$(PROTOCOL)://172.17.0.1:80",  # PROTOCOL comes later
        "PROTOCOL": "https",
        "SERVICE_ADDRESS": "https://172.17.0.1:80",
        "ESCAPED_REFERENCE": "$(PROTOCOL)://172.17.0.1:80",
    }


def test_references_reach_envfrom_and_service_variables_but_valuefrom_is_not_expanded() -> None:
    env = env_of({
        "envFrom": [{"configMapRef": {"name": "base"}}],
        "env": [
            {"name": "URL", "value": "http://$(DB_HOST):$(PAYMENTS_SERVICE_PORT)/$(NAME)"},
            {"name": "RAW", "valueFrom": {"configMapKeyRef": {"name": "base", "key": "TEMPLATE"}}},
            {"name": "SELF", "value": "$(SELF)-x"},
            {"name": "EMPTY", "value": ""},
        ]},
        {"PAYMENTS_SERVICE_PORT": "8443"},
        configmaps=[cm("base", DB_HOST="db", NAME="orders", TEMPLATE="$(NAME)")])
    assert env["URL"] == "http://db:8443/orders"
    assert env["RAW"] == "$(NAME)"
    assert env["SELF"] == "$(SELF)-x"
    assert env["EMPTY"] == ""


def test_envfrom_prefix_later_source_wins_and_env_overrides() -> None:
    env = env_of({
        "envFrom": [
            {"configMapRef": {"name": "one"}},
            {"prefix": "X_", "configMapRef": {"name": "two"}},
            {"secretRef": {"name": "creds"}, "prefix": "DB_"},
        ],
        "env": [{"name": "KEEP", "value": "from-env"}],
    }, configmaps=[cm("one", X_A="one", KEEP="one", ONLY="one"), cm("two", A="two")],
       secrets=[secret("creds", PASSWORD="s3cret", ONLY="x")])
    assert env == {"X_A": "two", "KEEP": "from-env", "ONLY": "one", "DB_PASSWORD": "s3cret",
                   "DB_ONLY": "x"}


def test_invalid_envfrom_keys_are_skipped_with_a_warning() -> None:
    result = resolve(sources({"envFrom": [{"configMapRef": {"name": "c"}}]},
                             configmaps=[cm("c", GOOD="1", **{"1BAD": "2", "9": "3",
                                                              "dotted.name": "4"})]), {})
    assert result.env == {"GOOD": "1", "dotted.name": "4"}
    assert result.warnings == ["keys [1BAD, 9] from the envFrom ConfigMap shop/c were skipped: "
                               "they are not valid environment variable names"]


@pytest.mark.parametrize(("name", "valid"), [
    ("A", True), ("_a", True), ("my.env-name", True), ("-x", True), ("1A", False),
    (".", False), ("..", False), ("..a", False), (".a", True), ("A=B", False), ("", False)])
def test_variable_names(name: str, valid: bool) -> None:
    assert valid_env_name(name) is valid


def test_optional_missing_sources_set_nothing() -> None:
    env = env_of({
        "envFrom": [{"configMapRef": {"name": "absent", "optional": True}},
                    {"secretRef": {"name": "absent-secret", "optional": True}},
                    {"configMapRef": {"name": "base"}}],
        "env": [
            {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {
                "name": "base", "key": "missing", "optional": True}}},
            {"name": "GONE", "valueFrom": {"configMapKeyRef": {
                "name": "absent", "key": "k", "optional": True}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {
                "name": "absent-secret", "key": "k", "optional": True}}},
        ]}, configmaps=[cm("base", LEVEL="from-envFrom")])
    # An optional reference that is missing leaves the earlier value in place.
    assert env == {"LEVEL": "from-envFrom"}


@pytest.mark.parametrize(("container", "message"), [
    ({"envFrom": [{"configMapRef": {"name": "absent"}}]}, 'configmap "absent" not found'),
    ({"envFrom": [{"secretRef": {"name": "nope"}}]}, 'secret "nope" not found'),
    ({"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "base", "key": "x"}}}]},
     "couldn't find key x in ConfigMap shop/base"),
    ({"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "x"}}}]},
     "couldn't find key x in Secret shop/creds"),
    ({"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "x"}}}]},
     'configmap "absent" not found'),
])
def test_missing_non_optional_sources_are_errors(container: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        env_of(container, configmaps=[cm("base")], secrets=[secret("creds", other="v")])


def test_secret_values_decoded_and_marked() -> None:
    result = resolve(sources({
        "envFrom": [{"secretRef": {"name": "creds"}}],
        "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pw"}}},
                {"name": "user", "value": "overridden"}],
    }, secrets=[secret("creds", pw="hunter2", user="admin")]), {})
    assert result.env == {"pw": "hunter2", "user": "overridden", "PW": "hunter2"}
    assert result.from_secrets == {"pw", "PW"}


def test_no_secrets_leaves_them_out_with_warnings() -> None:
    result = resolve(sources({
        "envFrom": [{"secretRef": {"name": "creds"}}],
        "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pw"}}},
                {"name": "HOST", "value": "db"}],
    }, no_secrets=True), {})
    assert result.env == {"HOST": "db"}
    assert len(result.warnings) == 2
    assert all("--no-secrets" in w for w in result.warnings)


def test_field_and_resource_refs() -> None:
    env = env_of({
        "resources": {"limits": {"memory": "128Mi"}},
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {
                "resource": "limits.memory", "divisor": "1Mi"}}},
        ]})
    assert env == {"POD_NAME": "orders-1", "POD_IP": "10.1.0.7", "APP": "orders", "MEM": "128"}


def test_unset_limit_without_node_is_left_out_with_a_warning() -> None:
    result = resolve(sources({"env": [{"name": "CPUS", "valueFrom": {"resourceFieldRef": {
        "resource": "limits.cpu"}}}]}), {})
    assert result.env == {}
    assert result.warnings[0].startswith("CPUS is left out: limits.cpu is unset")


def test_service_variables_come_last_and_never_override() -> None:
    env = env_of({"env": [{"name": "ORDERS_SERVICE_HOST", "value": "mine"}]},
                 {"ORDERS_SERVICE_HOST": "10.0.0.5", "ORDERS_SERVICE_PORT": "80"})
    assert env == {"ORDERS_SERVICE_HOST": "mine", "ORDERS_SERVICE_PORT": "80"}


def svc(name: str, ip: str | None, ports: list[dict[str, Any]], ns: str = "shop",
        **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ports": ports, **spec}
    if ip is not None:
        body["clusterIP"] = ip
    return {"metadata": {"name": name, "namespace": ns}, "spec": body}


SERVICES = [
    svc("order-db", "10.0.0.5", [{"name": "http", "port": 80, "protocol": "TCP"},
                                 {"name": "grpc-api", "port": 9090},
                                 {"name": "dns", "port": 53, "protocol": "UDP"}]),
    svc("headless", "None", [{"port": 80}]),
    svc("external", None, [], type="ExternalName", externalName="example.com"),
    svc("elsewhere", "10.0.0.9", [{"port": 80}], ns="other"),
    svc("kubernetes", "10.0.0.1", [{"name": "https", "port": 443, "protocol": "TCP"}],
        ns="default"),
]

KUBERNETES_VARS = {
    "KUBERNETES_SERVICE_HOST": "10.0.0.1",
    "KUBERNETES_SERVICE_PORT": "443",
    "KUBERNETES_SERVICE_PORT_HTTPS": "443",
    "KUBERNETES_PORT": "tcp://10.0.0.1:443",
    "KUBERNETES_PORT_443_TCP": "tcp://10.0.0.1:443",
    "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
    "KUBERNETES_PORT_443_TCP_PORT": "443",
    "KUBERNETES_PORT_443_TCP_ADDR": "10.0.0.1",
}


def test_service_variables_as_kubernetes_names_them() -> None:
    assert service_env(SERVICES, "shop") == {
        **KUBERNETES_VARS,
        "ORDER_DB_SERVICE_HOST": "10.0.0.5",
        "ORDER_DB_SERVICE_PORT": "80",
        "ORDER_DB_SERVICE_PORT_HTTP": "80",
        "ORDER_DB_SERVICE_PORT_GRPC_API": "9090",
        "ORDER_DB_SERVICE_PORT_DNS": "53",
        "ORDER_DB_PORT": "tcp://10.0.0.5:80",
        "ORDER_DB_PORT_80_TCP": "tcp://10.0.0.5:80",
        "ORDER_DB_PORT_80_TCP_PROTO": "tcp",
        "ORDER_DB_PORT_80_TCP_PORT": "80",
        "ORDER_DB_PORT_80_TCP_ADDR": "10.0.0.5",
        "ORDER_DB_PORT_9090_TCP": "tcp://10.0.0.5:9090",
        "ORDER_DB_PORT_9090_TCP_PROTO": "tcp",
        "ORDER_DB_PORT_9090_TCP_PORT": "9090",
        "ORDER_DB_PORT_9090_TCP_ADDR": "10.0.0.5",
        "ORDER_DB_PORT_53_UDP": "udp://10.0.0.5:53",
        "ORDER_DB_PORT_53_UDP_PROTO": "udp",
        "ORDER_DB_PORT_53_UDP_PORT": "53",
        "ORDER_DB_PORT_53_UDP_ADDR": "10.0.0.5",
    }


def test_enable_service_links_false_keeps_only_the_api_servers() -> None:
    assert service_env(SERVICES, "shop", enable_links=False) == KUBERNETES_VARS


def test_forwarded_addresses_replace_cluster_ips() -> None:
    env = service_env(SERVICES, "shop", addresses={"order-db": "127.77.0.3"})
    assert env["ORDER_DB_SERVICE_HOST"] == "127.77.0.3"
    assert env["ORDER_DB_PORT"] == "tcp://127.77.0.3:80"
    assert env["ORDER_DB_PORT_9090_TCP_ADDR"] == "127.77.0.3"
    assert env["KUBERNETES_SERVICE_HOST"] == "10.0.0.1"


def test_ipv6_cluster_ip_is_bracketed_in_urls() -> None:
    env = service_env([svc("v6", "fd00::5", [{"port": 80}])], "shop")
    assert env["V6_PORT"] == "tcp://[fd00::5]:80"
    assert env["V6_SERVICE_HOST"] == "fd00::5"
