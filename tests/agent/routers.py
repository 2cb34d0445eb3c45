"""Fake upstreams for the request router: small aiohttp servers that say who answered and what
they got, and a router listening on 127.0.0.1 in front of them."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h11
from aiohttp import web

from kubetunnel.filters import make_filter
from kubetunnel.intercepts import Intercept, Intercepts, Mode
from kubetunnel.tunnel.framing import OPEN_INBOUND
from kubetunnel.tunnel.streams import Stream
from modes.agent.h1 import H1Connection
from modes.agent.routing import Router
from modes.agent.upstreams import Dial, tcp_dial, tunnel_dial
from tests.operator.cluster import eventually


@dataclass
class Upstream:
    """One fake HTTP server; ``hold`` (when set) is awaited before answering."""

    name: str
    runner: web.AppRunner | None = None
    port: int = 0
    peers: set[int] = field(default_factory=set)  # client ports seen: connections made to it
    requests: int = 0
    status: int = 200
    hold: asyncio.Event | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer is not None:
            self.peers.add(peer[1])
        body = await request.read()
        if self.hold is not None:
            await self.hold.wait()
        if "delay" in request.query:  # makes a wrong (out of order) router fail, asserts nothing
            await asyncio.sleep(float(request.query["delay"]))
        answer = {"who": self.name, "method": request.method, "path": request.path_qs,
                  "dev": request.headers.get("x-dev"), "len": len(body),
                  "sha": hashlib.sha256(body).hexdigest()}
        if "chunks" in request.query:
            response = web.StreamResponse(status=self.status)
            response.enable_chunked_encoding()
            await response.prepare(request)
            for i in range(int(request.query["chunks"])):
                await response.write(bytes([65 + i % 26]) * 10_000)
            await response.write(json.dumps(answer).encode())
            await response.write_eof()
            return response
        return web.json_response(answer, status=self.status)


async def start_upstream(name: str, status: int = 200) -> Upstream:
    upstream = Upstream(name, status=status)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", upstream.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream.runner = runner
    upstream.port = runner.addresses[0][1]
    return upstream


def intercept(intercept_id: str, *headers: str, mode: Mode = Mode.FILTERED,
              path_prefix: str | None = None, created: float | None = None) -> Intercept:
    return Intercept(intercept_id, mode, make_filter(headers, path_prefix),
                     created if created is not None else float(len(intercept_id)),
                     f"{intercept_id}@laptop")


@dataclass
class Routed:
    router: Router
    server: asyncio.Server
    port: int

    def update(self, intercepts: list[Intercept], dials: dict[str, Dial]) -> None:
        self.router.update(Intercepts(intercepts), dials)

    async def aclose(self) -> None:
        self.server.close()
        await self.router.aclose()
        await self.server.wait_closed()


async def start_router(origin_port: int | None, **kwargs: Any) -> Routed:
    router = Router(None if origin_port is None else ("127.0.0.1", origin_port), dial_timeout=2,
                    **kwargs)
    loop = asyncio.get_running_loop()
    holder: list[int] = []
    server = await loop.create_server(lambda: H1Connection(router, holder[0]), "127.0.0.1", 0)
    holder.append(server.sockets[0].getsockname()[1])
    return Routed(router, server, holder[0])


def app_dial(stack: Any) -> Dial:
    """Through ``stack``'s tunnel (tests.agent.conftest.Stack) to its local ``app`` server,
    as the shared agent dials a developer's laptop."""
    def open_stream() -> Stream | None:
        session = stack.agent.session
        return None if session is None else session.open_stream(OPEN_INBOUND, stack.port("app"))

    return tunnel_dial(open_stream)


def dial_to(upstream: Upstream) -> Dial:
    return tcp_dial("127.0.0.1", upstream.port, 2)


async def read_responses(reader: asyncio.StreamReader, count: int,
                         head_methods: tuple[str, ...] = ()) -> list[tuple[int, bytes]]:
    """``count`` responses parsed with h11 (a parser independent of the router's)."""
    conn = h11.Connection(h11.CLIENT)
    answers: list[tuple[int, bytes]] = []
    for index in range(count):
        method = head_methods[index] if index < len(head_methods) else "GET"
        conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        status, body = 0, bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(reader.read(65536), 10)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed before the response ended")
        answers.append((status, bytes(body)))
        conn.start_next_cycle()
    return answers


async def until(predicate: Callable[[], object], timeout: float = 10) -> None:
    async def probe() -> bool:
        return bool(predicate())

    await eventually(probe, timeout=timeout, interval=0.01)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
