"""The Endpoints controller's view of a Service: readiness, named ports, terminating pods, and
the mirroring of a user's Endpoints into slices."""

from __future__ import annotations

from typing import Any

from modes.sandbox.node.controllers.endpoints import (
    MIRRORED_BY,
    desired,
    endpoints_object,
    mirrored,
    slice_objects,
)

Obj = dict[str, Any]


def pod(name: str, ip: str, *, ready: bool = True, port: int = 8080,
        labels: dict[str, str] | None = None, **meta: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}",
                         "labels": labels or {"app": "web"}, **meta},
            "spec": {"nodeName": "sandbox", "containers": [
                {"name": "c", "ports": [{"name": "http", "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"}]}}


SERVICE = {"metadata": {"name": "web", "namespace": "default", "uid": "svc",
                        "labels": {"team": "a"}},
           "spec": {"selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                              {"name": "metrics", "port": 9090, "targetPort": 9090}]}}


def test_subsets_by_readiness_and_resolved_port() -> None:
    pods = [pod("a", "127.1.0.1"), pod("b", "127.1.0.2", ready=False),
            pod("c", "127.1.0.3", port=9000), pod("other", "127.1.0.4", labels={"app": "x"}),
            pod("leaving", "127.1.0.5", deletionTimestamp="2026-01-01T00:00:00Z"),
            {**pod("pending", ""), "status": {"phase": "Pending"}}]
    endpoints = endpoints_object(SERVICE, desired(SERVICE, pods))
    assert endpoints["metadata"]["labels"] == {"team": "a"}
    by_port = {s["ports"][0]["port"]: s for s in endpoints["subsets"]}
    assert set(by_port) == {8080, 9000}
    assert [a["ip"] for a in by_port[8080]["addresses"]] == ["127.1.0.1"]
    assert [a["ip"] for a in by_port[8080]["notReadyAddresses"]] == ["127.1.0.2"]
    assert by_port[8080]["addresses"][0]["targetRef"] == {
        "kind": "Pod", "namespace": "default", "name": "a", "uid": "uid-a"}
    assert [a["ip"] for a in by_port[9000]["addresses"]] == ["127.1.0.3"]
    assert by_port[9000]["ports"][1] == {"name": "metrics", "port": 9090, "protocol": "TCP"}


def test_slices_carry_conditions_and_the_service_as_owner() -> None:
    slices = slice_objects(SERVICE, desired(SERVICE, [pod("a", "127.1.0.1"),
                                                      pod("b", "127.1.0.2", ready=False)]))
    assert len(slices) == 1
    piece = slices[0]
    assert piece["metadata"]["labels"]["kubernetes.io/service-name"] == "web"
    assert piece["metadata"]["ownerReferences"][0]["uid"] == "svc"
    assert [(e["addresses"], e["conditions"]["ready"]) for e in piece["endpoints"]] == [
        (["127.1.0.1"], True), (["127.1.0.2"], False)]


def test_terminating_pods_stay_in_slices_as_serving_or_not() -> None:
    leaving = {"deletionTimestamp": "2026-01-01T00:00:00Z"}
    groups = desired(SERVICE, [pod("a", "127.1.0.1"), pod("b", "127.1.0.2", **leaving),
                               pod("c", "127.1.0.3", ready=False, **leaving)])
    assert [a["ip"] for a in endpoints_object(SERVICE, groups)["subsets"][0]["addresses"]] == [
        "127.1.0.1"]
    [piece] = slice_objects(SERVICE, groups)
    assert [(e["addresses"][0], e["conditions"]) for e in piece["endpoints"]] == [
        ("127.1.0.1", {"ready": True, "serving": True, "terminating": False}),
        ("127.1.0.2", {"ready": False, "serving": True, "terminating": True}),
        ("127.1.0.3", {"ready": False, "serving": False, "terminating": True})]


def test_only_terminating_pods_give_a_slice_but_no_endpoints_subset() -> None:
    groups = desired(SERVICE, [pod("b", "127.1.0.2", deletionTimestamp="2026-01-01T00:00:00Z")])
    assert endpoints_object(SERVICE, groups)["subsets"] == []
    assert len(slice_objects(SERVICE, groups)[0]["endpoints"]) == 1


def test_user_endpoints_are_mirrored_unless_marked_skip_mirror() -> None:
    user = {"metadata": {"name": "db", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "127.1.0.9"}],
                         "notReadyAddresses": [{"ip": "127.1.0.8"}],
                         "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}]}
    service = {"metadata": {"name": "db", "namespace": "default", "uid": "db"},
               "spec": {"ports": [{"name": "pg", "port": 5432}]}}
    [piece] = slice_objects(service, mirrored(user), MIRRORED_BY)
    assert piece["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == MIRRORED_BY
    assert piece["ports"] == [{"name": "pg", "port": 5432, "protocol": "TCP"}]
    assert [(e["addresses"], e["conditions"]["ready"]) for e in piece["endpoints"]] == [
        (["127.1.0.9"], True), (["127.1.0.8"], False)]
    user["metadata"]["labels"] = {"endpointslice.kubernetes.io/skip-mirror": "true"}
    assert mirrored(user) == []
