"""The files of ConfigMap, Secret, downward-API and projected volumes at their mount paths,
as the Kubernetes docs describe them (keys as file names, items renaming, optional sources,
subPath, labels/annotations files)."""

from __future__ import annotations

import base64
from pathlib import PurePosixPath
from typing import Any

import pytest

from modes.cli.envvars import ConfigError, Sources
from modes.cli.volumes import mount_files


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


CONFIGMAPS = {"app-config": {"data": {"app.yaml": "debug: true\n", "level": "info"},
                             "binaryData": {"logo.png": b64(b"\x89PNG")}}}
SECRETS = {"creds": {"data": {"password": b64(b"hunter2"), "user": b64(b"admin")}}}


def files(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]], *,
          no_secrets: bool = False, env: dict[str, str] | None = None,
          ) -> tuple[dict[str, tuple[bytes, bool]], list[str], list[str]]:
    container = {"name": "app", "volumeMounts": mounts,
                 "resources": {"limits": {"memory": "64Mi"}}}
    pod = {"metadata": {"name": "orders-1", "namespace": "shop",
                        "labels": {"app": "orders", "tier": "back"},
                        "annotations": {"build": "42"}},
           "spec": {"containers": [container], "volumes": volumes}}
    sources = Sources("shop", pod, container, CONFIGMAPS, None if no_secrets else SECRETS)
    result = mount_files(sources, env or {})
    return ({str(f.path): (f.data, f.secret) for f in result.files},
            [str(d) for d in result.directories], result.warnings)


def test_configmap_volume_has_every_key_as_a_file() -> None:
    found, dirs, warnings = files([{"name": "cfg", "configMap": {"name": "app-config"}}],
                                  [{"name": "cfg", "mountPath": "/etc/app"}])
    assert found == {"etc/app/app.yaml": (b"debug: true\n", False),
                     "etc/app/level": (b"info", False),
                     "etc/app/logo.png": (b"\x89PNG", False)}
    assert dirs == ["etc/app"]
    assert warnings == []


def test_items_pick_and_rename_keys() -> None:
    found, _, _ = files(
        [{"name": "cfg", "configMap": {"name": "app-config", "items": [
            {"key": "level", "path": "conf/log-level"}]}}],
        [{"name": "cfg", "mountPath": "/etc/app"}])
    assert found == {"etc/app/conf/log-level": (b"info", False)}


def test_secret_volume_files_are_decoded_and_marked() -> None:
    found, _, _ = files([{"name": "s", "secret": {"secretName": "creds"}}],
                        [{"name": "s", "mountPath": "/var/run/creds"}])
    assert found == {"var/run/creds/password": (b"hunter2", True),
                     "var/run/creds/user": (b"admin", True)}


@pytest.mark.parametrize(("volume", "message"), [
    ({"configMap": {"name": "absent"}}, 'configmap "absent" not found'),
    ({"secret": {"secretName": "absent"}}, 'secret "absent" not found'),
    ({"configMap": {"name": "app-config", "items": [{"key": "nope", "path": "x"}]}},
     "non-existent key nope"),
])
def test_missing_non_optional_sources_are_errors(volume: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        files([{"name": "v", **volume}], [{"name": "v", "mountPath": "/etc/v"}])


def test_optional_missing_sources_give_an_empty_directory() -> None:
    found, dirs, _ = files(
        [{"name": "a", "configMap": {"name": "absent", "optional": True}},
         {"name": "b", "configMap": {"name": "app-config", "optional": True,
                                     "items": [{"key": "nope", "path": "x"},
                                               {"key": "level", "path": "level"}]}}],
        [{"name": "a", "mountPath": "/etc/a"}, {"name": "b", "mountPath": "/etc/b"}])
    assert found == {"etc/b/level": (b"info", False)}
    assert dirs == ["etc/a", "etc/b"]


def test_subpath_mounts_one_file() -> None:
    found, dirs, _ = files([{"name": "cfg", "configMap": {"name": "app-config"}}],
                           [{"name": "cfg", "mountPath": "/app/config.yaml",
                             "subPath": "app.yaml"}])
    assert found == {"app/config.yaml": (b"debug: true\n", False)}
    assert dirs == []


def test_subpathexpr_expands_from_the_environment() -> None:
    found, _, _ = files([{"name": "cfg", "configMap": {"name": "app-config"}}],
                        [{"name": "cfg", "mountPath": "/app/level",
                          "subPathExpr": "$(WHICH)"}], env={"WHICH": "level"})
    assert found == {"app/level": (b"info", False)}


def test_downward_api_volume() -> None:
    found, _, _ = files([{"name": "info", "downwardAPI": {"items": [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "build", "fieldRef": {"fieldPath": "metadata.annotations['build']"}},
        {"path": "mem", "resourceFieldRef": {"containerName": "app",
                                             "resource": "limits.memory", "divisor": "1Mi"}},
    ]}}], [{"name": "info", "mountPath": "/etc/podinfo"}])
    assert found == {"etc/podinfo/labels": (b'app="orders"\ntier="back"', False),
                     "etc/podinfo/build": (b"42", False),
                     "etc/podinfo/mem": (b"64", False)}


def test_projected_volume_merges_sources_and_skips_tokens() -> None:
    found, _, warnings = files([{"name": "all", "projected": {"sources": [
        {"configMap": {"name": "app-config", "items": [{"key": "level", "path": "level"}]}},
        {"secret": {"name": "creds", "items": [{"key": "user", "path": "db/user"}]}},
        {"downwardAPI": {"items": [{"path": "name",
                                    "fieldRef": {"fieldPath": "metadata.name"}}]}},
        {"serviceAccountToken": {"path": "token"}},
    ]}}], [{"name": "all", "mountPath": "/projected"}])
    assert found == {"projected/level": (b"info", False), "projected/db/user": (b"admin", True),
                     "projected/name": (b"orders-1", False)}
    assert warnings == ["projected serviceAccountToken of volume all is not available outside "
                        "the cluster: left out"]


def test_other_volume_kinds_and_withheld_secrets_are_warned_about() -> None:
    found, _, warnings = files(
        [{"name": "scratch", "emptyDir": {}}, {"name": "s", "secret": {"secretName": "creds"}}],
        [{"name": "scratch", "mountPath": "/tmp/x"}, {"name": "s", "mountPath": "/creds"}],
        no_secrets=True)
    assert found == {}
    assert len(warnings) == 2
    assert warnings[0] == ("volume scratch at /tmp/x is not a ConfigMap, Secret, downward-API "
                           "or projected volume: nothing written for it")
    assert "--no-secrets" in warnings[1]


def test_paths_never_leave_the_volume() -> None:
    with pytest.raises(ConfigError, match=r"'\.\.' is not allowed"):
        files([{"name": "cfg", "configMap": {"name": "app-config", "items": [
            {"key": "level", "path": "../../etc/passwd"}]}}],
              [{"name": "cfg", "mountPath": "/etc/app"}])


def test_mount_paths_are_relative_to_the_root() -> None:
    found, _, _ = files([{"name": "cfg", "configMap": {"name": "app-config",
                                                      "items": [{"key": "level", "path": "l"}]}}],
                        [{"name": "cfg", "mountPath": "/"}])
    assert found == {"l": (b"info", False)}
    assert PurePosixPath("l").parts == ("l",)
