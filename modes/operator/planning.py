"""What the agent Deployment of a record should be: its image, its ports (named target ports
resolved against the Service's own pods) and the operator URL it reports to.

The URL is the operator Service's ClusterIP, not its DNS name: the egress policy of
docs/network.md then needs no DNS rule. It is read once per process.
"""

from __future__ import annotations

from typing import Any

from kubetunnel.errors import KubetunnelError
from kubetunnel.kube import KubeClient
from kubetunnel.records import TunnelRecord
from modes.operator import agents, objects, selectors
from modes.operator.settings import OperatorSettings


class Planner:
    def __init__(self, client: KubeClient, settings: OperatorSettings) -> None:
        self.client, self.settings = client, settings
        self._operator_url: str | None = settings.operator_url

    async def deployment(self, record: TunnelRecord, service: selectors.ServiceView,
                         owner: dict[str, Any] | None, origin_address: str | None = None,
                         *, shared: bool = False) -> dict[str, Any]:
        targets = await self.target_ports(record, service)
        return objects.deployment(
            record, owner, image=self.settings.agent_image,
            operator_url=await self.operator_url(), ports=objects.AgentPorts.plan(targets),
            origin_address=origin_address, shared=shared,
        )

    async def origin(self, record: TunnelRecord, service: selectors.ServiceView,
                     owner: dict[str, Any] | None) -> dict[str, Any] | None:
        """The origin Service as it should be; None when the original selector is unknown."""
        selector = service.original if service.tunnel == record.name else service.selector
        if not selector or selector == objects.tunnel_labels(record):
            return None
        targets = await self.target_ports(record, service)
        by_number: dict[int, int | str] = {}
        for (number, name), mapping in zip(targets, record.ports, strict=True):
            by_number.setdefault(number, name or int(mapping.target_port or number))
        return objects.origin_service(record, owner, selector, objects.AgentPorts.plan(targets),
                                      by_number)

    async def target_ports(self, record: TunnelRecord, service: selectors.ServiceView
                           ) -> list[tuple[int, str | None]]:
        named: dict[str, int] | None = None
        ports: list[tuple[int, str | None]] = []
        for mapping in record.ports:
            target = mapping.target_port
            if target is None or isinstance(target, int) or str(target).isdigit():
                ports.append((int(target or mapping.service_port), None))
                continue
            if named is None:
                named = await self.named_ports(record, service)
            ports.append((named.get(str(target), mapping.service_port), str(target)))
        return ports

    async def named_ports(self, record: TunnelRecord, service: selectors.ServiceView
                          ) -> dict[str, int]:
        """Container port numbers by name, from the pods the Service selects on its own."""
        selector = service.original if service.tunnel == record.name else service.selector
        if not selector:
            return {}
        query = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        listing = await self.client.get(f"/api/v1/namespaces/{record.namespace}/pods",
                                        labelSelector=query)
        found: dict[str, int] = {}
        for pod in listing.get("items") or []:
            for container in (pod.get("spec") or {}).get("containers") or []:
                for port in container.get("ports") or []:
                    if port.get("name"):
                        found.setdefault(port["name"], int(port["containerPort"]))
        return found

    async def operator_url(self) -> str:
        if self._operator_url is None:
            path = selectors.service_path(self.settings.namespace, self.settings.operator_service)
            obj = await agents.get_or_none(self.client, path)
            ip = ((obj or {}).get("spec") or {}).get("clusterIP")
            if not ip or ip == "None":
                raise KubetunnelError(
                    f"the operator Service {self.settings.namespace}/"
                    f"{self.settings.operator_service} is missing or has no ClusterIP; agents "
                    "could not report (reinstall with `kubetunnel cli install`)")
            self._operator_url = f"http://{ip}:80"
        return self._operator_url
