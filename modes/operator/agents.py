"""Converging a record's owned objects (ServiceAccount, Secret, Deployment) and removing them.

Each ``ensure_*`` reads the object, creates it when missing and puts it back when it drifted;
each is idempotent, so a reconcile interrupted anywhere is simply run again.
"""

from __future__ import annotations

from typing import Any

from kubetunnel.errors import KubetunnelError
from kubetunnel.kube import MERGE_PATCH, ApiError, KubeClient, resource_path
from kubetunnel.logging import get_logger
from kubetunnel.records import TunnelRecord
from modes.operator import objects
from modes.operator.objects import RECORD_UID, SPEC_HASH, TUNNEL_LABEL, object_name, origin_name

log = get_logger(__name__)


def deployment_path(namespace: str, name: str | None = None) -> str:
    return resource_path("apps/v1", "deployments", namespace, name)


def secret_path(namespace: str, name: str | None = None) -> str:
    return resource_path("v1", "secrets", namespace, name)


def account_path(namespace: str, name: str | None = None) -> str:
    return resource_path("v1", "serviceaccounts", namespace, name)


class Held(KubetunnelError):
    """An object named ``kubetunnel-<service>`` belongs to another tunnel record: this record
    must not touch it (least of all replace the holder's token)."""

    def __init__(self, tunnel: str) -> None:
        super().__init__(f"the objects of this Service belong to tunnel {tunnel}")
        self.tunnel = tunnel


def check_holder(obj: dict[str, Any], record: TunnelRecord) -> None:
    labelled = ((obj.get("metadata") or {}).get("labels") or {}).get(TUNNEL_LABEL)
    if labelled is not None and labelled != record.name:
        raise Held(str(labelled))


async def get_or_none(client: KubeClient, path: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = await client.get_or_none(path)
    return found


async def delete_if_present(client: KubeClient, path: str) -> bool:
    try:
        await client.delete(path)
    except ApiError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def ours(obj: dict[str, Any], record: TunnelRecord) -> bool:
    meta = obj.get("metadata") or {}
    return (meta.get("annotations") or {}).get(RECORD_UID) == record.uid


async def ensure_account(client: KubeClient, record: TunnelRecord, owner: Any) -> None:
    desired = objects.service_account(record, owner)
    path = account_path(record.namespace, object_name(record))
    current = await get_or_none(client, path)
    if current is None:
        await _create(client, account_path(record.namespace), desired)
        return
    check_holder(current, record)
    if not ours(current, record) or current.get("automountServiceAccountToken") is not False:
        patch = {"metadata": {k: desired["metadata"][k]
                              for k in ("labels", "annotations", "ownerReferences")
                              if k in desired["metadata"]},
                 "automountServiceAccountToken": False}
        await client.patch(path, patch, MERGE_PATCH)


async def ensure_secret(client: KubeClient, record: TunnelRecord, owner: Any) -> str:
    """The tunnel's token, creating the Secret (with a fresh random token) when needed."""
    path = secret_path(record.namespace, object_name(record))
    current = await get_or_none(client, path)
    if current is not None:
        check_holder(current, record)
        token = objects.token_of(current)
        if token and ours(current, record):
            return token
        # A Secret left by an earlier record of the same name, or emptied by hand. There is no
        # update on Secrets in our RBAC (least privilege): replace it by delete + create.
        await delete_if_present(client, path)
    token = objects.new_token()
    await _create(client, secret_path(record.namespace), objects.secret(record, owner, token))
    log.info("tunnel.token_created", namespace=record.namespace, tunnel=record.name)
    return token


async def ensure_deployment(
    client: KubeClient, record: TunnelRecord, desired: dict[str, Any]
) -> None:
    """Create or converge the agent Deployment; :class:`Held` if another tunnel owns it."""
    path = deployment_path(record.namespace, object_name(record))
    current = await get_or_none(client, path)
    if current is None:
        await _create(client, deployment_path(record.namespace), desired)
        log.info("tunnel.deployment_created", namespace=record.namespace, tunnel=record.name,
                 deployment=object_name(record))
        return
    check_holder(current, record)
    if not ours(current, record):
        # Same tunnel name, earlier record (deleted and re-created): start from scratch.
        await delete_if_present(client, path)
        await _create(client, deployment_path(record.namespace), desired)
        return
    if _drifted(current, desired):
        patch = {
            "metadata": {"labels": desired["metadata"]["labels"],
                         "annotations": desired["metadata"]["annotations"]},
            "spec": desired["spec"],
        }
        await client.patch(path, patch, MERGE_PATCH)
        log.info("tunnel.deployment_converged", namespace=record.namespace, tunnel=record.name)


def _drifted(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    annotations = (current.get("metadata") or {}).get("annotations") or {}
    if annotations.get(SPEC_HASH) != desired["metadata"]["annotations"][SPEC_HASH]:
        return True
    spec = current.get("spec") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or [{}]
    want = desired["spec"]["template"]["spec"]["containers"][0]
    return bool(
        spec.get("replicas") != 1
        or containers[0].get("image") != want["image"]
        or containers[0].get("env") != want["env"]
        or containers[0].get("args") != want["args"]
    )


async def _create(client: KubeClient, path: str, obj: dict[str, Any]) -> None:
    try:
        await client.create(path, obj)
    except ApiError as exc:
        if exc.status != 409:
            raise
        # Created by a concurrent run (or by us before a crash): the next look converges it.
        raise KubetunnelError(f"{obj['kind']} {obj['metadata']['name']} appeared meanwhile; "
                              "reconciling again") from exc


async def remove_all(client: KubeClient, record: TunnelRecord) -> list[str]:
    """Delete the record's objects at once (garbage collection is only the safety net)."""
    name = object_name(record)
    removed = []
    for path in (deployment_path(record.namespace, name), secret_path(record.namespace, name),
                 account_path(record.namespace, name),
                 resource_path("v1", "services", record.namespace, origin_name(record))):
        current = await get_or_none(client, path)
        if current is None:
            continue
        labels = (current.get("metadata") or {}).get("labels") or {}
        if labels.get(TUNNEL_LABEL) != record.name:
            continue  # another tunnel's (a refused record must not delete the holder's)
        if await delete_if_present(client, path):
            removed.append(path)
    return removed
