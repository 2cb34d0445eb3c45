"""A container's environment, resolved as the kubelet resolves it before starting the container.

Order and precedence (kubelet ``makeEnvironmentVariables``):

1. ``envFrom`` sources in order; each key gets the source's ``prefix``; a key that is not a
   valid variable name is skipped with a warning; a later source overwrites an earlier one.
2. ``env`` entries in order, overwriting what ``envFrom`` gave. A literal ``value`` is expanded
   (``$(VAR)``) against what is defined so far, then the Service variables; a ``valueFrom``
   value is taken as it is. An ``optional`` reference that is missing sets nothing (an earlier
   value of the same name stays).
3. The Service variables, for names neither step defined.

A missing non-optional ConfigMap, Secret or key raises :class:`ConfigError`, as the kubelet's
CreateContainerConfigError stops the container. Pure functions over API objects (dicts).
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubetunnel.errors import KubetunnelError
from modes.cli import downward
from modes.cli.expansion import expand, lookup_in

Obj = Mapping[str, Any]

_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
# The API server's own Service: its variables are in every pod, service links or not.
MASTER_SERVICE = ("default", "kubernetes")


class ConfigError(KubetunnelError):
    """What would make the kubelet refuse to start the container (CreateContainerConfigError)."""


@dataclass(frozen=True)
class Sources:
    """Everything resolution reads, fetched beforehand (see modes/cli/workloads.py)."""

    namespace: str
    pod: Obj
    container: Obj
    configmaps: Mapping[str, Obj | None]  # name -> object; None: it does not exist
    secrets: Mapping[str, Obj | None] | None  # None: not read (--no-secrets)
    services: Sequence[Obj] = ()
    allocatable: Mapping[str, str] | None = None  # of the pod's node, when readable


@dataclass
class Resolved:
    env: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    # Names whose value came from a Secret: never logged, never shown in a warning.
    from_secrets: set[str] = field(default_factory=set)


def valid_env_name(name: str) -> bool:
    """The API's rule for variable names (``IsEnvVarName``): no '.', '..' or '..' prefix."""
    return bool(_ENV_NAME.fullmatch(name)) and name != "." and not name.startswith("..")


def env_name_of(service: str) -> str:
    return service.upper().replace("-", "_")


def service_env(services: Sequence[Obj], namespace: str, enable_links: bool = True,
                addresses: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables Kubernetes defines for Services: ``<NAME>_SERVICE_HOST``/``_PORT`` (and
    ``_PORT_<PORTNAME>``) and the Docker-link ones (``<NAME>_PORT``, ``<NAME>_PORT_<n>_<PROTO>``
    and its ``_PROTO``/``_PORT``/``_ADDR``). Services of ``namespace`` with a ClusterIP, unless
    ``enableServiceLinks`` is false; ``kubernetes`` of ``default`` always. ``addresses`` maps a
    Service name to the address to use instead of its ClusterIP (``--forward``'s)."""
    chosen: dict[str, Obj] = {}
    for svc in services:
        meta, spec = svc.get("metadata", {}), svc.get("spec", {})
        if spec.get("clusterIP") in (None, "", "None"):
            continue
        ns, name = meta.get("namespace"), meta.get("name", "")
        if (ns, name) == MASTER_SERVICE:
            chosen.setdefault(name, svc)
        elif ns == namespace and enable_links:
            chosen[name] = svc  # a namespace's own Service of that name wins over the master
    env: dict[str, str] = {}
    for name in sorted(chosen):
        spec = chosen[name]["spec"]
        own = chosen[name]["metadata"].get("namespace") == namespace
        ip = (addresses or {}).get(name) if own else None
        env.update(_one_service(env_name_of(name), ip or spec["clusterIP"], spec.get("ports")
                                or []))
    return env


def _one_service(prefix: str, ip: str, ports: Sequence[Obj]) -> dict[str, str]:
    env = {f"{prefix}_SERVICE_HOST": ip}
    if ports:
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
    for port in ports:
        if port.get("name"):
            env[f"{prefix}_SERVICE_PORT_{env_name_of(port['name'])}"] = str(port["port"])
    host = f"[{ip}]" if ":" in ip else ip
    for index, port in enumerate(ports):
        proto = str(port.get("protocol") or "TCP").lower()
        url = f"{proto}://{host}:{port['port']}"
        if index == 0:
            env[f"{prefix}_PORT"] = url  # Docker links single out the first port
        each = f"{prefix}_PORT_{port['port']}_{proto.upper()}"
        env.update({each: url, f"{each}_PROTO": proto, f"{each}_PORT": str(port["port"]),
                    f"{each}_ADDR": ip})
    return env


def decode(data: str) -> str:
    # Go's string([]byte): bytes as they are; surrogateescape keeps non-UTF-8 bytes for exec.
    return os.fsdecode(base64.b64decode(data))


def resolve(sources: Sources, service_vars: Mapping[str, str]) -> Resolved:
    result = Resolved({})
    env = result.env
    ns, container = sources.namespace, sources.container
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        kind, ref = ("Secret", source["secretRef"]) if "secretRef" in source else (
            "ConfigMap", source.get("configMapRef") or {})
        values = _whole(sources, kind, ref, result)
        if values is None:
            continue
        invalid = sorted(prefix + key for key in values if not valid_env_name(prefix + key))
        for key, value in values.items():
            if valid_env_name(prefix + key):
                env[prefix + key] = value
                _mark(result, prefix + key, kind == "Secret")
        if invalid:
            result.warnings.append(
                f"keys [{', '.join(invalid)}] from the envFrom {kind} {ns}/{ref.get('name')} "
                "were skipped: they are not valid environment variable names")
    lookup = lookup_in(env, service_vars)
    for var in container.get("env") or []:
        name = var["name"]
        value_from = var.get("valueFrom")
        if var.get("value") or not value_from:
            env[name] = expand(str(var.get("value") or ""), lookup)
            _mark(result, name, False)
            continue
        found = _value_from(sources, container, name, value_from, result)
        if found is not None:
            env[name] = found
    for name, value in service_vars.items():
        env.setdefault(name, value)
    return result


def _mark(result: Resolved, name: str, secret: bool) -> None:
    if secret:
        result.from_secrets.add(name)
    else:
        result.from_secrets.discard(name)


def _whole(sources: Sources, kind: str, ref: Obj, result: Resolved) -> dict[str, str] | None:
    name, optional = ref.get("name", ""), bool(ref.get("optional"))
    if kind == "Secret" and sources.secrets is None:
        result.warnings.append(f"--no-secrets: the variables from Secret {name} are left out")
        return None
    obj = (sources.secrets if kind == "Secret" else sources.configmaps or {}).get(name)  # type: ignore[union-attr]
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'{kind.lower()} "{name}" not found (envFrom of container '
                          f'{sources.container.get("name")!r})')
    if kind == "Secret":
        return {k: decode(v) for k, v in (obj.get("data") or {}).items()}
    return dict(obj.get("data") or {})


def _value_from(sources: Sources, container: Obj, name: str, value_from: Obj,
                result: Resolved) -> str | None:
    if "fieldRef" in value_from:
        return downward.field_value(sources.pod, value_from["fieldRef"]["fieldPath"])
    if "resourceFieldRef" in value_from:
        ref = value_from["resourceFieldRef"]
        target = _container(sources.pod, ref.get("containerName") or container.get("name"))
        try:
            return downward.resource_value(target, ref["resource"], ref.get("divisor"),
                                           sources.allocatable)
        except downward.MissingAllocatable as exc:
            result.warnings.append(f"{name} is left out: {exc}")
            return None
    kind, ref = ("Secret", value_from["secretKeyRef"]) if "secretKeyRef" in value_from else (
        "ConfigMap", value_from.get("configMapKeyRef") or {})
    obj_name, key, optional = ref.get("name", ""), ref.get("key", ""), bool(ref.get("optional"))
    if kind == "Secret" and sources.secrets is None:
        result.warnings.append(f"--no-secrets: {name} (from Secret {obj_name}) is left out")
        return None
    found = (sources.secrets if kind == "Secret" else sources.configmaps).get(obj_name)  # type: ignore[union-attr]
    if found is None:
        if optional:
            return None
        raise ConfigError(f'{kind.lower()} "{obj_name}" not found (for {name} of container '
                          f'{container.get("name")!r})')
    data = found.get("data") or {}
    if key not in data:
        if optional:
            return None
        raise ConfigError(f"couldn't find key {key} in {kind} {sources.namespace}/{obj_name} "
                          f"(for {name} of container {container.get('name')!r})")
    _mark(result, name, kind == "Secret")
    return decode(data[key]) if kind == "Secret" else str(data[key])


def _container(pod: Obj, name: str | None) -> Obj:
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == name:
            return dict(container)
    raise ConfigError(f"resourceFieldRef names container {name!r}, which the pod does not have")


def referenced(container: Obj, volumes: Sequence[Obj] = ()) -> tuple[set[str], set[str]]:
    """(ConfigMap names, Secret names) that the container's environment and ``volumes`` read."""
    configmaps: set[str] = set()
    secrets: set[str] = set()
    for source in container.get("envFrom") or []:
        if "secretRef" in source:
            secrets.add(source["secretRef"].get("name", ""))
        elif "configMapRef" in source:
            configmaps.add(source["configMapRef"].get("name", ""))
    for var in container.get("env") or []:
        value_from = var.get("valueFrom") or {}
        if "secretKeyRef" in value_from:
            secrets.add(value_from["secretKeyRef"].get("name", ""))
        elif "configMapKeyRef" in value_from:
            configmaps.add(value_from["configMapKeyRef"].get("name", ""))
    for volume in volumes:
        projected = (volume.get("projected") or {}).get("sources") or []
        for source in [volume, *projected]:
            if "configMap" in source:
                configmaps.add(source["configMap"].get("name", ""))
            if "secret" in source:
                secrets.add(source["secret"].get("secretName") or source["secret"].get("name", ""))
    return configmaps, secrets
