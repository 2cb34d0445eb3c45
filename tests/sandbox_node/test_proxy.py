"""The loopback kube-proxy: round robin, live endpoint changes, open connections kept; in this
process and as the node runs it, in a child process fed through a pipe (which follows a
restart of the child and leaves no process behind)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator

import pytest

from modes.sandbox.node import proxy as proxy_module
from modes.sandbox.node.proxy import ServiceProxy
from modes.sandbox.node.proxyprocess import ProxyProcess
from tests.operator.cluster import eventually

CLUSTER_IP = "127.78.0.10"


@contextlib.asynccontextmanager
async def backend(name: str, host: str) -> AsyncIterator[tuple[str, int]]:
    """Greets with its name, then echoes every line prefixed with it."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"{name}\n".encode())
        while line := await reader.readline():
            writer.write(f"{name}:".encode() + line)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, host, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield host, port
    finally:
        server.close()
        if hasattr(server, "close_clients"):
            server.close_clients()


async def connect(port: int) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(CLUSTER_IP, port)
    greeting = await asyncio.wait_for(reader.readline(), 2)
    return greeting.decode().strip(), reader, writer


async def hangup(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


Proxy = ServiceProxy | ProxyProcess


@pytest.fixture(params=["in-process", "child-process"])
async def services(request: pytest.FixtureRequest) -> AsyncIterator[Proxy]:
    proxy: Proxy
    if request.param == "in-process":
        proxy = ServiceProxy()
    else:
        proxy = ProxyProcess()
        await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def local_services() -> AsyncIterator[ServiceProxy]:
    proxy = ServiceProxy()
    yield proxy
    await proxy.stop()


async def test_round_robin_over_ready_endpoints(services: Proxy) -> None:
    async with backend("a", "127.77.1.1") as a, backend("b", "127.77.1.2") as b:
        await services.set_service("default", "web", CLUSTER_IP, {"http": 18080})
        services.set_endpoints("default", "web", {"http": [a, b]})
        await services.synced()
        seen = []
        for _ in range(4):
            name, _, writer = await connect(18080)
            seen.append(name)
            await hangup(writer)
        assert seen in (["a", "b", "a", "b"], ["b", "a", "b", "a"])


async def test_endpoint_change_is_live_and_keeps_open_connections(services: Proxy) -> None:
    async with backend("old", "127.77.1.1") as old, backend("new", "127.77.1.2") as new:
        services.set_endpoints("default", "web", {"http": [old]})  # before the Service: kept
        await services.set_service("default", "web", CLUSTER_IP, {"http": 18081})
        name, reader, writer = await connect(18081)
        assert name == "old"
        services.set_endpoints("default", "web", {"http": [new]})
        await services.synced()
        name2, _, writer2 = await connect(18081)  # the very next connection
        assert name2 == "new"
        writer.write(b"still there?\n")
        assert await asyncio.wait_for(reader.readline(), 2) == b"old:still there?\n"
        await hangup(writer)
        await hangup(writer2)


async def test_no_endpoints_closes_the_connection(services: Proxy) -> None:
    await services.set_service("default", "empty", CLUSTER_IP, {"": 18082})
    reader, writer = await asyncio.open_connection(CLUSTER_IP, 18082)
    assert await asyncio.wait_for(reader.read(), 2) == b""
    await hangup(writer)


async def test_deleted_service_stops_listening_but_keeps_open_connections(
        services: Proxy) -> None:
    async with backend("a", "127.77.1.1") as a:
        await services.set_service("default", "web", CLUSTER_IP, {"http": 18083})
        services.set_endpoints("default", "web", {"http": [a]})
        await services.synced()
        _, reader, writer = await connect(18083)
        await services.remove_service("default", "web")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(CLUSTER_IP, 18083)
        writer.write(b"x\n")
        assert await asyncio.wait_for(reader.readline(), 2) == b"a:x\n"
        await hangup(writer)


async def test_large_transfer_both_ways(services: Proxy) -> None:
    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = 0
        while data := await reader.read(1 << 20):
            total += len(data)
        writer.write(str(total).encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(sink, "127.77.1.3", 0)
    port = server.sockets[0].getsockname()[1]
    await services.set_service("default", "sink", CLUSTER_IP, {"": 18084})
    services.set_endpoints("default", "sink", {"": [("127.77.1.3", port)]})
    await services.synced()
    reader, writer = await asyncio.open_connection(CLUSTER_IP, 18084)
    block = b"x" * (1 << 20)
    for _ in range(32):
        writer.write(block)
        await writer.drain()
    writer.write_eof()  # half-close: the answer still has to come back
    assert await asyncio.wait_for(reader.read(), 5) == str(32 << 20).encode()
    await hangup(writer)
    server.close()


async def test_endpoints_arriving_during_the_bind_are_not_lost(
        local_services: ServiceProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kubectl expose` of Ready pods: the Endpoints follow the Service at once, while its
    listener is still being bound. They used to be lost until the next endpoints change."""
    bound, resume = asyncio.Event(), asyncio.Event()
    real_start = proxy_module.PortProxy.start

    async def start_and_pause(self: proxy_module.PortProxy) -> None:
        await real_start(self)
        bound.set()
        await resume.wait()

    monkeypatch.setattr(proxy_module.PortProxy, "start", start_and_pause)
    async with backend("a", "127.77.1.1") as a:
        binding = asyncio.create_task(local_services.set_service("default", "api", CLUSTER_IP,
                                                           {"": 18085}))
        await bound.wait()
        local_services.set_endpoints("default", "api", {"": [a]})
        resume.set()
        await binding
        reader, writer = await asyncio.open_connection(CLUSTER_IP, 18085)
        try:
            assert await asyncio.wait_for(reader.readline(), 2) == b"a\n"
        finally:
            await hangup(writer)


def test_privileged_ports_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy_module.os, "geteuid", lambda: 0)
    assert proxy_module.privileged_ports_note() is None
    monkeypatch.setattr(proxy_module.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(proxy_module, "unprivileged_port_start", lambda: 1024)
    note = proxy_module.privileged_ports_note()
    assert note is not None
    assert "\n" not in note
    assert "below 1024" in note
    assert "root" in note


async def test_endpoints_seen_while_the_listener_binds_are_used(
    local_services: ServiceProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Endpoints event may be handled while the Service's listener is still being bound."""
    entered, gate = asyncio.Event(), asyncio.Event()
    bind = proxy_module.PortProxy.start

    async def slow_bind(self: proxy_module.PortProxy) -> None:
        entered.set()
        await gate.wait()
        await bind(self)

    monkeypatch.setattr(proxy_module.PortProxy, "start", slow_bind)
    async with backend("a", "127.77.1.1") as a:
        adding = asyncio.create_task(
            local_services.set_service("default", "web", CLUSTER_IP, {"http": 18080}))
        await entered.wait()
        local_services.set_endpoints("default", "web", {"http": [a]})
        gate.set()
        await adding
        name, _, writer = await connect(18080)
        assert name == "a"
        await hangup(writer)


async def test_the_child_process_is_started_again_with_what_it_had_and_leaves_nothing() -> None:
    proxy = ProxyProcess()
    await proxy.start()
    try:
        async with backend("a", "127.77.1.1") as a:
            await proxy.set_service("default", "web", CLUSTER_IP, {"http": 18086})
            proxy.set_endpoints("default", "web", {"http": [a]})
            await proxy.synced()
            first = proxy.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)  # kube-proxy crashed: its DaemonSet starts it again

            async def answers() -> bool:
                if proxy.pid in (None, first):
                    return False
                try:
                    name, _, writer = await connect(18086)
                except (OSError, TimeoutError):
                    return False
                await hangup(writer)
                return name == "a"

            await eventually(answers, timeout=10, interval=0.05)
    finally:
        await proxy.stop()
    second = proxy.pid
    assert second is not None
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(CLUSTER_IP, 18086)
