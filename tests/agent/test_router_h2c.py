"""HTTP/2 with prior knowledge (gRPC's way) on a filtered port: routed per stream by a metadata
header, with bodies, trailers and resets relayed, and the origin as the fallback."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator

import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from modes.agent.upstreams import tcp_dial

from .h2servers import H2Server, events_until, raw_client, start_h2
from .routers import Routed, intercept, start_router, until


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, H2Server]]:
    made = {name: await start_h2(name) for name in ("origin", "alice", "bob")}
    yield made
    for server in made.values():
        await server.aclose()


@pytest.fixture
async def routed(servers: dict[str, H2Server]) -> AsyncIterator[Routed]:
    made = await start_router(servers["origin"].port)
    made.update([intercept("alice", "x-dev=alice"), intercept("bob", "x-dev=bob")],
                {name: tcp_dial("127.0.0.1", servers[name].port) for name in ("alice", "bob")})
    yield made
    await made.aclose()


async def _call(client: httpx.AsyncClient, port: int, dev: str | None, body: bytes,
                path: str = "/orders.Orders/Get") -> dict[str, str]:
    headers = {"content-type": "application/grpc", "te": "trailers"}
    if dev:
        headers["x-dev"] = dev
    response = await client.post(f"http://127.0.0.1:{port}{path}", content=body,
                                 headers=headers)
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200
    answer: dict[str, str] = response.json()
    return answer


async def test_streams_on_one_connection_are_routed_by_metadata(
    routed: Routed, servers: dict[str, H2Server],
) -> None:
    async with httpx.AsyncClient(http1=False, http2=True) as client:
        calls = [(dev, b"request %d " % i * (i * 1000)) for i, dev in
                 enumerate(["alice", None, "bob", "alice", "mallory", "bob"] * 4)]
        answers = await asyncio.gather(*(_call(client, routed.port, dev, body)
                                         for dev, body in calls))
    for (dev, body), answer in zip(calls, answers, strict=True):
        assert answer["who"] == (dev if dev in ("alice", "bob") else "origin")
        assert answer["dev"] == dev
        assert answer["sha"] == hashlib.sha256(body).hexdigest()
    # One client connection: one upstream connection per target.
    assert [servers[n].connections for n in ("origin", "alice", "bob")] == [1, 1, 1]
    assert routed.router.counters.requests == len(calls)


async def test_large_bodies_respect_flow_control(routed: Routed) -> None:
    body = bytes(range(256)) * 20_000  # 5 MB: far past every initial window
    async with httpx.AsyncClient(http1=False, http2=True) as client:
        answer = await _call(client, routed.port, "bob", body)
    assert (answer["who"], answer["sha"]) == ("bob", hashlib.sha256(body).hexdigest())


async def test_unreachable_laptop_sends_its_streams_to_the_origin(
    servers: dict[str, H2Server],
) -> None:
    closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    made = await start_router(servers["origin"].port)
    try:
        made.update([intercept("alice", "x-dev=alice")], {"alice": tcp_dial("127.0.0.1", port)})
        async with httpx.AsyncClient(http1=False, http2=True) as client:
            answer = await _call(client, made.port, "alice", b"payload")
        assert answer["who"] == "origin"
        assert answer["sha"] == hashlib.sha256(b"payload").hexdigest()
        assert made.router.counters.failed_back == 1
    finally:
        await made.aclose()


async def test_trailers_come_back_and_resets_go_through(
    routed: Routed, servers: dict[str, H2Server],
) -> None:
    reader, writer, conn = await raw_client(routed.port)
    request = [(":method", "POST"), (":scheme", "http"), (":authority", "orders"),
               (":path", "/orders.Orders/Get"), ("x-dev", "bob"), ("te", "trailers")]
    conn.send_headers(1, request, end_stream=True)
    writer.write(conn.data_to_send())
    events = await events_until(reader, writer, conn, h2.events.StreamEnded)
    trailers = [e for e in events if isinstance(e, h2.events.TrailersReceived)]
    assert [dict(t.headers) for t in trailers] == [{"grpc-status": "0"}]  # type: ignore[arg-type]
    data = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert json.loads(data)["who"] == "bob"
    # A stream the client gives up on is reset at the upstream too.
    conn.send_headers(3, request)
    conn.send_data(3, b"partial")
    writer.write(conn.data_to_send())
    await until(lambda: 3 in servers["bob"].bodies and servers["bob"].bodies[3] == b"partial")
    conn.reset_stream(3)
    writer.write(conn.data_to_send())
    await until(lambda: servers["bob"].resets == 1)
    writer.close()


async def test_request_trailers_reach_the_upstream_and_the_answer_comes_back(
    routed: Routed, servers: dict[str, H2Server],
) -> None:
    reader, writer, conn = await raw_client(routed.port)
    request = [(":method", "POST"), (":scheme", "http"), (":authority", "orders"),
               (":path", "/orders.Orders/Put"), ("x-dev", "alice"), ("te", "trailers")]
    conn.send_headers(1, request)
    conn.send_data(1, b"message")
    conn.send_headers(1, [("x-checksum", "abc")], end_stream=True)
    writer.write(conn.data_to_send())
    events = await events_until(reader, writer, conn, h2.events.StreamEnded)
    data = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert json.loads(data)["who"] == "alice"
    [received] = servers["alice"].received
    assert (received.body, received.trailers) == (b"message", [("x-checksum", "abc")])
    assert routed.router.counters.reset == 0
    writer.close()
