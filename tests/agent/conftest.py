"""An agent and a CLI-side TunnelClient wired together on 127.0.0.1, over the loopback or the
direct transport, in front of small local servers standing in for the developer's process."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from kubetunnel.plugins import Transport, TransportSettings, TunnelTarget
from kubetunnel.transports import loopback
from kubetunnel.transports.direct import DirectTransport
from kubetunnel.tunnel.client import ClientOptions, ConnectionListener, Route, TunnelClient
from kubetunnel.tunnel.session import SessionOptions
from modes.agent.server import Agent, AgentConfig

TOKEN = "s3cret-token"
FAST = ClientOptions(
    session=SessionOptions(ping_interval=1, ping_timeout=5),
    backoff_initial=0.05, backoff_max=0.2, probe_interval=0.05, handshake_timeout=2,
)


def download_for(size: int) -> bytes:
    return random.Random(size).randbytes(size)


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """8-byte download size, then an upload until EOF; answers sha256(upload) + the download."""
    try:
        size = int.from_bytes(await reader.readexactly(8), "big")
        digest = hashlib.sha256()
        while chunk := await reader.read(1 << 16):
            digest.update(chunk)
        writer.write(digest.digest())
        data = download_for(size)
        for start in range(0, len(data), 1 << 16):
            writer.write(data[start:start + (1 << 16)])
            await writer.drain()
        writer.close()
        await writer.wait_closed()
    except (ConnectionError, asyncio.IncompleteReadError):
        writer.close()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(1 << 16):
            writer.write(chunk)
            await writer.drain()
        writer.close()
        await writer.wait_closed()
    except ConnectionError:
        writer.close()


@dataclass
class Stack:
    agent: Agent
    kind: str
    servers: dict[str, asyncio.Server]
    routes: list[Route]
    clients: list[TunnelClient] = field(default_factory=list)
    statuses: list[tuple[bool, str]] = field(default_factory=list)

    def port(self, name: str) -> int:
        """The agent's service port that leads to local server ``name``."""
        index = list(self.servers).index(name)
        return self.routes[index].agent_port

    def local_port(self, name: str) -> int:
        return int(self.servers[name].sockets[0].getsockname()[1])

    def transport(self) -> tuple[Transport, TunnelTarget]:
        if self.kind == "loopback":
            return (loopback.LoopbackTransport(TransportSettings()),
                    TunnelTarget("test", address="agent"))
        assert self.agent.tunnel_address is not None
        host, port = self.agent.tunnel_address
        return DirectTransport(TransportSettings()), TunnelTarget("test", address=f"{host}:{port}")

    def client(self, token: str = TOKEN, client_id: str = "dev@laptop",
               options: ClientOptions = FAST,
               on_connection: ConnectionListener | None = None) -> TunnelClient:
        transport, target = self.transport()
        client = TunnelClient(transport, target, token, self.routes, client_id=client_id,
                              options=options, on_connection=on_connection)
        self.clients.append(client)
        return client

    async def connected_client(self) -> TunnelClient:
        client = self.client()
        client.start()
        await client.wait_connected(5)
        return client


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def make_stack(kind: str, hub: loopback.LoopbackHub, origin: str | None = None,
                     **handlers: Handler) -> Stack:
    """``origin``: the agent's origin address (the tests bind their origin servers there)."""
    servers = {name: await asyncio.start_server(handler, "127.0.0.1", 0)
               for name, handler in handlers.items()}
    statuses: list[tuple[bool, str]] = []

    async def on_status(up: bool, reason: str) -> None:
        statuses.append((up, reason))

    agent = Agent(AgentConfig(token=TOKEN.encode(), ports=tuple(0 for _ in servers),
                              tunnel_port=0, health_port=None, bind_address="127.0.0.1",
                              session=FAST.session, handshake_timeout=2,
                              origin_address=origin, dial_timeout=2),
                  on_status=on_status)
    await agent.start()
    if kind == "loopback":
        hub.listen("agent", agent.handle_tunnel)
    bound = agent.ports
    routes = [Route(bound[i], int(server.sockets[0].getsockname()[1]))
              for i, server in enumerate(servers.values())]
    return Stack(agent, kind, servers, routes, statuses=statuses)


async def close_stack(stack: Stack) -> None:
    for client in stack.clients:
        await client.aclose()
    await stack.agent.aclose()
    for server in stack.servers.values():
        server.close()
        await server.wait_closed()


@pytest.fixture(params=["loopback", "direct"])
async def stack(request: pytest.FixtureRequest,
                fresh_loopback_hub: loopback.LoopbackHub) -> AsyncIterator[Stack]:
    made = await make_stack(request.param, fresh_loopback_hub, exchange=exchange, echo=echo)
    yield made
    await close_stack(made)


@pytest.fixture
async def direct_stack(fresh_loopback_hub: loopback.LoopbackHub) -> AsyncIterator[Stack]:
    made = await make_stack("direct", fresh_loopback_hub, exchange=exchange, echo=echo)
    yield made
    await close_stack(made)
