"""The request router on HTTP/1.1: every request lands where its headers say, over kept-alive
and pipelined connections, with streamed bodies, upgrades, and the origin as the fallback."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import AsyncIterator

import aiohttp
import pytest

from modes.agent.routing import request_path

from .routers import (
    Routed,
    Upstream,
    dial_to,
    intercept,
    read_responses,
    start_router,
    start_upstream,
)


@pytest.fixture
async def upstreams() -> AsyncIterator[dict[str, Upstream]]:
    made = {name: await start_upstream(name) for name in ("origin", "alice", "bob", "carol")}
    yield made
    for upstream in made.values():
        assert upstream.runner is not None
        await upstream.runner.cleanup()


@pytest.fixture
async def routed(upstreams: dict[str, Upstream]) -> AsyncIterator[Routed]:
    made = await start_router(upstreams["origin"].port)
    made.update([intercept("alice", "x-dev=alice"), intercept("bob", "x-dev~bob|robert"),
                 intercept("carol", path_prefix="/carol/")],
                {name: dial_to(upstreams[name]) for name in ("alice", "bob", "carol")})
    yield made
    await made.aclose()


def _expected(dev: str | None, path: str) -> str:
    if dev == "alice":
        return "alice"
    if dev in ("bob", "robert"):
        return "bob"
    return "carol" if path.startswith("/carol/") else "origin"


async def test_keep_alive_connection_carries_requests_for_different_developers(
    routed: Routed, upstreams: dict[str, Upstream],
) -> None:
    rng = random.Random(7)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for index in range(60):
            dev = rng.choice(["alice", "bob", "robert", None, "mallory"])
            path = rng.choice(["/orders", "/carol/x", "/"]) + f"?n={index}"
            headers = {"x-dev": dev} if dev else {}
            async with session.get(f"http://127.0.0.1:{routed.port}{path}",
                                   headers=headers) as response:
                answer = await response.json()
            assert answer["who"] == _expected(dev, path), (dev, path)
            assert answer["path"] == path
            assert answer["dev"] == dev
    # One client connection; each upstream was reached over one kept-alive connection.
    for upstream in upstreams.values():
        assert len(upstream.peers) <= 1, upstream.name
    counters = routed.router.counters
    assert counters.requests == 60
    assert counters.reset == 0


async def test_first_made_intercept_wins(upstreams: dict[str, Upstream]) -> None:
    made = await start_router(upstreams["origin"].port)
    try:
        made.update([intercept("bob", "x-dev~.*", created=2.0),
                     intercept("alice", "x-dev=alice", created=1.0)],
                    {name: dial_to(upstreams[name]) for name in ("alice", "bob")})
        async with aiohttp.ClientSession() as session:
            for dev, who in (("alice", "alice"), ("bob", "bob"), (None, "origin")):
                headers = {"x-dev": dev} if dev else {}
                async with session.get(f"http://127.0.0.1:{made.port}/",
                                       headers=headers) as response:
                    assert (await response.json())["who"] == who
    finally:
        await made.aclose()


async def test_pipelined_requests_to_different_upstreams_answer_in_order(routed: Routed) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", routed.port)
    requests = [("alice", "/a?delay=0.2"), (None, "/b"), ("bob", "/c?delay=0.1"), (None, "/d"),
                ("alice", "/e")]
    data = b"".join(
        f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode()
        + (f"x-dev: {dev}\r\n".encode() if dev else b"") + b"\r\n"
        for dev, path in requests)
    writer.write(data)  # all in one write: the router sees them back to back
    answers = await read_responses(reader, len(requests))
    writer.close()
    got = [(json.loads(body)["who"], json.loads(body)["path"]) for _, body in answers]
    assert got == [(_expected(dev, path), path) for dev, path in requests]


async def test_chunked_bodies_both_ways(routed: Routed) -> None:
    body = random.Random(3).randbytes(3 * 1024 * 1024 + 17)
    reader, writer = await asyncio.open_connection("127.0.0.1", routed.port)
    writer.write(b"POST /upload?chunks=50 HTTP/1.1\r\nHost: x\r\nx-dev: bob\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    for start in range(0, len(body), 100_000):
        piece = body[start:start + 100_000]
        writer.write(b"%x;ext=1\r\n%b\r\n" % (len(piece), piece))
        await writer.drain()
    writer.write(b"0\r\nx-trailer: yes\r\n\r\n")
    # A second request on the same connection, after the chunked one, for another upstream.
    writer.write(b"GET /after HTTP/1.1\r\nHost: x\r\nx-dev: alice\r\n\r\n")
    (status, streamed), (_, after) = await read_responses(reader, 2)
    writer.close()
    assert status == 200
    assert streamed[:500_000] == b"".join(bytes([65 + i % 26]) * 10_000 for i in range(50))
    answer = json.loads(streamed[500_000:])
    assert answer["who"] == "bob"
    assert answer["len"] == len(body)
    assert answer["sha"] == hashlib.sha256(body).hexdigest()
    assert json.loads(after)["who"] == "alice"


async def test_content_length_body_and_expect_continue(routed: Routed) -> None:
    body = b"z" * 200_000
    async with aiohttp.ClientSession() as session, session.put(
            f"http://127.0.0.1:{routed.port}/p", data=body, expect100=True,
            headers={"x-dev": "alice"}) as response:
        answer = await response.json()
    assert (answer["who"], answer["len"]) == ("alice", len(body))


async def test_head_response_keeps_the_connection_in_step(routed: Routed) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", routed.port)
    writer.write(b"HEAD /h HTTP/1.1\r\nHost: x\r\nx-dev: alice\r\n\r\n"
                 b"GET /g HTTP/1.1\r\nHost: x\r\nx-dev: alice\r\n\r\n")
    (head_status, head_body), (_, body) = await read_responses(reader, 2, ("HEAD", "GET"))
    writer.close()
    assert (head_status, head_body) == (200, b"")
    assert json.loads(body)["path"] == "/g"


async def test_failed_local_dial_sends_the_request_to_the_origin(
    upstreams: dict[str, Upstream],
) -> None:
    made = await start_router(upstreams["origin"].port)
    closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()  # nothing listens there now: alice's "laptop" is down
    try:
        from modes.agent.upstreams import tcp_dial

        made.update([intercept("alice", "x-dev=alice")], {"alice": tcp_dial("127.0.0.1", port)})
        async with aiohttp.ClientSession() as session, session.post(
                f"http://127.0.0.1:{made.port}/x", data=b"payload",
                headers={"x-dev": "alice"}) as response:
            answer = await response.json()
        assert (answer["who"], answer["len"]) == ("origin", 7)
        assert made.router.counters.failed_back == 1
        assert made.router.counters.reset == 0
    finally:
        await made.aclose()


async def test_non_http_bytes_reach_the_origin_untouched() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    origin = await asyncio.start_server(echo, "127.0.0.1", 0)
    made = await start_router(origin.sockets[0].getsockname()[1])
    try:
        # A TLS ClientHello's first bytes, then noise.
        payload = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + random.Random(5).randbytes(
            300_000)
        reader, writer = await asyncio.open_connection("127.0.0.1", made.port)
        writer.write(payload)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(-1), 10) == payload
        writer.close()
        assert made.router.counters.raw == 1
    finally:
        await made.aclose()
        origin.close()
        await origin.wait_closed()


async def test_upgrade_hands_the_connection_over_raw(upstreams: dict[str, Upstream]) -> None:
    async def upgrading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"upgrade: echo" in head.lower()
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n"
                     b"Connection: Upgrade\r\n\r\n")
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()

    local = await asyncio.start_server(upgrading, "127.0.0.1", 0)
    made = await start_router(upstreams["origin"].port)
    try:
        from modes.agent.upstreams import tcp_dial

        made.update([intercept("alice", "x-dev=alice")],
                    {"alice": tcp_dial("127.0.0.1", local.sockets[0].getsockname()[1])})
        reader, writer = await asyncio.open_connection("127.0.0.1", made.port)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nx-dev: alice\r\nUpgrade: echo\r\n"
                     b"Connection: Upgrade\r\n\r\nfirst bytes;")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101")
        writer.write(b"GET / HTTP/1.1\r\n\r\n")  # raw now: not parsed, not routed
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(-1), 10) == \
            b"first bytes;GET / HTTP/1.1\r\n\r\n"
        writer.close()
    finally:
        await made.aclose()
        local.close()
        await local.wait_closed()


async def test_without_an_origin_unmatched_requests_are_reset(
    upstreams: dict[str, Upstream],
) -> None:
    made = await start_router(None)
    try:
        made.update([intercept("alice", "x-dev=alice")], {"alice": dial_to(upstreams["alice"])})
        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{made.port}/", headers={"x-dev": "alice"}) as response:
            assert (await response.json())["who"] == "alice"
        reader, writer = await asyncio.open_connection("127.0.0.1", made.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(-1), 10)
        writer.close()
        assert made.router.counters.reset == 1
    finally:
        await made.aclose()


@pytest.mark.parametrize(("target", "path"), [
    (b"/a/b?c=d", "/a/b"), (b"/", "/"), (b"http://h:1/x/y?q", "/x/y"), (b"http://h", "/"),
    (b"*", ""), (b"h:443", ""),
])
def test_request_path(target: bytes, path: str) -> None:
    assert request_path(target) == path



async def test_removing_an_intercept_sends_its_requests_to_the_origin(
    routed: Routed, upstreams: dict[str, Upstream],
) -> None:
    url = f"http://127.0.0.1:{routed.port}/"
    async with aiohttp.ClientSession(headers={"x-dev": "alice"}) as session:
        async with session.get(url) as response:
            assert (await response.json())["who"] == "alice"
        assert routed.router.pool.idle("local:alice") == 1
        routed.update([intercept("bob", "x-dev=bob")], {"bob": dial_to(upstreams["bob"])})
        assert routed.router.pool.idle("local:alice") == 0  # its kept-alive connection closed
        async with session.get(url) as response:
            assert (await response.json())["who"] == "origin"
