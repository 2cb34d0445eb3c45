"""Which workload and container the environment comes from, and the one-line choices."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubetunnel.errors import UsageError
from modes.cli.workloads import choose, selector_of, serves

SERVICE = {"metadata": {"name": "orders", "namespace": "shop"},
           "spec": {"selector": {"app": "orders"},
                    "ports": [{"port": 80, "targetPort": "http"}]}}


def pod(name: str, *containers: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"containers": list(containers)}}


APP = {"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}
SIDECAR = {"name": "proxy", "ports": [{"name": "admin", "containerPort": 9901}]}


def test_single_container_is_chosen_whatever_its_ports() -> None:
    choice = choose(SERVICE, {"deployment/orders": pod("o-1", SIDECAR)}, None, None)
    assert (choice.workload, choice.container["name"]) == ("deployment/orders", "proxy")


def test_the_container_serving_the_target_port_wins() -> None:
    choice = choose(SERVICE, {"deployment/orders": pod("o-1", SIDECAR, APP)}, None, None)
    assert choice.container["name"] == "app"
    assert choice.describe() == "deployment/orders container app (pod o-1)"


def test_several_serving_containers_ask_for_a_choice() -> None:
    found = {"deployment/orders": pod("o-1", APP, SIDECAR),
             "deployment/orders-canary": pod("c-1", APP)}
    with pytest.raises(UsageError) as err:
        choose(SERVICE, found, None, None)
    assert str(err.value) == (
        "Service shop/orders selects several containers: deployment/orders (app, proxy), "
        "deployment/orders-canary (app); choose with --workload KIND/NAME and -c CONTAINER")
    assert choose(SERVICE, found, None, "orders-canary").pod["metadata"]["name"] == "c-1"
    assert choose(SERVICE, found, "app", "deployment/orders").pod["metadata"]["name"] == "o-1"
    assert choose(SERVICE, found, "proxy", None).container["name"] == "proxy"


def test_unknown_container_or_workload() -> None:
    found = {"deployment/orders": pod("o-1", APP)}
    with pytest.raises(UsageError, match=r"no container 'db' .* \(containers: "
                                         r"deployment/orders \(app\)\)"):
        choose(SERVICE, found, "db", None)
    with pytest.raises(UsageError, match=r"no pods of workload 'statefulset/x' "
                                         r"\(it has: deployment/orders\)"):
        choose(SERVICE, found, None, "statefulset/x")


def test_numeric_target_ports_match_container_ports() -> None:
    numeric = {**SERVICE, "spec": {"ports": [{"port": 80, "targetPort": 9901}]}}
    assert serves(SIDECAR, numeric)
    assert not serves(APP, numeric)
    defaulted = {**SERVICE, "spec": {"ports": [{"port": 8080}]}}  # targetPort = port
    assert serves(APP, defaulted)


def test_tunneled_service_uses_the_original_selector() -> None:
    tunneled = {"metadata": {"annotations": {
        "kubetunnel.dev/original-selector": json.dumps({"app": "orders"})}},
        "spec": {"selector": {"kubetunnel.dev/tunnel": "orders"}}}
    assert selector_of(tunneled) == {"app": "orders"}
    assert selector_of(SERVICE) == {"app": "orders"}
