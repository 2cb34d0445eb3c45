"""Benchmark of the sandbox node: pod start to Ready, and pod port-forward throughput.

The sandbox API server (``modes.sandbox.server.Sandbox``) runs in this process on a thread,
with the node switched on exactly as ``sandbox up`` does (``modes.sandbox.node.wiring``), and is
driven over real HTTP by the official client, as a user would.

    ready      Deployment created -> Available with its pod Ready (echo workload, readiness
               probe), and a bare Pod created -> Ready; median and max of --rounds runs.
    pf-*       bytes through ``pods/{name}/portforward``: bench/portforward.py, which runs the
               sandbox as its own process (the in-process one above would share the GIL with
               the clients it serves).

Run: ``python bench/sandbox_node.py [--mib 50] [--rounds 5]``. Target: Ready within 1 s of the
Deployment's creation. Last line: ``RESULT ready_p50_ms=… pf_official_mibps=… pf_aiohttp_mibps=…``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubetunnel.logging import configure
from modes.sandbox.node.wiring import SandboxNode, start_node
from modes.sandbox.server import Sandbox

T = TypeVar("T")


class Server:
    """The sandbox with its node, served from a thread (the official client is synchronous)."""

    def __init__(self, state: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.node: SandboxNode
        self.run(self._start(state))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def _start(self, state: Path) -> None:
        self.sandbox = Sandbox()
        self.runner = web.AppRunner(self.sandbox.app(), access_log=None, shutdown_timeout=1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self.node = await start_node(self.sandbox, server=self.url, state_dir=state)

    def close(self) -> None:
        async def stop() -> None:
            await self.node.stop()
            await self.runner.cleanup()
        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _pod_spec() -> dict[str, Any]:
    return {"containers": [{
        "name": "echo", "image": "kubetunnel/sandbox-echo",
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}}}]}


def _wait(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.002)


def bench_ready(api: client.ApiClient, rounds: int) -> tuple[list[float], list[float]]:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    deployments, pods = [], []
    for i in range(rounds):
        name, labels = f"bench-{i}", {"app": f"bench-{i}"}
        began = time.monotonic()
        apps.create_namespaced_deployment("default", {
            "metadata": {"name": name}, "spec": {
                "replicas": 1, "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": _pod_spec()}}})

        def available(name: str = name) -> bool:
            status = apps.read_namespaced_deployment_status(name, "default").status
            return any(c.type == "Available" and c.status == "True"
                       for c in status.conditions or []) and status.ready_replicas == 1
        _wait(available)
        deployments.append(time.monotonic() - began)
        apps.delete_namespaced_deployment(name, "default")

        began = time.monotonic()
        core.create_namespaced_pod("default", {"metadata": {"name": f"pod-{i}"},
                                               "spec": _pod_spec()})

        def ready(name: str = f"pod-{i}") -> bool:
            conditions = core.read_namespaced_pod(name, "default").status.conditions or []
            return any(c.type == "Ready" and c.status == "True" for c in conditions)
        _wait(ready)
        pods.append(time.monotonic() - began)
        core.delete_namespaced_pod(f"pod-{i}", "default")
    return deployments, pods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=50, help="MiB each way (default 50)")
    parser.add_argument("--rounds", type=int, default=5, help="ready-latency runs (default 5)")
    args = parser.parse_args()
    configure("warning")  # the in-process sandbox would log every pod event
    with tempfile.TemporaryDirectory() as state:
        server = Server(Path(state))
        config = client.Configuration(host=server.url)
        config.api_key = {"authorization": server.sandbox.token}
        config.api_key_prefix = {"authorization": "Bearer"}
        try:
            with client.ApiClient(config) as api:
                deployments, pods = bench_ready(api, args.rounds)
        finally:
            server.close()
    p50 = statistics.median(deployments) * 1000
    print(f"ready      deployment->available p50 {p50:.0f} ms  max {max(deployments)*1000:.0f} ms"
          f"   pod->ready p50 {statistics.median(pods)*1000:.0f} ms  "
          f"max {max(pods)*1000:.0f} ms   (target: < 1000 ms)")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import portforward  # the sandbox as its own process, as in real use

    result = portforward.measure(args.mib, rounds=3)
    print(portforward.describe(result, args.mib, 3))
    print(f"RESULT ready_p50_ms={p50:.0f} pf_official_mibps={result.median('official', 'rate'):.0f}"
          f" pf_aiohttp_mibps={result.median('aiohttp', 'rate'):.0f} "
          f"pf_kubetunnel_mibps={result.median('ours', 'rate'):.0f}")


if __name__ == "__main__":
    main()
