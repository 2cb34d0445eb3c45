"""The files of a container's ConfigMap, Secret, downward-API and projected volumes.

What the kubelet would put at each ``volumeMount``'s path, as (relative path, bytes) pairs for
``--mount DIR`` to write under DIR. ``items`` pick and rename keys; without them every key is a
file. ``subPath`` mounts one entry of the volume. A missing non-optional ConfigMap, Secret or key
is the error that keeps the pod from starting. Other volume kinds (emptyDir, PVCs, hostPath)
hold no data the API has, so they are listed as skipped. Pure functions, like envvars.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from modes.cli import downward
from modes.cli.envvars import ConfigError, Sources
from modes.cli.expansion import expand, lookup_in

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class MountFile:
    path: PurePosixPath  # relative to the mount root: the mountPath without its leading '/'
    data: bytes
    secret: bool


@dataclass
class Mounts:
    files: list[MountFile] = field(default_factory=list)
    directories: list[PurePosixPath] = field(default_factory=list)  # mounted, maybe empty
    warnings: list[str] = field(default_factory=list)


def mounted_volumes(pod: Obj, container: Obj) -> list[Obj]:
    """The pod volumes the container mounts."""
    names = {m.get("name") for m in container.get("volumeMounts") or []}
    return [v for v in (pod.get("spec") or {}).get("volumes") or [] if v.get("name") in names]


def mount_files(sources: Sources, env: Mapping[str, str]) -> Mounts:
    result = Mounts()
    volumes = {v["name"]: v for v in mounted_volumes(sources.pod, sources.container)}
    for mount in sources.container.get("volumeMounts") or []:
        volume = volumes.get(mount.get("name"))
        if volume is None:
            continue
        where = _relative(mount.get("mountPath", ""))
        content = _volume(sources, volume, result)
        if content is None:
            result.warnings.append(f"volume {volume['name']} at {mount.get('mountPath')} is "
                                   "not a ConfigMap, Secret, downward-API or projected volume: "
                                   "nothing written for it")
            continue
        sub = mount.get("subPath") or ""
        if not sub and mount.get("subPathExpr"):
            sub = expand(mount["subPathExpr"], lookup_in(env))
        if sub:
            inside = _relative(sub)
            picked = [(p, d, s) for p, d, s in content if p == inside or inside in p.parents]
            if not picked:
                raise ConfigError(f"subPath {sub!r} of volume {volume['name']} holds nothing")
            content = [(p.relative_to(inside), d, s) for p, d, s in picked]
        else:
            result.directories.append(where)
        for path, data, secret in content:
            target = where / path if str(path) != "." else where
            result.files.append(MountFile(target, data, secret))
    return result


def _relative(path: str) -> PurePosixPath:
    parts = PurePosixPath(path).parts
    relative = PurePosixPath(*[p for p in parts if p != "/"]) if parts else PurePosixPath(".")
    if ".." in relative.parts:
        raise ConfigError(f"path {path!r} leaves its volume ('..' is not allowed)")
    return relative


Content = list[tuple[PurePosixPath, bytes, bool]]


def _volume(sources: Sources, volume: Obj, result: Mounts) -> Content | None:
    if "projected" in volume:
        parts = volume["projected"].get("sources") or []
        if (str(volume.get("name", "")).startswith("kube-api-access-")
                and any("serviceAccountToken" in part for part in parts)):
            # The API credentials volume (kube-api-access-*, added by ServiceAccount admission):
            # its token is the pod's own and its CA ConfigMap may not be readable; the laptop
            # reaches the API with its own kubeconfig.
            result.warnings.append(f"volume {volume['name']} holds the pod's API credentials: "
                                   "left out")
            return []
        content: Content = []
        for source in volume["projected"].get("sources") or []:
            part = _source(sources, source, result)
            if part is None:
                kind = next(iter(source), "?")
                result.warnings.append(f"projected {kind} of volume {volume['name']} is not "
                                       "available outside the cluster: left out")
                continue
            content.extend(part)
        return content
    return _source(sources, volume, result)


def _source(sources: Sources, source: Obj, result: Mounts) -> Content | None:
    if "configMap" in source:
        ref = source["configMap"]
        obj = sources.configmaps.get(ref.get("name", ""))
        data = {k: str(v).encode() for k, v in ((obj or {}).get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in
                     ((obj or {}).get("binaryData") or {}).items()})
        return _items("configmap", ref.get("name", ""), obj is not None, data, ref, False)
    if "secret" in source:
        ref = source["secret"]
        name = ref.get("secretName") or ref.get("name", "")
        if sources.secrets is None:
            result.warnings.append(f"--no-secrets: the files of Secret {name} are left out")
            return []
        obj = sources.secrets.get(name)
        data = {k: base64.b64decode(v) for k, v in ((obj or {}).get("data") or {}).items()}
        return _items("secret", name, obj is not None, data, ref, True)
    if "downwardAPI" in source:
        return [(_relative(item["path"]), _downward(sources, item).encode(), False)
                for item in source["downwardAPI"].get("items") or []]
    return None


def _items(kind: str, name: str, exists: bool, data: Mapping[str, bytes], ref: Obj,
           secret: bool) -> Content:
    optional = bool(ref.get("optional"))
    if not exists:
        if optional:
            return []
        raise ConfigError(f'{kind} "{name}" not found (a volume of the pod)')
    items: Sequence[Obj] = ref.get("items") or [{"key": k, "path": k} for k in data]
    content: Content = []
    for item in items:
        if item["key"] not in data:
            if optional:
                continue
            raise ConfigError(f"{kind} {name} references non-existent key {item['key']} "
                              "(a volume of the pod)")
        content.append((_relative(item["path"]), data[item["key"]], secret))
    return content


def _downward(sources: Sources, item: Obj) -> str:
    if "fieldRef" in item:
        return downward.field_value(sources.pod, item["fieldRef"]["fieldPath"], whole_maps=True)
    ref = item["resourceFieldRef"]
    name = ref.get("containerName") or sources.container.get("name")
    containers = (sources.pod.get("spec") or {}).get("containers") or []
    container = next((c for c in containers if c.get("name") == name), None)
    if container is None:
        raise ConfigError(f"resourceFieldRef names container {name!r}, which the pod lacks")
    return downward.resource_value(container, ref["resource"], ref.get("divisor"),
                                   sources.allocatable)
