"""The process node as a real API server sees a kubelet: its Node object and its Lease.

The kubelet registers its Node (addresses, capacity, where its API listens), keeps a Lease in
``kube-node-lease`` renewed (the heartbeat the node lifecycle controller reads: without it the
node turns NotReady and its pods are evicted), and refreshes its Ready condition now and then.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import platform
from pathlib import Path

import aiohttp

from kubetunnel._version import __version__
from kubetunnel.logging import get_logger
from modes.sandbox.controlplane.binary import KUBERNETES_VERSION
from modes.sandbox.controlplane.httpstore import ApiStatusError, HttpStore

log = get_logger(__name__)
LEASE_SECONDS = 40
RENEW_SECONDS = 10.0
STATUS_SECONDS = 60.0


def _now(micro: bool = False) -> str:
    moment = datetime.datetime.now(datetime.UTC)
    if micro:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _memory_kib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 4 * 2**20


def node_status(name: str, address: str, kubelet_port: int, started: str) -> dict[str, object]:
    resources = {"cpu": str(os.cpu_count() or 1), "memory": f"{_memory_kib()}Ki",
                 "pods": "110", "ephemeral-storage": "10Gi"}
    now = _now()

    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {"type": kind, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": started}

    return {
        "addresses": [{"type": "InternalIP", "address": address},
                      {"type": "Hostname", "address": name}],
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory",
                      "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure",
                      "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID",
                      "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": platform.release(), "osImage": "kubetunnel sandbox process node",
            "containerRuntimeVersion": f"kubetunnel-process://{__version__}",
            "kubeletVersion": KUBERNETES_VERSION, "kubeProxyVersion": KUBERNETES_VERSION,
            "operatingSystem": "linux", "architecture": _arch(),
        },
    }


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


class NodeRegistration:
    """``await register()`` once, then ``run()`` renews the Lease until cancelled."""

    def __init__(self, store: HttpStore, name: str, address: str, kubelet_port: int) -> None:
        self.store = store
        self.name = name
        self.address = address
        self.kubelet_port = kubelet_port
        self.started = _now()
        self.uid = ""

    def _status(self) -> dict[str, object]:
        return node_status(self.name, self.address, self.kubelet_port, self.started)

    async def register(self) -> None:
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": _arch()}
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.name, "labels": labels}, "spec": {}}
        try:
            node = await self.store.request("POST", "/api/v1/nodes", body=body)
        except ApiStatusError as exc:
            if exc.status != 409:
                raise
            node = await self.store.request("GET", f"/api/v1/nodes/{self.name}")
        self.uid = str(((node or {}).get("metadata") or {}).get("uid", ""))
        await self._write_status()
        await self._renew()
        log.info("node.registered", node=self.name, address=self.address,
                 kubelet_port=self.kubelet_port)

    async def _write_status(self) -> None:
        await self.store.request("PATCH", f"/api/v1/nodes/{self.name}/status",
                                 body={"status": self._status()},
                                 content_type="application/merge-patch+json")

    async def _renew(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": _now(micro=True)}
        found = await self.store.request("PATCH", path, body={"spec": spec},
                                         content_type="application/merge-patch+json")
        if found is None:
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self.uid}
            await self.store.request(
                "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                body={"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                      "metadata": {"name": self.name, "namespace": "kube-node-lease",
                                   "ownerReferences": [owner]},
                      "spec": spec})

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_status = loop.time() + STATUS_SECONDS
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                await self._renew()
                if loop.time() >= next_status:
                    await self._write_status()
                    next_status = loop.time() + STATUS_SECONDS
            except (ApiStatusError, aiohttp.ClientError, OSError) as exc:
                log.warning("node.heartbeat_failed", node=self.name, error=str(exc))
