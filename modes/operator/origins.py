"""The origin Service of a record (``kubetunnel-<service>-origin``): the Service's own pods, for
the agent to fall back to.

Why a Service and not the agent reading EndpointSlices: the agent has no API access at all (its
ServiceAccount has no permissions and no token), and a ClusterIP keeps following the pods'
readiness through kube-proxy without the agent knowing anything about the cluster. Its selector
follows the application Service's own (the annotation's original while switched), so a person's
edit of the selector while not tunneled is followed too.
"""

from __future__ import annotations

from typing import Any

from kubetunnel.kube import MERGE_PATCH, ApiError, KubeClient, resource_path
from kubetunnel.logging import get_logger
from kubetunnel.records import TunnelRecord
from modes.operator import agents
from modes.operator.objects import origin_name

log = get_logger(__name__)


def origin_path(namespace: str, name: str | None = None) -> str:
    return resource_path("v1", "services", namespace, name)


async def ensure_origin(client: KubeClient, record: TunnelRecord, desired: dict[str, Any]
                        ) -> str | None:
    """Create or converge the origin Service; its ClusterIP (None if it has none yet)."""
    path = origin_path(record.namespace, origin_name(record))
    current = await agents.get_or_none(client, path)
    if current is not None:
        agents.check_holder(current, record)
        if not agents.ours(current, record):
            await agents.delete_if_present(client, path)
            current = None
    if current is None:
        try:
            current = await client.create(origin_path(record.namespace), desired)
        except ApiError as exc:
            if exc.status != 409:
                raise
            current = await client.get(path)  # made by a run just before ours
        log.info("tunnel.origin_created", namespace=record.namespace, tunnel=record.name,
                 service=origin_name(record))
    elif _drifted(current, desired):
        patch = {"spec": {"selector": desired["spec"]["selector"],
                          "ports": desired["spec"]["ports"]}}
        current = await client.patch(path, patch, MERGE_PATCH)
        log.info("tunnel.origin_converged", namespace=record.namespace, tunnel=record.name)
    ip = ((current or {}).get("spec") or {}).get("clusterIP")
    return str(ip) if ip and ip != "None" else None


def _drifted(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    spec = current.get("spec") or {}
    want = desired["spec"]
    have_ports = [{k: p.get(k) for k in ("name", "port", "targetPort")}
                  for p in spec.get("ports") or []]
    want_ports = [{k: p.get(k) for k in ("name", "port", "targetPort")} for p in want["ports"]]
    return bool(spec.get("selector") != want["selector"] or have_ports != want_ports)
