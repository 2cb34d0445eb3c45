"""Benchmark of the sandbox node: pod start to Ready, and pod port-forward throughput.

The sandbox API server (``modes.sandbox.server.Sandbox``) runs in this process on a thread,
with the node switched on exactly as ``sandbox up`` does (``modes.sandbox.node.wiring``), and is
driven over real HTTP by the official client, as a user would.

    ready      Deployment created -> Available with its pod Ready (echo workload, readiness
               probe), and a bare Pod created -> Ready; median and max of --rounds runs.
    pf-*       bytes through ``pods/{name}/portforward`` to a TCP echo port of a pod, both ways
               at once (upload and echoed download), with the official client
               (``kubernetes.stream.portforward``) and with a plain aiohttp websocket client.

For throughput the pod is a hostNetwork pod whose port 127.0.0.1:<port> is served by an echo
server in this process: the echo sample answers HTTP, not raw bytes, and the path measured —
API server, websocket framing, TCP to the pod address — is the same either way.

Run: ``python bench/sandbox_node.py [--mib 100] [--rounds 5]``. Target: Ready within 1 s of the
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

import aiohttp
from aiohttp import web
from kubernetes import client
from kubernetes.stream import portforward

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modes.sandbox.node.wiring import SandboxNode, start_node
from modes.sandbox.server import Sandbox

T = TypeVar("T")
MIB = 1 << 20


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
        self.echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
        self.echo_port = self.echo.sockets[0].getsockname()[1]

    def close(self) -> None:
        async def stop() -> None:
            self.echo.close()
            await self.node.stop()
            await self.runner.cleanup()
        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(MIB):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


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


def _sink_pod(core: client.CoreV1Api) -> None:
    # hostNetwork: the pod's address is 127.0.0.1, where this process serves the echo port.
    core.create_namespaced_pod("default", {"metadata": {"name": "sink"}, "spec": {
        "hostNetwork": True, "containers": [{"name": "c", "image": "bench/not-runnable"}]}})
    _wait(lambda: core.read_namespaced_pod("sink", "default").status.pod_ip)


def bench_official(core: client.CoreV1Api, port: int, mib: int) -> float:
    pf = portforward(core.connect_get_namespaced_pod_portforward, "sink", "default",
                     ports=str(port))
    sock = pf.socket(port)
    sock.settimeout(60)
    block = bytes(range(256)) * 4096
    began = time.monotonic()
    writer = threading.Thread(target=lambda: [sock.sendall(block) for _ in range(mib)])
    writer.start()
    got = 0
    while got < mib * MIB:
        data = sock.recv(MIB)
        if not data:
            raise RuntimeError(f"stream ended after {got} bytes")
        got += len(data)
    writer.join()
    elapsed = time.monotonic() - began
    pf.close()
    pf.websocket.shutdown()
    return 2 * mib / elapsed  # MiB/s, both directions counted


async def bench_aiohttp(url: str, token: str, port: int, mib: int) -> float:
    path = f"{url}/api/v1/namespaces/default/pods/sink/portforward?ports={port}"
    block = b"\x00" + bytes(range(256)) * 1024  # channel 0 + 256 KiB
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session, \
            session.ws_connect(path, protocols=("v4.channel.k8s.io",), max_msg_size=0) as ws:
        for _ in range(2):
            assert len(await ws.receive_bytes()) == 3  # the two channel headers
        began = time.monotonic()

        async def upload() -> None:
            for _ in range(mib * 4):
                await ws.send_bytes(block)

        sender = asyncio.create_task(upload())
        got = 0
        while got < mib * MIB:
            message = await ws.receive_bytes()
            if message[0] == 0:
                got += len(message) - 1
        await sender
        return 2 * mib / (time.monotonic() - began)


async def bench_ours(url: str, token: str, port: int, mib: int) -> float:
    """KubeTunnel's own ``portforward`` transport plugin over the same pod port."""
    from kubetunnel.kube import KubeAccess
    from kubetunnel.plugins import TransportSettings, TunnelTarget
    from kubetunnel.transports.portforward import PortForwardTransport

    config = client.Configuration(host=url)
    config.api_key = {"authorization": token}
    config.api_key_prefix = {"authorization": "Bearer"}
    transport = PortForwardTransport(TransportSettings(kube=KubeAccess(config)))
    stream = await transport.connect(TunnelTarget("default", pod="sink", port=port))
    block = bytes(range(256)) * 1024
    began = time.monotonic()

    async def upload() -> None:
        for _ in range(mib * 4):
            await stream.send(block)

    sender = asyncio.create_task(upload())
    got = 0
    while got < mib * MIB:
        data = await stream.receive(MIB)
        if not data:
            raise RuntimeError(f"stream ended after {got} bytes")
        got += len(data)
    await sender
    elapsed = time.monotonic() - began
    await stream.aclose()
    await transport.aclose()
    return 2 * mib / elapsed


def measure_portforward(mib: int) -> tuple[float, float, float]:
    """(official client, plain aiohttp, our transport) in MiB/s over one sandbox pod port."""
    with tempfile.TemporaryDirectory() as state:
        server = Server(Path(state))
        config = client.Configuration(host=server.url)
        config.api_key = {"authorization": server.sandbox.token}
        config.api_key_prefix = {"authorization": "Bearer"}
        try:
            with client.ApiClient(config) as api:
                core = client.CoreV1Api(api)
                _sink_pod(core)
                official = bench_official(core, server.echo_port, mib)
                plain = asyncio.run(bench_aiohttp(server.url, server.sandbox.token,
                                                  server.echo_port, mib))
                ours = asyncio.run(bench_ours(server.url, server.sandbox.token,
                                              server.echo_port, mib))
        finally:
            server.close()
    return official, plain, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=100, help="MiB each way (default 100)")
    parser.add_argument("--rounds", type=int, default=5, help="ready-latency runs (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        server = Server(Path(state))
        config = client.Configuration(host=server.url)
        config.api_key = {"authorization": server.sandbox.token}
        config.api_key_prefix = {"authorization": "Bearer"}
        try:
            with client.ApiClient(config) as api:
                deployments, pods = bench_ready(api, args.rounds)
                core = client.CoreV1Api(api)
                _sink_pod(core)
                official = bench_official(core, server.echo_port, args.mib)
                plain = asyncio.run(bench_aiohttp(server.url, server.sandbox.token,
                                                  server.echo_port, args.mib))
                ours = asyncio.run(bench_ours(server.url, server.sandbox.token,
                                              server.echo_port, args.mib))
        finally:
            server.close()
    p50 = statistics.median(deployments) * 1000
    print(f"ready      deployment->available p50 {p50:.0f} ms  max {max(deployments)*1000:.0f} ms"
          f"   pod->ready p50 {statistics.median(pods)*1000:.0f} ms  "
          f"max {max(pods)*1000:.0f} ms   (target: < 1000 ms)")
    print(f"pf-official {official:.0f} MiB/s   pf-aiohttp {plain:.0f} MiB/s   "
          f"pf-kubetunnel {ours:.0f} MiB/s ({ours / official:.2f}x official) "
          f"({args.mib} MiB each way, both at once)")
    print(f"RESULT ready_p50_ms={p50:.0f} pf_official_mibps={official:.0f} "
          f"pf_aiohttp_mibps={plain:.0f} pf_kubetunnel_mibps={ours:.0f}")


if __name__ == "__main__":
    main()
