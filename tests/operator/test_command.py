"""``kubetunnel operator`` as a real process: SIGKILLed after the swap, restarted, it converges
(the selector comes back when the record is deleted while no operator runs)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

import click
import pytest

from kubetunnel.kube import KubeClient
from kubetunnel.plugins import Store
from modes.operator.command import Duration, _namespaces
from tests.operator import cluster
from tests.operator.conftest import Sandbox, record, token_of

TUNNEL = {"we-dcode-app": "kubetunnel", "kubetunnel.dev/tunnel": "orders"}


class OperatorProcess:
    def __init__(self, proc: asyncio.subprocess.Process, api_port: int) -> None:
        self.proc, self.api_port = proc, api_port


async def _start(sandbox: Sandbox, namespace: str, store: str,
                 *leader: str) -> OperatorProcess:
    """``leader``: extra flags for leader election (default: none, one replica)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modes", "operator", "--kubeconfig", str(sandbox.kubeconfig),
        # The default, cluster-wide: other tests' namespaces are in the same sandbox.
        "--watch-namespaces", "all", "--store", store, "--api-port", "0",
        "--health-port", "0", "--resync", "2s", *(leader or ("--no-leader-election",)),
        "--log-format", "json",
        cwd=cluster.ROOT, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "KUBETUNNEL_BIND_ADDRESS": "127.0.0.1",
             "PYTHONPATH": str(cluster.ROOT)},
    )
    assert proc.stderr is not None
    port = 0
    async with asyncio.timeout(20):
        while True:
            line = await proc.stderr.readline()
            assert line, "the operator exited before serving"
            event: dict[str, Any] = json.loads(line)
            if event.get("event") == "operator.serving":
                port = int(event["api_port"])
                assert event["host"] == "127.0.0.1"
            if event.get("event") == "operator.synced":
                break
    return OperatorProcess(proc, port)


async def _stop(op: OperatorProcess, sig: int) -> int:
    op.proc.send_signal(sig)
    assert op.proc.stderr is not None
    await op.proc.stderr.read()  # drain, so the process never blocks on a full pipe
    return await asyncio.wait_for(op.proc.wait(), 20)


async def _post(port: int, namespace: str, token: str, connected: bool) -> int:
    import aiohttp

    url = f"http://127.0.0.1:{port}/v1/namespaces/{namespace}/tunnels/orders/status"
    async with aiohttp.ClientSession() as session, session.post(
        url, json={"connected": connected, "reason": "test"},
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        return resp.status


async def test_killed_operator_restarted_converges(
    client: KubeClient, store: Store, namespace: str, sandbox: Sandbox
) -> None:
    kind = type(store).__name__.lower().removesuffix("store")
    await cluster.create_service(client, namespace, "orders", {"app": "orders"})
    first = await _start(sandbox, namespace, kind)
    try:
        await store.create(record(namespace))
        await cluster.eventually(lambda: cluster.get_or_none(
            client, f"/apis/apps/v1/namespaces/{namespace}/deployments/kubetunnel-orders"))
        await cluster.run_agent_pod(client, namespace, "kubetunnel-orders")
        token = await token_of(client, namespace)

        async def accepted() -> bool:
            return await _post(first.api_port, namespace, token, True) == 202

        await cluster.eventually(accepted)

        async def switched() -> bool:
            return await cluster.selector_of(client, namespace, "orders") == TUNNEL

        await cluster.eventually(switched)
    finally:
        assert await _stop(first, signal.SIGKILL) == -signal.SIGKILL
    await store.delete(namespace, "orders")  # the finalizer holds it: nobody restored yet
    assert await cluster.selector_of(client, namespace, "orders") == TUNNEL
    second = await _start(sandbox, namespace, kind)
    try:
        async def restored() -> bool:
            assert await store.get(namespace, "orders") is None
            return await cluster.selector_of(client, namespace, "orders") == {"app": "orders"}

        await cluster.eventually(restored)
    finally:
        assert await _stop(second, signal.SIGTERM) == 0


async def test_sigterm_releases_the_leader_lease(
    client: KubeClient, store: Store, namespace: str, sandbox: Sandbox
) -> None:
    """A stopping leader hands its Lease back, so the next replica acts at once instead of
    waiting out the Lease duration."""
    kind = type(store).__name__.lower().removesuffix("store")
    op = await _start(sandbox, namespace, kind, "--leader-election", "--namespace", namespace,
                      "--watch-namespaces", namespace)
    path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/kubetunnel-operator"
    try:
        lease = await client.get(path)
        assert lease["spec"]["holderIdentity"]
    finally:
        assert await _stop(op, signal.SIGTERM) == 0
    lease = await client.get(path)
    assert not lease["spec"].get("holderIdentity")
    assert lease["spec"]["leaseDurationSeconds"] == 1


def test_duration_and_namespace_options() -> None:
    duration = Duration()
    assert duration.convert("60s", None, None) == 60
    assert duration.convert("2m", None, None) == 120
    assert duration.convert("500ms", None, None) == 0.5
    assert duration.convert("5", None, None) == 5
    for bad in ("-1s", "0", "soon", "5d"):
        with pytest.raises(click.BadParameter):
            duration.convert(bad, None, None)
    assert _namespaces("all") is None
    assert _namespaces("a, b,a") == ("a", "b")
