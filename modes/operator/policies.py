"""``--manage-network-policies``: the policies of docs/network.md follow the active tunnels.

When the first tunnel of a namespace starts, that namespace gets its egress policy and joins the
operator's ingress policy; when its last tunnel ends, both go. The set of namespaces the ingress
policy last allowed is read back from the policy itself, so a namespace whose tunnels ended
while the operator was down is cleaned up on the next start without listing every namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from kubetunnel.errors import KubetunnelError
from kubetunnel.kube import ApiError, KubeClient
from kubetunnel.logging import get_logger
from kubetunnel.plugins import PolicyRequest
from kubetunnel.policies import EGRESS_POLICY_NAME, INGRESS_POLICY_NAME
from kubetunnel.records import TunnelRecord
from kubetunnel.registry import get_registry

log = get_logger(__name__)

NAMESPACE_LABEL = "kubernetes.io/metadata.name"
FIELD_MANAGER = "kubetunnel-operator"


def _path(namespace: str, name: str) -> str:
    return f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}"


class PolicyManager:
    def __init__(self, client: KubeClient, operator_namespace: str,
                 records: Callable[[], Iterable[TunnelRecord]], interval: float) -> None:
        self.client = client
        self.operator_namespace = operator_namespace
        self.records = records
        self.interval = interval
        self.renderer: Any = None
        self.applied: set[str] | None = None
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """A record changed: look again soon."""
        self._wake.set()

    def wanted(self) -> set[str]:
        return {r.namespace for r in self.records() if not r.deleting}

    async def run(self) -> None:
        # Plugin discovery reads distribution metadata from disk: not on the event loop.
        self.renderer = await asyncio.to_thread(
            get_registry().create, "policy", "networkpolicy", None)
        while True:
            self._wake.clear()
            try:
                await self.sync()
            except KubetunnelError as exc:
                log.warning("policies.sync_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def sync(self) -> None:
        wanted = self.wanted()
        if self.applied is None:
            self.applied = await self._allowed_by_ingress()
        if wanted == self.applied:
            return
        if wanted:
            request = PolicyRequest(self.operator_namespace, tuple(sorted(wanted)))
            for obj in self.renderer.render(request):
                await self.client.apply(obj, field_manager=FIELD_MANAGER)
        else:
            await self._delete(self.operator_namespace, INGRESS_POLICY_NAME)
        for namespace in sorted(self.applied - wanted):
            await self._delete(namespace, EGRESS_POLICY_NAME)
        log.info("policies.synced", namespaces=sorted(wanted),
                 removed=sorted(self.applied - wanted))
        self.applied = wanted

    async def _allowed_by_ingress(self) -> set[str]:
        policy: dict[str, Any] | None = await self.client.get_or_none(
            _path(self.operator_namespace, INGRESS_POLICY_NAME))
        if policy is None:
            return set()
        found = set()
        for rule in policy.get("spec", {}).get("ingress", []):
            for peer in rule.get("from", []):
                labels = (peer.get("namespaceSelector") or {}).get("matchLabels") or {}
                if NAMESPACE_LABEL in labels:
                    found.add(str(labels[NAMESPACE_LABEL]))
        return found

    async def _delete(self, namespace: str, name: str) -> None:
        try:
            await self.client.delete(_path(namespace, name))
        except ApiError as exc:
            if exc.status != 404:
                raise
