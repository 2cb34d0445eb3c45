"""The environment Kubernetes gives a container, resolved against the API objects.

Order and precedence follow the kubelet: ``envFrom`` sources first, then ``env`` entries (later
ones win), with ``$(VAR)`` references expanded against what is already defined. On top of the
image's own environment the sandbox adds ``KUBETUNNEL_BIND_ADDRESS=<podIP>``, because every pod
shares the host's network stack here and would otherwise collide on 0.0.0.0; a container's own
``env`` may still override it.
"""

from __future__ import annotations

import base64
import os
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
Getter = Callable[[str, str], Awaitable[Obj | None]]  # (namespace, name) -> object or None

# The directory that holds the ``modes`` package (a checkout, site-packages, a shiv cache).
_ROOT = str(Path(__file__).parents[3])
_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
# What a process on this machine needs to run at all; the rest of the host's environment stays
# out, as it would from a container.
_HOST_PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR")


class ConfigError(Exception):
    """The container cannot start yet (CreateContainerConfigError), e.g. a missing Secret."""


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: unknown references stay as written, ``$$`` is ``$``."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REF.sub(sub, value)


def field_value(pod: Obj, path: str, node_name: str) -> str:
    """A downward-API ``fieldRef`` value."""
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName") or node_name,
        "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
        "status.podIPs": ",".join(p["ip"] for p in status.get("podIPs") or []),
        "status.hostIPs": ",".join(p["ip"] for p in status.get("hostIPs") or []),
    }
    if path in simple:
        return str(simple[path] or "")
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ConfigError(f"unsupported fieldRef path {path!r}")


def _decode(data: str) -> str:
    return os.fsdecode(base64.b64decode(data))


async def _key_ref(ref: Obj, kind: str, getter: Getter, namespace: str) -> str | None:
    name, key, optional = ref.get("name", ""), ref.get("key", ""), bool(ref.get("optional"))
    obj = await getter(namespace, name)
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'{kind.lower()} "{name}" not found')
    if kind == "Secret":
        raw = (obj.get("data") or {}).get(key)
        value = _decode(raw) if raw is not None else None
    else:
        value = (obj.get("data") or {}).get(key)
        if value is None and key in (obj.get("binaryData") or {}):
            value = _decode(obj["binaryData"][key])
    if value is None and not optional:
        raise ConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
    return value


async def _source(ref: Obj, kind: str, getter: Getter, namespace: str) -> dict[str, str]:
    name, optional = ref.get("name", ""), bool(ref.get("optional"))
    obj = await getter(namespace, name)
    if obj is None:
        if optional:
            return {}
        raise ConfigError(f'{kind.lower()} "{name}" not found')
    data = obj.get("data") or {}
    if kind == "Secret":
        return {k: _decode(v) for k, v in data.items()}
    return {**{k: _decode(v) for k, v in (obj.get("binaryData") or {}).items()}, **data}


class EnvResolver:
    """Resolves a container's env against Secrets and ConfigMaps fetched through the store."""

    def __init__(self, secrets: Getter, configmaps: Getter, node_name: str) -> None:
        self.secrets = secrets
        self.configmaps = configmaps
        self.node_name = node_name

    async def container_env(self, pod: Obj, container: Obj) -> dict[str, str]:
        """The variables Kubernetes defines (envFrom, then env), without the image's own."""
        namespace = pod["metadata"].get("namespace", "default")
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                found = await _source(
                    source["configMapRef"], "ConfigMap", self.configmaps, namespace
                )
            elif "secretRef" in source:
                found = await _source(source["secretRef"], "Secret", self.secrets, namespace)
            else:
                continue
            env.update({prefix + k: v for k, v in found.items()})
        for var in container.get("env") or []:
            value = await self._value(pod, container, var, env, namespace)
            if value is not None:
                env[var["name"]] = value
        return env

    async def _value(
        self, pod: Obj, container: Obj, var: Obj, env: dict[str, str], namespace: str
    ) -> str | None:
        source = var.get("valueFrom")
        if not source:
            return expand(str(var.get("value", "")), env)
        if "fieldRef" in source:
            return field_value(pod, source["fieldRef"].get("fieldPath", ""), self.node_name)
        if "secretKeyRef" in source:
            return await _key_ref(source["secretKeyRef"], "Secret", self.secrets, namespace)
        if "configMapKeyRef" in source:
            return await _key_ref(
                source["configMapKeyRef"], "ConfigMap", self.configmaps, namespace
            )
        if "resourceFieldRef" in source:
            return _resource_field(container, source["resourceFieldRef"])
        raise ConfigError(f"unsupported valueFrom in env {var.get('name')!r}")


def _resource_field(container: Obj, ref: Obj) -> str:
    # Without cgroups there are no limits to report; the node's capacity is what a container
    # without limits sees, as the kubelet does.
    section, _, resource = str(ref.get("resource", "")).partition(".")
    declared = ((container.get("resources") or {}).get(section) or {}).get(resource)
    if declared is not None:
        return str(declared)
    if resource == "cpu":
        return str(os.cpu_count() or 1)
    if resource == "memory":
        return str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return "0"


def base_env(python_path: list[str] | None = None) -> dict[str, str]:
    """The "image" environment: what the host process needs to run this package's code."""
    env = {k: os.environ[k] for k in _HOST_PASSTHROUGH if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    if python_path:
        env["PYTHONPATH"] = os.pathsep.join(python_path)
    # Output goes to a pipe; unbuffered so that `kubectl logs -f` shows lines as they happen.
    env["PYTHONUNBUFFERED"] = "1"
    return env


def python_path() -> list[str]:
    """The import path a KubeTunnel pod needs to run this very code.

    The directory holding the ``modes`` package comes first; then this process's path minus
    the directory of a script it was started as (a script's neighbours, such as a file named
    like a standard module, must not shadow anything in the pod).
    """
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    # __main__.__file__ and sys.path entries are absolute since Python 3.9 (except "", the
    # current directory, which is left out too); no filesystem call, this runs in the loop.
    script_dir = str(Path(main).parent) if main else None
    rest = [p for p in sys.path if p and p != _ROOT and p != script_dir]
    return [_ROOT, *rest]
