"""The shared agent with real tunnels: two CLIs with different filters on one Service port, each
getting only its requests, and one CLI's local process going down sending its requests to the
origin (here a server on 127.0.0.2 at the agent's port number) while the other's stay its own."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from kubetunnel.plugins import TransportSettings, TunnelTarget
from kubetunnel.transports.direct import DirectTransport
from kubetunnel.tunnel.client import Route, TunnelClient
from modes.agent.server import AgentConfig
from modes.agent.shared import SharedAgent
from tests.agent.conftest import FAST, TOKEN
from tests.agent.routers import Upstream, intercept, start_upstream, until

ORIGIN = "127.0.0.2"


class Shared:
    def __init__(self, agent: SharedAgent, port: int) -> None:
        self.agent = agent
        self.port = port
        self.clients: list[TunnelClient] = []
        self.runners: list[web.AppRunner] = []

    def attach(self, name: str, local: Upstream) -> TunnelClient:
        assert self.agent.tunnel_address is not None
        host, port = self.agent.tunnel_address
        client = TunnelClient(
            DirectTransport(TransportSettings()), TunnelTarget("test", address=f"{host}:{port}"),
            TOKEN, [Route(self.port, local.port)], client_id=f"{name}@laptop", options=FAST,
            intercept=intercept(name, f"x-dev={name}").to_dict())
        self.clients.append(client)
        client.start()
        return client


@pytest.fixture
async def shared() -> AsyncIterator[Shared]:
    agent = SharedAgent(AgentConfig(
        token=TOKEN.encode(), ports=(0,), tunnel_port=0, health_port=None,
        bind_address="127.0.0.1", session=FAST.session, handshake_timeout=2,
        origin_address=ORIGIN, dial_timeout=2), report_interval=0.05)
    await agent.start()
    made = Shared(agent, agent.ports[0])
    origin = Upstream("origin")
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", origin.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, ORIGIN, made.port).start()
    made.runners.append(runner)
    yield made
    for client in made.clients:
        await client.aclose()
    await agent.aclose()
    for runner in made.runners:
        await runner.cleanup()


async def _who(session: aiohttp.ClientSession, port: int, dev: str | None) -> str:
    headers = {"x-dev": dev} if dev is not None else {}
    async with session.get(f"http://127.0.0.1:{port}/", headers=headers) as response:
        assert response.status == 200, await response.text()
        return str(json.loads(await response.read())["who"])


async def test_two_filters_on_one_port_and_one_local_process_down(shared: Shared) -> None:
    alice, bob = await start_upstream("alice"), await start_upstream("bob")
    assert alice.runner is not None
    assert bob.runner is not None
    shared.runners += [alice.runner, bob.runner]
    for name, local in (("alice", alice), ("bob", bob)):
        await shared.attach(name, local).wait_connected(5)
    members = shared.agent.members
    await until(lambda: set(members) == {"alice", "bob"}
                and all(m.answering for m in members.values()))

    # One kept-alive connection carries everyone's requests.
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        wanted = ["alice", "bob", None, "bob", "carol", "alice", None]
        assert [await _who(session, shared.port, d) for d in wanted] == [
            "alice", "bob", "origin", "bob", "origin", "alice", "origin"]
        assert (alice.requests, bob.requests) == (2, 2)
        assert shared.agent.counts("alice")["requests"] == 2

        # Bob's process stops: his requests go to the origin, alice's stay hers.
        shared.runners.remove(bob.runner)
        await bob.runner.cleanup()
        assert [await _who(session, shared.port, d) for d in ("bob", "alice", "bob", None)] == [
            "origin", "alice", "origin", "origin"]
        assert bob.requests == 2
    assert shared.agent.counts("alice")["requests"] == 3
    # What went to the origin instead is not counted as routed to bob.
    assert shared.agent.counts("bob")["requests"] == 2


async def test_a_draining_cli_gets_no_new_request_and_is_not_held_open(shared: Shared) -> None:
    alice = await start_upstream("alice")
    assert alice.runner is not None
    shared.runners.append(alice.runner)
    client = shared.attach("alice", alice)
    await client.wait_connected(5)
    members = shared.agent.members
    await until(lambda: "alice" in members and members["alice"].answering)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        assert await _who(session, shared.port, "alice") == "alice"
        assert client.inbound_streams() == 1  # the agent keeps that connection for the next

        # Ctrl-C: the CLI drains, waiting for its inbound streams to end. The idle kept-alive
        # one must not make it wait, and new requests for alice go to the origin at once.
        client.drain("stopping")
        await until(lambda: not members["alice"].answering)
        await until(lambda: client.inbound_streams() == 0)
        assert [await _who(session, shared.port, "alice") for _ in range(3)] == ["origin"] * 3
        assert alice.requests == 1
        assert client.inbound_streams() == 0
