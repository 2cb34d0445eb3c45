"""The real agent (``kubetunnel agent``, a local process configured from the environment the
operator put in its Deployment) and the real tunnel client: the agent's reports switch the
Service to the tunnel and back as the developer's local process comes and goes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from kubetunnel.kube import KubeClient
from kubetunnel.plugins import Store, TransportSettings, TunnelTarget
from kubetunnel.transports.direct import DirectTransport
from kubetunnel.tunnel.client import ClientOptions, Route, TunnelClient
from modes.operator.runtime import Operator
from tests.operator import cluster
from tests.operator.conftest import OperatorFactory, record, token_of

APP = {"app": "orders"}
TUNNEL = {"we-dcode-app": "kubetunnel", "kubetunnel.dev/tunnel": "orders"}


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextlib.asynccontextmanager
async def local_app(port: int) -> AsyncIterator[web.AppRunner]:
    """The developer's local process."""
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="local")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield runner
    finally:
        await runner.cleanup()


async def agent_env(client: KubeClient, namespace: str, op: Operator, token_file: Path,
                    ports: dict[str, int]) -> dict[str, str]:
    """The agent's environment as the operator wrote it, with what only a cluster provides
    (pod network, kube-proxy, the mounted Secret, the fieldRef) filled in for a local process."""
    dep = await client.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/kubetunnel-orders")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["agent"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    refs = {e["name"]: e["valueFrom"] for e in container["env"] if "valueFrom" in e}
    assert refs == {
        "KUBETUNNEL_TUNNEL_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        "KUBETUNNEL_TOKEN": {"secretKeyRef": {"name": "kubetunnel-orders", "key": "token"}},
    }
    assert env["KUBETUNNEL_PORTS"] == "8080"
    assert env["KUBETUNNEL_TOKEN_FROM_ENV"] == "true"
    env.update(
        KUBETUNNEL_TUNNEL_NAMESPACE=namespace,
        KUBETUNNEL_PORTS=str(ports["service"]),
        KUBETUNNEL_TUNNEL_PORT=str(ports["tunnel"]),
        KUBETUNNEL_HEALTH_PORT=str(ports["health"]),
        KUBETUNNEL_TOKEN=await asyncio.to_thread(token_file.read_text),
        # The ClusterIP needs kube-proxy (sandbox part 2); the operator's own port instead.
        KUBETUNNEL_OPERATOR_URL=f"http://127.0.0.1:{op.api_port}",
        KUBETUNNEL_BIND_ADDRESS="127.0.0.1",
    )
    return env


@pytest.mark.parametrize("store", ["crd"], indirect=True)
async def test_agent_reports_switch_the_service(
    client: KubeClient, store: Store, namespace: str, start_operator: OperatorFactory,
    tmp_path: Path,
) -> None:
    await cluster.create_service(client, namespace, "orders", APP)
    op = await start_operator()
    await store.create(record(namespace))
    await cluster.eventually(lambda: cluster.get_or_none(
        client, f"/apis/apps/v1/namespaces/{namespace}/deployments/kubetunnel-orders"))
    token = await token_of(client, namespace)
    token_file = tmp_path / "token"
    await asyncio.to_thread(token_file.write_text, token)
    service_port, tunnel_port, health_port, local_port = free_ports(4)
    env = await agent_env(client, namespace, op, token_file,
                          {"service": service_port, "tunnel": tunnel_port, "health": health_port})
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modes", "agent", cwd=cluster.ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(cluster.ROOT)},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    tunnel = TunnelClient(
        DirectTransport(TransportSettings()),
        TunnelTarget(namespace=namespace, address=f"127.0.0.1:{tunnel_port}"),
        token, [Route(agent_port=service_port, local_port=local_port)],
        client_id="alice@laptop", options=ClientOptions(probe_interval=0.1),
    )

    async def selector_is(expected: dict[str, str]) -> bool:
        return await cluster.selector_of(client, namespace, "orders") == expected

    try:
        await cluster.run_agent_pod(client, namespace, "kubetunnel-orders")  # the kubelet's part
        async with local_app(local_port):
            tunnel.start()
            await cluster.eventually(lambda: selector_is(TUNNEL), timeout=20)

            async def connected_phase() -> bool:
                current = await store.get(namespace, "orders")
                return current is not None and current.status.phase == "Connected"

            # The status is written after the Service is switched (two objects, no
            # transaction), so a reader may see the switch a moment before the phase.
            await cluster.eventually(connected_phase, timeout=5)
        # The local process stopped: the agent says so and the Service gets its pods back.
        await cluster.eventually(lambda: selector_is(APP), timeout=10)
        async with local_app(local_port):
            await cluster.eventually(lambda: selector_is(TUNNEL), timeout=10)
    finally:
        await tunnel.aclose()
        agent.terminate()
        await asyncio.wait_for(agent.wait(), 15)
    # The agent said "disconnected" on its way out.
    await cluster.eventually(lambda: selector_is(APP), timeout=10)
