"""Mirrors of h2c streams (gRPC's way): a copy of each matching stream reaches the mirror's local
h2c server as sent, while the client keeps getting the origin's answers, whatever the mirror's
local process does."""

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

from kubetunnel.intercepts import Mode
from kubetunnel.transports import loopback
from modes.agent.mirroring import COPY_LIMIT
from modes.agent.upstreams import tcp_dial

from .conftest import close_stack, make_stack
from .h2servers import H2Server, events_until, raw_client, start_h2
from .routers import Routed, app_dial, intercept, start_router, until

REQUESTS = 10
GRPC = [(":method", "POST"), (":scheme", "http"), (":authority", "orders"),
        (":path", "/orders.Orders/Get"), ("content-type", "application/grpc"),
        ("te", "trailers")]


@pytest.fixture
async def origin() -> AsyncIterator[H2Server]:
    made = await start_h2("origin")
    yield made
    await made.aclose()


def _mirrored(routed: Routed, port: int) -> None:
    """One mirror intercept on ``x-tenant=acme`` (metadata, for gRPC)."""
    routed.update([intercept("m", "x-tenant=acme", mode=Mode.MIRROR)],
                  {"m": tcp_dial("127.0.0.1", port, 2)})


async def _call(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                conn: h2.connection.H2Connection, sid: int, extra: list[tuple[str, str]],
                body: bytes, trailers: list[tuple[str, str]] | None,
                ) -> tuple[list[tuple[str, str]], bytes, list[tuple[str, str]]]:
    """One request on a raw h2 client; the answer's headers, body and trailers."""
    conn.send_headers(sid, GRPC + extra, end_stream=not body and not trailers)
    sent = 0
    while sent < len(body):
        room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
        if room > 0:
            conn.send_data(sid, body[sent:sent + room],
                           end_stream=not trailers and sent + room >= len(body))
            sent += room
            writer.write(conn.data_to_send())
        else:
            await events_until(reader, writer, conn, h2.events.WindowUpdated)
    if trailers:
        conn.send_headers(sid, trailers, end_stream=True)
    writer.write(conn.data_to_send())
    headers: list[tuple[str, str]] = []
    data, answer_trailers = bytearray(), []
    while True:
        events = await events_until(reader, writer, conn, h2.events.Event)
        for event in events:
            if getattr(event, "stream_id", None) != sid:
                continue
            if isinstance(event, h2.events.ResponseReceived):
                headers = list(event.headers)  # type: ignore[arg-type]
            elif isinstance(event, h2.events.DataReceived):
                data += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, sid)
            elif isinstance(event, h2.events.TrailersReceived):
                answer_trailers = list(event.headers)  # type: ignore[arg-type]
            elif isinstance(event, h2.events.StreamEnded):
                writer.write(conn.data_to_send())
                return headers, bytes(data), answer_trailers


async def test_matching_grpc_streams_are_copied_as_sent(origin: H2Server) -> None:
    # The mirror answers each copy with 3 MB: read and acknowledged, or its windows close.
    mirror = await start_h2("mirror", padding=3_000_000)
    made = await start_router(origin.port, mirror_timeout=5)
    reader, writer, conn = await raw_client(made.port)
    try:
        _mirrored(made, mirror.port)
        body = b"\x00\x00\x03\x0d\x40" + bytes(range(256)) * 800  # past every initial window
        trailers = [("x-checksum", hashlib.sha256(body).hexdigest())]
        acme = [("x-tenant", "acme"), ("x-dev", "alice")]
        answers = [
            await _call(reader, writer, conn, 1, [], b"plain", None),
            await _call(reader, writer, conn, 3, acme, body, trailers),
            await _call(reader, writer, conn, 5, [("x-tenant", "globex")], body, None),
        ]
        # A matching stream the client resets is not copied; one without a body is.
        conn.send_headers(7, GRPC + acme)
        conn.send_data(7, b"partial")
        writer.write(conn.data_to_send())
        await until(lambda: origin.bodies.get(7) == b"partial")
        conn.reset_stream(7)
        writer.write(conn.data_to_send())
        answers.append(await _call(reader, writer, conn, 9, acme, b"", None))

        for (headers, data, answer_trailers), sent in zip(
                answers, [b"plain", body, body, b""], strict=True):
            assert dict(headers)[":status"] == "200"
            answer = json.loads(data)
            assert (answer["who"], answer["sha"]) == ("origin", hashlib.sha256(sent).hexdigest())
            assert answer_trailers == [("grpc-status", "0")]
        stats = made.router.mirror_stats()["m"]
        await until(lambda: stats.mirrored == 2)
        assert [(r.headers, r.body, r.trailers) for r in mirror.received] == [
            (GRPC + acme, body, trailers), (GRPC + acme, b"", None)]
        assert (stats.dropped, stats.failed) == (0, 0)
        assert mirror.connections == 1  # the copies' h2c connection is kept
        assert made.router.counters.reset == 0
    finally:
        writer.close()
        await made.aclose()
        await mirror.aclose()


BODIES = [b"%d" % index * 100 for index in range(REQUESTS)]


async def _send_all(port: int, tenant: str | None = "acme",
                    bodies: list[bytes] = BODIES) -> list[tuple[int, dict[str, str]]]:
    answers = []
    headers = {"content-type": "application/grpc", "te": "trailers"}
    if tenant is not None:
        headers["x-tenant"] = tenant
    async with httpx.AsyncClient(http1=False, http2=True) as client:
        for body in bodies:
            response = await client.post(f"http://127.0.0.1:{port}/orders.Orders/Get",
                                         content=body, headers=headers)
            assert response.http_version == "HTTP/2"
            answers.append((response.status_code, response.json()))
    return answers


def _expected(bodies: list[bytes] = BODIES) -> list[tuple[int, dict[str, str]]]:
    return [(200, {"who": "origin", "dev": None, "path": "/orders.Orders/Get",
                   "sha": hashlib.sha256(body).hexdigest()}) for body in bodies]


async def test_a_slow_mirror_drops_copies_and_never_delays_the_stream(origin: H2Server) -> None:
    mirror = await start_h2("mirror", hold=asyncio.Event())  # answers nothing until released
    made = await start_router(origin.port, mirror_queue=2)
    try:
        _mirrored(made, mirror.port)
        # All ten answered while the mirror holds its first copy: the real path never waits.
        assert await _send_all(made.port) == _expected()
        stats = made.router.mirror_stats()["m"]
        await until(lambda: len(mirror.received) == 1)
        assert mirror.hold is not None
        mirror.hold.set()
        await until(lambda: stats.mirrored + stats.dropped + stats.failed == REQUESTS)
        assert (stats.mirrored, stats.dropped, stats.failed) == (3, 7, 0)
    finally:
        await made.aclose()
        await mirror.aclose()


async def test_a_mirror_that_never_answers_counts_failures(origin: H2Server) -> None:
    mirror = await start_h2("mirror", hold=asyncio.Event())  # never released
    made = await start_router(origin.port, mirror_timeout=0.2)
    try:
        _mirrored(made, mirror.port)
        assert await _send_all(made.port) == _expected()
        stats = made.router.mirror_stats()["m"]
        await until(lambda: stats.failed == REQUESTS, timeout=30)
        assert (stats.mirrored, stats.dropped) == (0, 0)
        assert len(mirror.received) == REQUESTS  # each copy went out and timed out
    finally:
        await made.aclose()
        await mirror.aclose()


async def test_a_mirror_answering_500_changes_nothing(origin: H2Server) -> None:
    mirror = await start_h2("mirror", status=500)
    made = await start_router(origin.port)
    try:
        _mirrored(made, mirror.port)
        assert await _send_all(made.port, tenant=None) == _expected()  # not copied
        assert await _send_all(made.port) == _expected()
        stats = made.router.mirror_stats()["m"]
        await until(lambda: stats.mirrored == REQUESTS)
        assert [r.body for r in mirror.received] == BODIES
        assert all(("x-tenant", "acme") in r.headers for r in mirror.received)
        assert (stats.dropped, stats.failed) == (0, 0)
        assert mirror.connections == 1
    finally:
        await made.aclose()
        await mirror.aclose()


async def test_a_dead_mirror_counts_failures(origin: H2Server) -> None:
    made = await start_router(origin.port)
    try:
        closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = closed.sockets[0].getsockname()[1]
        closed.close()
        await closed.wait_closed()
        made.update([intercept("m", "x-tenant=acme", mode=Mode.MIRROR)],
                    {"m": tcp_dial("127.0.0.1", port)})
        assert await _send_all(made.port) == _expected()
        stats = made.router.mirror_stats()["m"]
        await until(lambda: stats.failed + stats.dropped == REQUESTS)
        assert stats.mirrored == 0
    finally:
        await made.aclose()


async def test_a_stream_too_large_to_copy_is_dropped(origin: H2Server) -> None:
    mirror = await start_h2("mirror")
    made = await start_router(origin.port)
    try:
        _mirrored(made, mirror.port)
        bodies = [b"a", b"b" * (COPY_LIMIT + 1), b"c"]
        assert await _send_all(made.port, bodies=bodies) == _expected(bodies)
        stats = made.router.mirror_stats()["m"]
        await until(lambda: stats.mirrored + stats.dropped == len(bodies))
        assert (stats.mirrored, stats.dropped, stats.failed) == (2, 1, 0)
        assert [r.body for r in mirror.received] == [b"a", b"c"]
    finally:
        await made.aclose()
        await mirror.aclose()


async def test_copies_reach_the_local_process_through_the_tunnel(
    origin: H2Server, fresh_loopback_hub: loopback.LoopbackHub,
) -> None:
    received: list[tuple[str | None, bytes]] = []

    async def local_grpc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The developer's gRPC server (the CLI's probes connect too, and send nothing)."""
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                    header_encoding="utf-8"))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        tenants: dict[int, str | None] = {}
        bodies: dict[int, bytearray] = {}
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        tenants[event.stream_id] = dict(event.headers).get("x-tenant")  # type: ignore[arg-type]
                        bodies[event.stream_id] = bytearray()
                    elif isinstance(event, h2.events.DataReceived):
                        bodies[event.stream_id] += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length,
                                                       event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        sid = event.stream_id
                        received.append((tenants.pop(sid), bytes(bodies.pop(sid))))
                        conn.send_headers(sid, [(":status", "200")], end_stream=True)
                writer.write(conn.data_to_send())
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    stack = await make_stack("direct", fresh_loopback_hub, app=local_grpc)
    made = await start_router(origin.port)
    try:
        await stack.connected_client()

        made.update([intercept("m", "x-tenant=acme", mode=Mode.MIRROR)],
                    {"m": app_dial(stack)})
        assert await _send_all(made.port) == _expected()
        stats = made.router.mirror_stats()["m"]
        await until(lambda: stats.mirrored == REQUESTS)
        assert received == [("acme", body) for body in BODIES]
        assert (stats.dropped, stats.failed) == (0, 0)
    finally:
        await made.aclose()
        await close_stack(stack)
