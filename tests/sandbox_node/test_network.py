"""The node's sockets in the real control plane's pod network send small writes at once.

Every socket the node uses there (kube-proxy's listeners and dials, port-forward's dials) is
made by ``modes.sandbox.node.network`` rather than by asyncio, which turns Nagle's algorithm
off only for sockets it creates itself or whose protocol says TCP. Left on, a relay's small
writes wait for the peer's delayed ACK: about 40 ms per request through a tunnel.

The network here is the test process's own namespace (the node joins whatever namespace it is
given), so only loopback addresses are used.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator

import pytest

from modes.sandbox.node.network import NamespaceNetwork

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="joining a namespace needs root")


def nodelay(writer: asyncio.StreamWriter) -> bool:
    sock = writer.get_extra_info("socket")
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


@pytest.fixture
async def pod_network() -> AsyncIterator[NamespaceNetwork]:
    network = NamespaceNetwork(f"/proc/{os.getpid()}/ns/net", host_ip="127.0.0.1")
    yield network
    network.close()


async def test_dials_into_the_pod_network_have_nagle_off(pod_network: NamespaceNetwork) -> None:
    accepted: asyncio.Future[asyncio.StreamWriter] = asyncio.get_running_loop().create_future()
    server = await asyncio.start_server(lambda r, w: accepted.set_result(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        _, writer = await pod_network.open_connection("127.0.0.1", port)
        served = await accepted
        dialed_nodelay = nodelay(writer)
        writer.close()
        served.close()
        await writer.wait_closed()
    assert dialed_nodelay


async def test_connections_accepted_in_the_pod_network_have_nagle_off(
        pod_network: NamespaceNetwork) -> None:
    accepted: asyncio.Future[asyncio.StreamWriter] = asyncio.get_running_loop().create_future()
    listener = await pod_network.listen("127.0.0.1", 0)
    server = await asyncio.start_server(lambda r, w: accepted.set_result(w), sock=listener)
    async with server:
        _, writer = await asyncio.open_connection(*listener.getsockname())
        served = await accepted
        accepted_nodelay = nodelay(served)
        writer.close()
        served.close()
        await writer.wait_closed()
    assert accepted_nodelay
