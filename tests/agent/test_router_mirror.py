"""Mirrors never touch the real path, and requests to a laptop go through the tunnel, falling
back to the origin when the laptop's local process is gone."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from kubetunnel.intercepts import Mode
from kubetunnel.transports import loopback
from kubetunnel.tunnel.client import ClientOptions
from modes.agent.upstreams import tcp_dial

from .conftest import FAST, close_stack, make_stack
from .routers import Upstream, app_dial, dial_to, intercept, start_router, start_upstream, until

REQUESTS = 10


@pytest.fixture
async def origin() -> AsyncIterator[Upstream]:
    made = await start_upstream("origin")
    yield made
    assert made.runner is not None
    await made.runner.cleanup()


async def _send_all(port: int) -> list[tuple[int, bytes]]:
    answers = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for index in range(REQUESTS):
            async with session.post(f"http://127.0.0.1:{port}/m?n={index}",
                                    data=b"body %d" % index) as response:
                answers.append((response.status, await response.read()))
    return answers


async def _baseline(origin: Upstream) -> list[tuple[int, bytes]]:
    made = await start_router(origin.port)
    try:
        return await _send_all(made.port)
    finally:
        await made.aclose()


async def test_slow_mirror_drops_copies_and_never_delays_the_real_path(origin: Upstream) -> None:
    expected = await _baseline(origin)
    mirror = await start_upstream("mirror")
    mirror.hold = asyncio.Event()  # answers nothing until released
    made = await start_router(origin.port, mirror_queue=2, mirror_linger=0)
    try:
        made.update([intercept("m", mode=Mode.MIRROR)], {"m": dial_to(mirror)})
        # All ten answered while the mirror holds its first copy: the real path never waits.
        assert await _send_all(made.port) == expected
        stats = made.router.mirror_stats()["m"]
        await until(lambda: mirror.requests == 1)
        mirror.hold.set()
        await until(lambda: stats.mirrored + stats.dropped + stats.failed == REQUESTS)
        assert (stats.mirrored, stats.dropped, stats.failed) == (3, 7, 0)
    finally:
        await made.aclose()
        assert mirror.runner is not None
        await mirror.runner.cleanup()


async def test_a_copy_goes_to_the_mirror_only_after_the_real_answer(origin: Upstream) -> None:
    mirror = await start_upstream("mirror")
    origin.hold = asyncio.Event()
    made = await start_router(origin.port)
    try:
        made.update([intercept("m", mode=Mode.MIRROR)], {"m": dial_to(mirror)})
        copies = made.router.mirror_stats()
        assert set(copies) == {"m"}
        sent = asyncio.ensure_future(_send_all(made.port))
        # The origin holds the first request, which the agent has read whole: no copy yet.
        await until(lambda: origin.requests == 1)
        queue = made.router.mirror("m")
        assert queue is not None
        assert queue.pending == 0
        assert mirror.requests == 0
        origin.hold.set()
        answers = await sent
        assert [status for status, _ in answers] == [200] * REQUESTS
        await until(lambda: copies["m"].mirrored == REQUESTS)
        assert mirror.requests == REQUESTS
    finally:
        origin.hold.set()
        await made.aclose()
        assert mirror.runner is not None
        await mirror.runner.cleanup()


async def test_copies_that_queued_meanwhile_go_out_pipelined(origin: Upstream) -> None:
    """The mirror holds its first answer until the client has all ten answers: the other nine
    copies queue meanwhile and then arrive together, before any of them is answered (one copy
    at a time would never have two unanswered)."""
    released = asyncio.Event()
    unanswered: list[int] = []  # after each read: requests received and not answered yet

    async def local(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer, answered = b"", 0
        while answered < REQUESTS and (data := await reader.read(65536)):
            buffer += data
            heads = buffer.count(b"\r\n\r\n")
            unanswered.append(heads - answered)
            if answered == 0:
                await released.wait()
            for _ in range(heads - answered):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            answered = heads
            await writer.drain()

    server = await asyncio.start_server(local, "127.0.0.1", 0)
    made = await start_router(origin.port)
    try:
        made.update([intercept("m", mode=Mode.MIRROR)],
                    {"m": tcp_dial("127.0.0.1", server.sockets[0].getsockname()[1], 2)})
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            for index in range(REQUESTS):
                async with session.get(f"http://127.0.0.1:{made.port}/p?n={index}") as response:
                    assert response.status == 200
        released.set()
        stats = made.router.mirror_stats()["m"]
        await until(lambda: stats.mirrored + stats.failed == REQUESTS)
        assert (stats.mirrored, stats.dropped, stats.failed) == (REQUESTS, 0, 0)
        assert max(unanswered) >= 2, unanswered
    finally:
        released.set()
        await made.aclose()
        server.close()


async def test_copies_wait_a_moment_for_others_to_go_with_them(origin: Upstream) -> None:
    """With a linger, copies of requests that follow one another closely share a write: the
    mirror, answering at once, still finds several requests in one read."""
    unanswered: list[int] = []

    async def local(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer, answered = b"", 0
        while data := await reader.read(65536):
            buffer += data
            heads = buffer.count(b"\r\n\r\n")
            unanswered.append(heads - answered)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" * (heads - answered))
            answered = heads

    server = await asyncio.start_server(local, "127.0.0.1", 0)
    made = await start_router(origin.port, mirror_linger=0.5)
    try:
        made.update([intercept("m", mode=Mode.MIRROR)],
                    {"m": tcp_dial("127.0.0.1", server.sockets[0].getsockname()[1], 2)})
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            for index in range(3):
                async with session.get(f"http://127.0.0.1:{made.port}/p?n={index}") as response:
                    assert response.status == 200
        stats = made.router.mirror_stats()["m"]
        await until(lambda: stats.mirrored + stats.failed == 3)
        assert (stats.mirrored, stats.dropped, stats.failed) == (3, 0, 0)
        assert max(unanswered) >= 2, unanswered
    finally:
        await made.aclose()
        server.close()


async def test_dead_mirror_counts_failures(origin: Upstream) -> None:
    expected = await _baseline(origin)
    closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    made = await start_router(origin.port)
    try:
        made.update([intercept("m", mode=Mode.MIRROR)], {"m": tcp_dial("127.0.0.1", port)})
        assert await _send_all(made.port) == expected
        stats = made.router.mirror_stats()["m"]
        await until(lambda: stats.failed + stats.dropped == REQUESTS)
        assert stats.mirrored == 0
    finally:
        await made.aclose()


async def test_mirror_answering_500_changes_nothing(origin: Upstream) -> None:
    expected = await _baseline(origin)
    mirror = await start_upstream("mirror", status=500)
    made = await start_router(origin.port)
    try:
        made.update([intercept("m", "x-dev~.*", mode=Mode.MIRROR)], {"m": dial_to(mirror)})
        # Without the header: no copy.
        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{made.port}/plain") as response:
            assert response.status == 200
        answers = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),
                                         headers={"x-dev": "alice"}) as session:
            for index in range(REQUESTS):
                async with session.post(f"http://127.0.0.1:{made.port}/m?n={index}",
                                        data=b"body %d" % index) as response:
                    answers.append((response.status, await response.read()))
        assert [status for status, _ in answers] == [status for status, _ in expected]
        assert [b.replace(b'"alice"', b"null") for _, b in answers] == [b for _, b in expected]
        stats = made.router.mirror_stats()["m"]
        await until(lambda: stats.mirrored == REQUESTS)
        assert mirror.requests == REQUESTS
        assert (stats.dropped, stats.failed) == (0, 0)
        assert len(mirror.peers) == 1  # copies went over one kept-alive connection
    finally:
        await made.aclose()
        assert mirror.runner is not None
        await mirror.runner.cleanup()


async def _local_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The developer's process: answers one request (echoing its body's digest), then closes."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        body = await reader.readexactly(length)
        answer = b'{"who": "local", "sha": "%s"}' % hashlib.sha256(body).hexdigest().encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%b" % (len(answer), answer))
        await writer.drain()
    finally:
        writer.close()


async def test_requests_reach_the_laptop_through_the_tunnel_and_fall_back(
    origin: Upstream, fresh_loopback_hub: loopback.LoopbackHub,
) -> None:
    stack = await make_stack("direct", fresh_loopback_hub, app=_local_once)
    made = await start_router(origin.port)
    try:
        # The CLI probes once, and not again: the stopped process is found by the next dial.
        client = stack.client(options=ClientOptions(session=FAST.session, probe_interval=3600,
                                                    handshake_timeout=2))
        client.start()
        await client.wait_connected(5)
        await until(lambda: stack.agent.local_answering)

        made.update([intercept("alice", "x-dev=alice")], {"alice": app_dial(stack)})
        body = b"p" * 300_000
        digest = hashlib.sha256(body).hexdigest()
        async with aiohttp.ClientSession(headers={"x-dev": "alice"}) as session:
            async with session.post(f"http://127.0.0.1:{made.port}/a", data=body) as response:
                assert await response.json() == {"who": "local", "sha": digest}
            server = stack.servers["app"]
            server.close()
            await server.wait_closed()
            async with session.post(f"http://127.0.0.1:{made.port}/b", data=body) as response:
                answer = await response.json()
        assert (answer["who"], answer["sha"]) == ("origin", digest)
        assert made.router.counters.failed_back == 1
        assert made.router.counters.handed_over == 1  # after the stream's CONNECT_FAILED
        assert made.router.counters.reset == 0
    finally:
        await made.aclose()
        await close_stack(stack)


async def test_a_laptops_stream_is_kept_alive_between_requests(
    origin: Upstream, fresh_loopback_hub: loopback.LoopbackHub,
) -> None:
    connections = 0

    async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        counted = False  # the CLI's probes connect too, and send nothing
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                if not counted:
                    counted = True
                    connections += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nlocal")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    stack = await make_stack("direct", fresh_loopback_hub, app=keep_alive)
    made = await start_router(origin.port)
    try:
        await stack.connected_client()

        made.update([intercept("alice", "x-dev=alice")], {"alice": app_dial(stack)})
        for index in range(6):
            # A new client connection each time: the upstream stream is the pool's, not theirs.
            async with aiohttp.ClientSession() as session, session.get(
                    f"http://127.0.0.1:{made.port}/{index}",
                    headers={"x-dev": "alice"}) as response:
                assert await response.read() == b"local"
        assert connections == 1  # one tunnel stream, one local connection, six requests
        assert made.router.pool.idle("local:alice") == 1
    finally:
        await made.aclose()
        await close_stack(stack)
