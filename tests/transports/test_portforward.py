"""The portforward transport against a server that frames like kubelet's port-forward."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kubetunnel.errors import KubetunnelError
from kubetunnel.kube import KubeAccess
from kubetunnel.plugins import ByteStream, TransportSettings, TunnelTarget
from kubetunnel.transports.portforward import PortForwardError, PortForwardTransport
from tests.transports.portforward_server import FakeApiServer, running


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    """Echoes until EOF, then closes: lets a test see half-close end to end."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _read_all(stream: ByteStream) -> bytes:
    chunks = []
    while chunk := await stream.receive():
        chunks.append(chunk)
    return b"".join(chunks)


async def _transport(server: FakeApiServer, tmp_path: Path, **user: object) -> PortForwardTransport:
    config = await asyncio.to_thread(server.kubeconfig, tmp_path / "kubeconfig", user or None)
    access = await asyncio.to_thread(KubeAccess.load, str(config))
    assert access.namespace == "shop"  # default namespace from the context, as kubectl
    return PortForwardTransport(TransportSettings(kube=access))


@pytest.mark.parametrize("protocols", [("v4.channel.k8s.io",),
                                       ("v5.channel.k8s.io", "v4.channel.k8s.io")])
async def test_bulk_transfer_both_ways(tmp_path: Path, protocols: tuple[str, ...]) -> None:
    async with running(FakeApiServer(protocols=protocols)) as server, echo_server() as port:
        transport = await _transport(server, tmp_path)
        stream = await transport.connect(TunnelTarget("shop", pod="agent-0", port=port))
        payload = os.urandom(3 * 1024 * 1024 + 17)

        async def write() -> None:
            await stream.send(payload)
            if protocols[0].startswith("v5"):
                await stream.send_eof()  # the echo server closes after EOF: we read to the end

        writer = asyncio.create_task(write())
        received = bytearray()
        while len(received) < len(payload):
            chunk = await stream.receive()
            assert chunk, "stream ended early"
            received += chunk
        await writer
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        await stream.aclose()
        await transport.aclose()


async def test_closed_pod_port_is_reported_from_the_error_channel(tmp_path: Path) -> None:
    async with running(FakeApiServer()) as server, echo_server() as port:
        closed_port = port
    async with running(FakeApiServer()) as server:
        transport = await _transport(server, tmp_path)
        stream = await transport.connect(TunnelTarget("shop", pod="agent-0", port=closed_port))
        with pytest.raises(PortForwardError, match=f"error forwarding port {closed_port}"):
            await stream.receive()
        await stream.aclose()
        await transport.aclose()


async def test_missing_pod_is_a_one_line_error(tmp_path: Path) -> None:
    async with running(FakeApiServer()) as server:
        transport = await _transport(server, tmp_path)
        with pytest.raises(KubetunnelError) as err:
            await transport.connect(TunnelTarget("shop", pod="ghost", port=7000))
        assert "ghost" in str(err.value)
        assert "404" in str(err.value)
        assert "\n" not in str(err.value)
        await transport.aclose()


async def test_wrong_token_is_refused(tmp_path: Path) -> None:
    async with running(FakeApiServer()) as server:
        transport = await _transport(server, tmp_path, token="not-the-token")
        with pytest.raises(KubetunnelError, match="401"):
            await transport.connect(TunnelTarget("shop", pod="agent-0", port=7000))
        await transport.aclose()


async def test_exec_credential_plugin_supplies_the_token(tmp_path: Path) -> None:
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "kind": "ExecCredential",
        "status": {"token": "from-exec-plugin"},
    }
    exec_user = {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": sys.executable,
        "args": ["-c", f"print({json.dumps(json.dumps(credential))})"],
        "interactiveMode": "Never",
    }}
    async with running(FakeApiServer(token="from-exec-plugin")) as server, \
            echo_server() as port:
        transport = await _transport(server, tmp_path, **exec_user)
        stream = await transport.connect(TunnelTarget("shop", pod="agent-0", port=port))
        await stream.send(b"ping")
        assert await stream.receive() == b"ping"
        assert server.seen_tokens == ["Bearer from-exec-plugin"]
        await stream.aclose()
        await transport.aclose()


async def test_connection_needs_a_pod() -> None:
    transport = PortForwardTransport(TransportSettings(kube=object()))
    with pytest.raises(KubetunnelError, match="needs a pod"):
        await transport.connect(TunnelTarget("shop", address="127.0.0.1:1"))
