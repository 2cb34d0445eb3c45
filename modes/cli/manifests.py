"""The operator's manifests as shipped in the zipapp (the same files as manifests/), adapted to
the namespace and image the user asked for.
"""

from __future__ import annotations

import copy
from importlib import resources
from typing import Any

import yaml

from kubetunnel.errors import KubetunnelError

DEFAULT_NAMESPACE = "kubetunnel"
OPERATOR = "kubetunnel-operator"


def bundled() -> list[dict[str, Any]]:
    """Every object, in the kustomization's order (namespace and CRD first)."""
    folder = resources.files("kubetunnel.manifests")
    try:
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        objects: list[dict[str, Any]] = []
        for name in kustomization["resources"]:
            objects += [doc for doc in yaml.safe_load_all((folder / name).read_text()) if doc]
    except (OSError, KeyError, yaml.YAMLError) as exc:
        raise KubetunnelError(f"the bundled manifests are unreadable: {exc}") from exc
    return objects


def customized(
    namespace: str = DEFAULT_NAMESPACE, image: str | None = None
) -> list[dict[str, Any]]:
    """The bundled objects moved to ``namespace`` and running ``image``."""
    objects = copy.deepcopy(bundled())
    for obj in objects:
        meta = obj.setdefault("metadata", {})
        if obj["kind"] == "Namespace":
            meta["name"] = namespace
        elif meta.get("namespace"):
            meta["namespace"] = namespace
        for subject in obj.get("subjects", []):
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = namespace
        if obj["kind"] == "Deployment":
            pod = obj["spec"]["template"]["spec"]
            for container in pod["containers"]:
                if image:
                    container["image"] = image
                    # Tunnel pods run the same image as the operator that creates them.
                    env = container.setdefault("env", [])
                    env[:] = [e for e in env if e.get("name") != "KUBETUNNEL_AGENT_IMAGE"]
                    env.append({"name": "KUBETUNNEL_AGENT_IMAGE", "value": image})
                args = container.get("args", [])
                if "--namespace" in args:
                    args[args.index("--namespace") + 1] = namespace
    return objects


def describe(obj: dict[str, Any]) -> str:
    """kubectl's ``kind/name`` spelling, e.g. ``clusterrole.rbac.authorization.k8s.io/x``."""
    group = obj["apiVersion"].rpartition("/")[0]
    kind = obj["kind"].lower() + (f".{group}" if group else "")
    return f"{kind}/{obj['metadata']['name']}"


def to_yaml(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)
