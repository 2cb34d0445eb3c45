"""Lists (selectors, pages, resourceVersion) and watches (replay, selectors, bookmarks, 410)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from modes.sandbox.testing import RunningSandbox, running_sandbox
from tests.sandbox.conftest import Raw


def _cm(core: client.CoreV1Api, ns: str, name: str, **labels: str) -> Any:
    return core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": labels}})


@pytest.fixture
def labelled(core: client.CoreV1Api, ns: str) -> str:
    _cm(core, ns, "a", tier="web", env="prod")
    _cm(core, ns, "b", tier="db", env="prod")
    _cm(core, ns, "c", tier="web")
    _cm(core, ns, "d")
    return ns


@pytest.mark.parametrize(
    ("selector", "names"),
    [
        ("tier=web", ["a", "c"]),
        ("tier==web", ["a", "c"]),
        ("tier!=web", ["b", "d"]),
        ("tier in (web, db)", ["a", "b", "c"]),
        ("tier notin (web)", ["b", "d"]),
        ("env", ["a", "b"]),
        ("!env", ["c", "d"]),
        ("tier=web,env=prod", ["a"]),
    ],
)
def test_label_selectors(
    core: client.CoreV1Api, labelled: str, selector: str, names: list[str]
) -> None:
    items = core.list_namespaced_config_map(labelled, label_selector=selector).items
    assert [i.metadata.name for i in items] == names


def test_field_selectors(core: client.CoreV1Api, labelled: str, raw: Raw) -> None:
    assert [
        i.metadata.name
        for i in core.list_namespaced_config_map(labelled, field_selector="metadata.name=b").items
    ] == ["b"]
    assert [
        i.metadata.name
        for i in core.list_namespaced_config_map(labelled, field_selector="metadata.name!=b").items
    ] == ["a", "c", "d"]
    everywhere = core.list_config_map_for_all_namespaces(
        field_selector=f"metadata.namespace={labelled}"
    )
    assert len(everywhere.items) == 4
    core.create_namespaced_pod(
        labelled, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    )
    assert [
        p.metadata.name
        for p in core.list_namespaced_pod(labelled, field_selector="status.phase=Pending").items
    ] == ["p"]
    assert core.list_namespaced_pod(labelled, field_selector="status.phase=Running").items == []
    code, _, body = raw(
        "GET", f"/api/v1/namespaces/{labelled}/configmaps?fieldSelector=spec.color%3Dred"
    )
    assert code == 400
    assert isinstance(body, dict)
    assert body["message"] == (
        '"spec.color" is not a known field selector: only "metadata.name", "metadata.namespace"')
    code, _, _ = raw("GET", f"/api/v1/namespaces/{labelled}/configmaps?labelSelector=a%20in%20b")
    assert code == 400


def test_limit_and_continue(core: client.CoreV1Api, labelled: str) -> None:
    first = core.list_namespaced_config_map(labelled, limit=3)
    assert [i.metadata.name for i in first.items] == ["a", "b", "c"]
    assert first.metadata.remaining_item_count == 1
    assert first.metadata._continue
    rest = core.list_namespaced_config_map(labelled, limit=3, _continue=first.metadata._continue)
    assert [i.metadata.name for i in rest.items] == ["d"]
    assert rest.metadata._continue is None


def test_list_resource_version_is_the_global_counter(core: client.CoreV1Api, ns: str) -> None:
    made = _cm(core, ns, "x")
    listed = core.list_namespaced_config_map(ns)
    assert int(listed.metadata.resource_version) >= int(made.metadata.resource_version)
    other = core.create_namespace({"metadata": {"name": f"{ns}-other"}})
    assert int(other.metadata.resource_version) > int(made.metadata.resource_version)
    core.delete_namespace(f"{ns}-other")


def test_watch_without_version_lists_existing_first_then_changes(
    core: client.CoreV1Api, ns: str
) -> None:
    _cm(core, ns, "old")
    timer = threading.Timer(0.3, lambda: _cm(core, ns, "new"))
    timer.start()
    events = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(core.list_namespaced_config_map, ns, timeout_seconds=1)
    ]
    timer.join()
    assert events == [("ADDED", "old"), ("ADDED", "new")]


def test_watch_replays_history_after_a_resource_version(core: client.CoreV1Api, ns: str) -> None:
    rv = _cm(core, ns, "r").metadata.resource_version
    core.patch_namespaced_config_map("r", ns, {"data": {"a": "1"}})
    core.delete_namespaced_config_map("r", ns)
    stream = watch.Watch().stream(
        core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=1
    )
    events = [(e["type"], e["object"].metadata.name) for e in stream]
    assert events == [("MODIFIED", "r"), ("DELETED", "r")]


def test_watch_selector_moves_become_added_and_deleted(core: client.CoreV1Api, ns: str) -> None:
    rv = _cm(core, ns, "m", on="yes").metadata.resource_version
    core.patch_namespaced_config_map("m", ns, {"metadata": {"labels": {"on": "no"}}})
    core.patch_namespaced_config_map("m", ns, {"data": {"ignored": "while out"}})
    core.patch_namespaced_config_map("m", ns, {"metadata": {"labels": {"on": "yes"}}})
    core.patch_namespaced_config_map("m", ns, {"data": {"x": "in"}})
    stream = watch.Watch().stream(
        core.list_namespaced_config_map,
        ns,
        resource_version=rv,
        label_selector="on=yes",
        timeout_seconds=1,
    )
    assert [e["type"] for e in stream] == ["DELETED", "ADDED", "MODIFIED"]


def _raw_watch(
    sandbox: RunningSandbox, raw: Raw, path: str, timeout: float = 10
) -> tuple[float, list[dict[str, Any]]]:
    headers = {"Authorization": f"Bearer {sandbox.token}"}
    request = urllib.request.Request(sandbox.url + path, headers=headers)  # noqa: S310
    started = time.monotonic()
    opened = urllib.request.urlopen(request, context=raw.context, timeout=timeout)  # noqa: S310
    with opened as response:
        lines = [json.loads(line) for line in response if line.strip()]
    return time.monotonic() - started, lines


def test_watch_timeout_and_bookmarks(
    sandbox: RunningSandbox, raw: Raw, core: client.CoreV1Api, ns: str
) -> None:
    _cm(core, ns, "b")
    elapsed, events = _raw_watch(
        sandbox,
        raw,
        f"/api/v1/namespaces/{ns}/configmaps?watch=1&allowWatchBookmarks=true&timeoutSeconds=3",
    )
    assert 2.5 < elapsed < 30  # lasted its timeoutSeconds, then ended
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    bookmark = events[1]["object"]
    assert bookmark["kind"] == "ConfigMap"
    assert int(bookmark["metadata"]["resourceVersion"]) >= int(
        events[0]["object"]["metadata"]["resourceVersion"]
    )
    elapsed, events = _raw_watch(
        sandbox, raw, f"/api/v1/namespaces/{ns}/configmaps?watch=1&timeoutSeconds=1"
    )
    assert [e["type"] for e in events] == ["ADDED"]
    assert elapsed < 30  # ended at its timeoutSeconds


def test_send_initial_events_ends_with_annotated_bookmark(
    sandbox: RunningSandbox, raw: Raw, core: client.CoreV1Api, ns: str
) -> None:
    _cm(core, ns, "i")
    _, events = _raw_watch(
        sandbox,
        raw,
        f"/api/v1/namespaces/{ns}/configmaps?watch=1&sendInitialEvents=true"
        "&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1",
    )
    assert [e["type"] for e in events][:2] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


@pytest.fixture(scope="module")
def small_history(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningSandbox, client.ApiClient]]:
    with running_sandbox(
        tmp_path_factory.mktemp("small"), extra_args=("--watch-history", "10")
    ) as sb:
        api = config.new_client_from_config(config_file=str(sb.kubeconfig))
        yield sb, api
        api.close()


def test_too_old_resource_version_is_410(
    small_history: tuple[RunningSandbox, client.ApiClient],
) -> None:
    sb, api = small_history
    core = client.CoreV1Api(api)
    first = core.create_namespaced_config_map("default", {"metadata": {"name": "first"}})
    for i in range(15):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"n{i}"}})
    with pytest.raises(ApiException) as info:
        list(
            watch.Watch().stream(
                core.list_namespaced_config_map,
                "default",
                resource_version=first.metadata.resource_version,
                timeout_seconds=1,
            )
        )
    assert info.value.status == 410
    _, events = _raw_watch(
        sb,
        Raw(sb),
        "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion="
        f"{first.metadata.resource_version}&timeoutSeconds=1",
    )
    assert events == [
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": events[0]["object"]["message"],
                "reason": "Expired",
                "code": 410,
            },
        }
    ]
    assert events[0]["object"]["message"].startswith("too old resource version")


def test_legacy_watch_path_of_one_object(
    sandbox: RunningSandbox, raw: Raw, core: client.CoreV1Api, ns: str
) -> None:
    _cm(core, ns, "one")
    _cm(core, ns, "two")
    _, events = _raw_watch(
        sandbox, raw, f"/api/v1/watch/namespaces/{ns}/configmaps/two?timeoutSeconds=1"
    )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "two")]


def test_deleting_a_crd_ends_its_watches(
    sandbox: RunningSandbox, raw: Raw, api: client.ApiClient
) -> None:
    group = "watched.example.com"
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"things.{group}"},
            "spec": {
                "group": group,
                "scope": "Cluster",
                "names": {"kind": "Thing", "plural": "things"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {"openAPIV3Schema": {"type": "object"}},
                    }
                ],
            },
        }
    )
    timer = threading.Timer(0.5, lambda: ext.delete_custom_resource_definition(f"things.{group}"))
    timer.start()
    elapsed, events = _raw_watch(sandbox, raw, f"/apis/{group}/v1/things?watch=1&timeoutSeconds=10")
    timer.join()
    assert events == []
    assert elapsed < 9  # ended by the deletion, not by its 10 s timeout


def test_continue_pages_show_the_first_pages_snapshot(
    core: client.CoreV1Api, labelled: str
) -> None:
    first = core.list_namespaced_config_map(labelled, limit=2)
    assert [i.metadata.name for i in first.items] == ["a", "b"]
    core.delete_namespaced_config_map("c", labelled)
    _cm(core, labelled, "cc")
    core.patch_namespaced_config_map("d", labelled, {"metadata": {"labels": {"late": "yes"}}})
    rest = core.list_namespaced_config_map(labelled, limit=5, _continue=first.metadata._continue)
    assert [i.metadata.name for i in rest.items] == ["c", "d"]
    assert rest.items[1].metadata.labels is None
    assert rest.metadata.resource_version == first.metadata.resource_version
    now = core.list_namespaced_config_map(labelled)
    assert [i.metadata.name for i in now.items] == ["a", "b", "cc", "d"]
