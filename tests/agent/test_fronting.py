"""The agent's own path to the Service's pods: connections the laptop cannot take go to the
origin (here servers on 127.0.0.2 at the agent's port numbers) instead of being reset."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from kubetunnel.transports import loopback
from kubetunnel.tunnel.client import ClientOptions
from modes.agent.health import start_health
from tests.operator.cluster import eventually

from .conftest import FAST, Stack, close_stack, make_stack

ORIGIN = "127.0.0.2"


async def _named(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: bytes) -> None:
    """Answers ``name + request`` once the client half-closes: who answered, and what it got."""
    try:
        request = await reader.read(-1)
        writer.write(name + b":" + request)
        await writer.drain()
    finally:
        writer.close()


async def local(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _named(reader, writer, b"local")


async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _named(reader, writer, b"origin")


@pytest.fixture
async def fronted(fresh_loopback_hub: loopback.LoopbackHub) -> AsyncIterator[Stack]:
    made = await make_stack("direct", fresh_loopback_hub, origin=ORIGIN, app=local)
    servers = [await asyncio.start_server(origin, ORIGIN, port) for port in made.agent.ports]
    yield made
    await close_stack(made)
    for server in servers:
        server.close()
        await server.wait_closed()


async def _ask(port: int, request: bytes = b"GET /") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(-1), 5)
    finally:
        writer.close()


async def _until(predicate: Callable[[], object], timeout: float = 5) -> None:
    async def probe() -> bool:
        return bool(predicate())

    await eventually(probe, timeout=timeout, interval=0.01)


async def test_without_a_cli_connections_go_to_the_origin(fronted: Stack) -> None:
    assert await _ask(fronted.port("app")) == b"origin:GET /"
    assert fronted.agent.counters.to_origin == 1
    assert fronted.agent.counters.reset == 0


async def test_local_process_answering_takes_the_connection(fronted: Stack) -> None:
    client = await fronted.connected_client()
    await _until(lambda: fronted.agent.local_answering)
    assert await _ask(fronted.port("app")) == b"local:GET /"
    assert client.connected


async def test_a_failed_local_dial_is_handed_to_the_origin_with_its_bytes(fronted: Stack) -> None:
    # The CLI probed once (answering), and will not probe again on its own: the local server
    # stops, and the next connection finds it gone when the CLI dials it.
    client = fronted.client(options=ClientOptions(session=FAST.session, probe_interval=3600,
                                                  handshake_timeout=2))
    client.start()
    await client.wait_connected(5)
    await _until(lambda: fronted.agent.local_answering)
    server = fronted.servers["app"]
    server.close()
    await server.wait_closed()
    payload = b"POST /orders\r\n" + b"x" * 200_000
    assert await _ask(fronted.port("app"), payload) == b"origin:" + payload
    assert fronted.agent.counters.handed_over == 1
    assert fronted.agent.counters.reset == 0


async def test_local_process_down_sends_new_connections_to_the_origin(fronted: Stack) -> None:
    await fronted.connected_client()
    await _until(lambda: fronted.agent.local_answering)
    server = fronted.servers["app"]
    server.close()
    await server.wait_closed()
    await _until(lambda: not fronted.agent.local_answering)
    assert await _ask(fronted.port("app")) == b"origin:GET /"
    assert fronted.agent.counters.handed_over == 0


async def test_draining_agent_sends_new_connections_to_the_origin(fronted: Stack) -> None:
    await fronted.connected_client()
    await _until(lambda: fronted.agent.local_answering)
    reader, writer = await asyncio.open_connection("127.0.0.1", fronted.port("app"))
    writer.write(b"in flight")
    await _until(lambda: fronted.agent.counters.to_local == 1)
    closing = asyncio.create_task(fronted.agent.aclose(grace=5))
    await _until(lambda: fronted.agent.draining)
    # While draining: a new connection goes to the origin, the open one still completes.
    assert await _ask(fronted.port("app")) == b"origin:GET /"
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(-1), 5) == b"local:in flight"
    writer.close()
    await closing


async def test_origin_unreachable_resets_and_counts(
    fresh_loopback_hub: loopback.LoopbackHub,
) -> None:
    made = await make_stack("direct", fresh_loopback_hub, origin=ORIGIN, app=local)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", made.agent.ports[0])
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(-1), 5)
        writer.close()
        assert made.agent.counters.reset == 1
    finally:
        await close_stack(made)


async def test_stopping_agent_keeps_serving_the_origin_for_a_moment(fronted: Stack) -> None:
    """After SIGTERM, connections still routed to the pod (endpoint updates lag) are served, and
    its readiness stays true meanwhile: kube-proxy sends a Service's traffic to a serving
    terminating pod while no other endpoint is ready (the seconds before the selector is back)."""
    runner, health = await start_health(fronted.agent, "127.0.0.1", 0)
    try:
        closing = asyncio.create_task(fronted.agent.aclose(grace=5))
        await _until(lambda: fronted.agent.draining)
        assert await _ask(fronted.port("app")) == b"origin:GET /"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{health}/readyz") as response:
                assert response.status == 200
                assert (await response.json())["draining"] is True
            await closing
            async with http.get(f"http://127.0.0.1:{health}/readyz") as response:
                assert response.status == 503
    finally:
        await runner.cleanup()
