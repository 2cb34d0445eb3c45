"""Port-forward as the official Python client sees it, and the channel protocol on the wire."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.stream import portforward

from tests.sandbox_node.threaded import ECHO_POD_IP, ThreadedNode, echo_node

POD_IP = ECHO_POD_IP
MIB = 1 << 20


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ThreadedNode]:
    with echo_node(tmp_path) as made:
        yield made


@pytest.fixture
def core(node: ThreadedNode) -> Iterator[client.CoreV1Api]:
    with client.ApiClient(client.Configuration(host=node.url)) as api:
        yield client.CoreV1Api(api)


def close(pf: Any) -> None:
    """Close the client's sockets and wait for its proxy thread to close the websocket, so no
    socket is left for the garbage collector to complain about in a later test."""
    pf.close()
    deadline = time.monotonic() + 5
    while pf.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    pf.websocket.shutdown()  # after a server-side close the client's thread leaves it open


def test_official_client_moves_100_mib_both_ways(core: client.CoreV1Api) -> None:
    pf = portforward(core.connect_get_namespaced_pod_portforward, "echo", "default",
                     ports="8080")
    sock = pf.socket(8080)
    sock.settimeout(30)
    block = bytes(range(256)) * 4096  # 1 MiB
    sent = hashlib.sha256()

    def upload() -> None:
        for i in range(100):
            chunk = block[i:] + block[:i]
            sent.update(chunk)
            sock.sendall(chunk)

    writer = threading.Thread(target=upload)
    writer.start()
    received = hashlib.sha256()
    total = 0
    while total < 100 * MIB:
        data = sock.recv(MIB)
        assert data, f"stream ended after {total} bytes"
        received.update(data)
        total += len(data)
    writer.join()
    assert total == 100 * MIB
    assert received.hexdigest() == sent.hexdigest()
    close(pf)


def test_official_client_reads_the_error_channel_for_a_closed_port(
        core: client.CoreV1Api) -> None:
    pf = portforward(core.connect_get_namespaced_pod_portforward, "echo", "default",
                     ports="8080,8081")
    try:
        closed = pf.socket(8081)
        closed.settimeout(10)
        assert closed.recv(1024) == b""  # the client closes the port's socket on an error
        error = pf.error(8081)
        assert error is not None
        assert "8081" in error
        assert "connect: connection refused" in error
        assert pf.error(8080) is None
        working = pf.socket(8080)
        working.settimeout(10)
        working.sendall(b"ping")
        assert working.recv(16) == b"ping"
    finally:
        close(pf)


def test_missing_pod_fails_the_handshake_with_a_status(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as caught:
        portforward(core.connect_get_namespaced_pod_portforward, "nope", "default",
                    ports="8080")
    reason = str(caught.value.reason)
    assert "404" in reason
    assert '"kind": "Status"' in reason
    assert '"reason": "NotFound"' in reason
    assert 'pods \\"nope\\" not found' in reason


async def _frames(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[bytes]:
    return [(await ws.receive_bytes(timeout=5)) for _ in range(count)]


def test_wire_format_and_protocol_choice(node: ThreadedNode) -> None:
    async def scenario() -> None:
        url = f"{node.url}/api/v1/namespaces/default/pods/echo/portforward?ports=8080&ports=9"
        protocols = ("v5.channel.k8s.io", "v4.channel.k8s.io")
        async with aiohttp.ClientSession() as session, session.ws_connect(
                url, protocols=protocols) as ws:
            assert ws.protocol == "v4.channel.k8s.io"
            first = await _frames(ws, 4)
            assert first == [b"\x00" + struct.pack("<H", 8080), b"\x01\x90\x1f",
                             b"\x02\x09\x00", b"\x03\x09\x00"]
            error = await ws.receive_bytes(timeout=5)
            assert error[0] == 3
            assert b"refused" in error
            await ws.send_bytes(b"\x00hello")
            assert await ws.receive_bytes(timeout=5) == b"\x00hello"
    node.run(scenario())


def test_v5_close_signal_half_closes(node: ThreadedNode) -> None:
    async def count_then_answer(reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's half-close
        writer.write(f"got {len(data)}".encode())
        await writer.drain()
        writer.close()

    node.add_pod("counter", "127.77.3.2", count_then_answer)

    async def scenario() -> None:
        url = f"{node.url}/api/v1/namespaces/default/pods/counter/portforward?ports=8080"
        async with aiohttp.ClientSession() as session, session.ws_connect(
                url, protocols=("v5.channel.k8s.io",)) as ws:
            assert ws.protocol == "v5.channel.k8s.io"
            await _frames(ws, 2)
            await ws.send_bytes(b"\x00abc")
            await ws.send_bytes(b"\x00de")
            await ws.send_bytes(b"\xff\x00")  # close signal for channel 0
            assert await ws.receive_bytes(timeout=5) == b"\x00got 5"
            assert await ws.receive_bytes(timeout=5) == b"\xff\x00"
    node.run(scenario())


def test_plain_get_is_refused_with_a_status(node: ThreadedNode) -> None:
    async def scenario() -> tuple[int, dict[str, object]]:
        async with aiohttp.ClientSession() as session:
            url = f"{node.url}/api/v1/namespaces/default/pods/echo/portforward?ports=8080"
            async with session.get(url) as response:
                return response.status, await response.json()
    status, body = node.run(scenario())
    assert status == 400
    assert body["kind"] == "Status"
    assert body["message"] == "Upgrade request required"
