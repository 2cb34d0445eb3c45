"""Benchmark of the operator on the sandbox API server (run: ``python bench/operator.py``).

The operator runs as its own process (``kubetunnel operator``, crd store), exactly as deployed,
so its RSS is its own. Until the sandbox runs pods itself, this script plays kubelet: it creates
each agent pod and reports it Ready through pods/status.

Measures:
- record created -> agent Deployment exists (p50/p99), seen through a watch;
- connected report -> Service selector switched (p50/p99), seen through a watch;
- 500 records (and their Services) created while no operator runs, then the operator started:
  time until every record is reconciled (Deployment exists, status observed), startup included;
- operator RSS with those records.

Targets: switch within 100 ms p50 of the report; 500 records in under 30 s; RSS under 150 MiB.
Ends with ``RESULT switch_p50_ms=<n> reconcile_500_s=<n> rss_mib=<n>``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from kubetunnel.kube import KubeAccess, KubeClient
from kubetunnel.plugins import StoreSettings
from kubetunnel.records import PortMapping, TunnelRecord
from kubetunnel.stores.crd import CrdStore
from modes.sandbox.testing import running_sandbox

ROOT = pathlib.Path(__file__).resolve().parent.parent
TUNNEL_LABEL = "kubetunnel.dev/tunnel"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class OperatorProcess:
    """``kubetunnel operator`` in a child process; its stderr is drained so it never blocks."""

    def __init__(self, kubeconfig: pathlib.Path, namespaces: list[str]) -> None:
        self.kubeconfig, self.namespaces = kubeconfig, namespaces
        self.proc: asyncio.subprocess.Process | None = None
        self.api_port = 0
        self.synced = asyncio.Event()
        self._drain: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "modes", "operator", "--kubeconfig", str(self.kubeconfig),
            "--store", "crd", "--watch-namespaces", ",".join(self.namespaces),
            "--api-port", "0", "--health-port", "0", "--log-format", "json",
            cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "KUBETUNNEL_BIND_ADDRESS": "127.0.0.1", "PYTHONPATH": str(ROOT)},
        )
        serving = asyncio.Event()
        self._drain = asyncio.create_task(self._read(serving))
        await asyncio.wait_for(serving.wait(), 30)

    async def _read(self, serving: asyncio.Event) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == "operator.serving":
                    self.api_port = int(event["api_port"])
                    serving.set()
                elif event.get("event") == "operator.synced":
                    self.synced.set()

    def rss_mib(self) -> float:
        assert self.proc is not None
        status = pathlib.Path(f"/proc/{self.proc.pid}/status").read_text()
        kib = next(int(line.split()[1]) for line in status.splitlines()
                   if line.startswith("VmRSS:"))
        return kib / 1024

    async def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        await asyncio.wait_for(self.proc.wait(), 20)
        if self._drain is not None:
            await self._drain
        self.proc = None


def record(namespace: str, name: str) -> TunnelRecord:
    return TunnelRecord(namespace=namespace, name=name, service=name, client="bench@host",
                        ports=(PortMapping(service_port=80, local_port=8080, target_port=8080),))


async def create_namespace(client: KubeClient, name: str) -> None:
    await client.create("/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


async def create_service(client: KubeClient, namespace: str, name: str) -> None:
    await client.create(f"/api/v1/namespaces/{namespace}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}})


async def agent_pod_ready(client: KubeClient, namespace: str, deployment: str) -> None:
    """Play ReplicaSet controller and kubelet: one pod of the Deployment, Ready."""
    dep = await client.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}")
    template = dep["spec"]["template"]
    pod = await client.create(f"/api/v1/namespaces/{namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{deployment}-0", "labels": template["metadata"]["labels"]},
        "spec": template["spec"]})
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    pod["status"] = {"phase": "Running", "podIP": "127.0.0.99", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": stamp}]}
    await client.replace(f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}/status",
                         pod)


async def first_seen(client: KubeClient, path: str, match: Any,
                     seen: dict[str, float], changed: asyncio.Event) -> None:
    """Record when each object first satisfies ``match`` (a watch, so no polling delay)."""
    async for event in client.watch(path, timeout_seconds=600):
        obj = event.get("object") or {}
        name = (obj.get("metadata") or {}).get("name")
        if name and name not in seen and match(obj):
            seen[name] = time.perf_counter()
            changed.set()


async def wait_for(seen: dict[str, float], changed: asyncio.Event, names: set[str],
                   timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not names <= seen.keys():
            changed.clear()
            await changed.wait()


@contextlib.asynccontextmanager
async def watching(client: KubeClient, path: str, match: Any
                   ) -> AsyncIterator[tuple[dict[str, float], asyncio.Event]]:
    seen: dict[str, float] = {}
    changed = asyncio.Event()
    task = asyncio.create_task(first_seen(client, path, match, seen, changed))
    try:
        yield seen, changed
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def latency(client: KubeClient, store: CrdStore, op: OperatorProcess, namespace: str,
                  samples: int) -> tuple[list[float], list[float]]:
    created: list[float] = []
    switched: list[float] = []
    deployments = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    services = f"/api/v1/namespaces/{namespace}/services"
    tunneled = lambda obj: TUNNEL_LABEL in ((obj.get("spec") or {}).get("selector") or {})  # noqa: E731
    async with watching(client, deployments, lambda obj: True) as (deps, dep_changed), \
            watching(client, services, tunneled) as (svcs, svc_changed), \
            aiohttp.ClientSession() as http:
        for i in range(samples):
            name = f"lat{i:03d}"
            await create_service(client, namespace, name)
            start = time.perf_counter()
            await store.create(record(namespace, name))
            await wait_for(deps, dep_changed, {f"kubetunnel-{name}"}, 20)
            created.append(deps[f"kubetunnel-{name}"] - start)
            await agent_pod_ready(client, namespace, f"kubetunnel-{name}")
            # Polling, as a client of the store would; not part of any measured interval.
            while (current := await store.get(namespace, name)) is None or \
                    current.status.phase != "Ready":  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            secret = await client.get(f"/api/v1/namespaces/{namespace}/secrets/kubetunnel-{name}")
            token = base64.b64decode(secret["data"]["token"]).decode()
            url = (f"http://127.0.0.1:{op.api_port}/v1/namespaces/{namespace}/tunnels/{name}"
                   "/status")
            start = time.perf_counter()
            async with http.post(url, json={"connected": True, "reason": "bench"},
                                 headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 202, await resp.text()
            await wait_for(svcs, svc_changed, {name}, 20)
            switched.append(svcs[name] - start)
    return created, switched


async def scale(client: KubeClient, store: CrdStore, op: OperatorProcess, namespace: str,
                count: int) -> tuple[float, float, float]:
    names = [f"s{i:04d}" for i in range(count)]
    gate = asyncio.Semaphore(32)

    async def one(name: str) -> None:
        async with gate:
            await create_service(client, namespace, name)
            await store.create(record(namespace, name))

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in names))
    create_s = time.perf_counter() - started
    deployments = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    async with watching(client, deployments, lambda obj: True) as (deps, changed):
        started = time.perf_counter()
        await op.start()
        await wait_for(deps, changed, {f"kubetunnel-{n}" for n in names}, 120)
        while True:  # every record's status written too
            records = await store.list(namespace)
            if len(records) == count and all(r.status.observed_generation for r in records):
                break
            await asyncio.sleep(0.05)
        reconcile_s = time.perf_counter() - started
    await asyncio.sleep(1.0)  # let the operator settle before reading its memory
    return create_s, reconcile_s, op.rss_mib()


async def run(kubeconfig: pathlib.Path, samples: int, count: int) -> dict[str, float]:
    access = KubeAccess.load(str(kubeconfig))
    async with KubeClient(access) as client:
        store = CrdStore(StoreSettings(kube=client))
        await create_namespace(client, "bench-lat")
        await create_namespace(client, "bench-scale")
        op = OperatorProcess(kubeconfig, ["bench-lat", "bench-scale"])
        try:
            await op.start()
            await asyncio.wait_for(op.synced.wait(), 30)
            created, switched = await latency(client, store, op, "bench-lat", samples)
            await op.stop()
            create_s, reconcile_s, rss = await scale(client, store, op, "bench-scale", count)
        finally:
            await op.stop()
    return {
        "create_p50_ms": percentile(created, 0.5) * 1000,
        "create_p99_ms": percentile(created, 0.99) * 1000,
        "switch_p50_ms": percentile(switched, 0.5) * 1000,
        "switch_p99_ms": percentile(switched, 0.99) * 1000,
        "setup_s": create_s,
        "reconcile_s": reconcile_s,
        "rss_mib": rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40, help="latency samples (records)")
    parser.add_argument("--records", type=int, default=500, help="records for the scale run")
    args = parser.parse_args()
    started = time.perf_counter()
    # API server only: the benchmark plays the kubelet (agent pod readiness) itself.
    with running_sandbox(extra_args=("--no-node",)) as sandbox:
        subprocess.run(
            ["kubectl", "--kubeconfig", str(sandbox.kubeconfig), "apply",
             "-f", str(ROOT / "manifests" / "crd.yaml"),
             "-f", str(ROOT / "manifests" / "namespace.yaml"),
             "-f", str(ROOT / "manifests" / "service.yaml")],
            check=True, capture_output=True, timeout=60)
        r = asyncio.run(run(sandbox.kubeconfig, args.samples, args.records))
    n = args.records
    print(f"{'measure':<44}{'value':>12}  target")
    print(f"{'record -> Deployment p50 / p99 (ms)':<44}"
          f"{r['create_p50_ms']:>6.1f} / {r['create_p99_ms']:.1f}")
    print(f"{'report -> selector switched p50 / p99 (ms)':<44}"
          f"{r['switch_p50_ms']:>6.1f} / {r['switch_p99_ms']:.1f}  p50 < 100")
    print(f"{f'{n} records + Services created (s)':<44}{r['setup_s']:>12.2f}")
    print(f"{f'{n} records reconciled from scratch (s)':<44}{r['reconcile_s']:>12.2f}  < 30")
    print(f"{f'operator RSS at {n} records (MiB)':<44}{r['rss_mib']:>12.1f}  < 150")
    print(f"{'whole run (s)':<44}{time.perf_counter() - started:>12.1f}  < 35")
    print(f"RESULT switch_p50_ms={r['switch_p50_ms']:.1f} reconcile_500_s={r['reconcile_s']:.2f} "
          f"rss_mib={r['rss_mib']:.1f}")


if __name__ == "__main__":
    main()
