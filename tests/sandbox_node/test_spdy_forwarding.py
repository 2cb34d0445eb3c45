"""Port-forward over a SPDY session, driven through an in-memory channel as a kubelet endpoint
would drive it: stream pairing, copying, half-close, failures, and a broken peer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from modes.sandbox.node.spdy import forwarding, framing
from modes.sandbox.node.spdy.forwarding import DialError
from modes.sandbox.node.spdy.sessions import BUFFER_LIMIT, SpdySession
from tests.sandbox_node.spdyclient import SpdyClient, channel_pair
from tests.sandbox_node.threaded import echo_handler


@dataclass
class Pod:
    """A loopback port that echoes until the client half-closes, then closes."""

    port: int = 0
    dialled: list[int] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await echo_handler(reader, writer)
        finally:
            self.closed.set()

    async def dial(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.dialled.append(port)
        if port == 9:
            raise DialError("error forwarding port 9 to pod p: connection refused")
        return await asyncio.open_connection("127.0.0.1", self.port)


@dataclass
class Session:
    client: SpdyClient
    pod: Pod
    served: asyncio.Task[None]


@pytest.fixture
async def session() -> AsyncIterator[Session]:
    pod = Pod()
    server = await asyncio.start_server(pod.handle, "127.0.0.1", 0)
    pod.port = server.sockets[0].getsockname()[1]
    ours, theirs = channel_pair()
    served = asyncio.create_task(forwarding.serve(theirs, pod.dial, "default/p"), name="serve")
    client = SpdyClient(ours)
    try:
        yield Session(client, pod, served)
    finally:
        await client.aclose()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(served, 10)
        server.close()
        await server.wait_closed()


async def test_a_pair_copies_both_ways_and_finishes_once_the_pod_closes(
        session: Session) -> None:
    client = session.client
    await client.open(1, "error")
    await client.send(framing.Data(1, fin=True))  # as client-go does at once
    await client.open(3, "data")
    payload = bytes(range(256)) * 4096 * 3  # 3 MiB, more than a stream buffers
    for start in range(0, len(payload), 50_000):
        await client.send(framing.Data(3, payload[start : start + 50_000]))
    await client.send(framing.Data(3, fin=True))
    await client.wait(lambda: client.seen(3).fin and client.seen(1).fin, timeout=30)
    assert client.seen(1).replied
    assert client.seen(3).replied
    assert bytes(client.seen(3).data) == payload
    assert client.seen(1).data == b""
    assert client.seen(1).reset is None
    assert client.seen(3).reset is None
    assert session.pod.dialled == [8080]


async def test_a_failed_dial_is_written_to_the_error_stream_and_both_are_reset(
        session: Session) -> None:
    client = session.client
    await client.open(1, "error", port=9)
    await client.open(3, "data", port=9)
    await client.wait(lambda: client.seen(1).reset and client.seen(3).reset)
    assert bytes(client.seen(1).data) == b"error forwarding port 9 to pod p: connection refused"
    assert client.seen(3).reset == framing.CANCEL


@pytest.mark.parametrize("headers", [
    {"streamtype": ["data"]},
    {"streamtype": ["data"], "port": ["http"]},
    {"streamtype": ["data"], "port": ["0"]},
    {"streamtype": ["data"], "port": ["70000"]},
    {"port": ["8080"]},
    {"port": ["8080"], "streamtype": ["stdin"]},
])
async def test_a_stream_with_bad_headers_is_refused(
        session: Session, headers: framing.Headers) -> None:
    client = session.client
    await client.send(framing.SynStream(1, headers))
    await client.wait(lambda: client.seen(1).reset)
    assert not client.seen(1).replied
    await client.open(3, "error")  # the session goes on
    await client.wait(lambda: client.seen(3).replied)


async def test_pairs_are_matched_by_request_id_when_interleaved(session: Session) -> None:
    client = session.client
    await client.open(1, "error", request="a")
    await client.open(3, "error", request="b")
    await client.open(5, "data", request="b")
    await client.open(7, "data", request="a")
    await client.send(framing.Data(7, b"for a", fin=True), framing.Data(5, b"for b", fin=True))
    await client.wait(lambda: client.seen(5).fin and client.seen(7).fin)
    assert bytes(client.seen(7).data) == b"for a"
    assert bytes(client.seen(5).data) == b"for b"


async def test_clients_without_request_ids_are_paired_by_stream_id(session: Session) -> None:
    client = session.client
    await client.open(1, "error", request=None)
    await client.open(3, "data", request=None)
    await client.send(framing.Data(3, b"old", fin=True))
    await client.wait(lambda: client.seen(3).fin and client.seen(1).fin)
    assert bytes(client.seen(3).data) == b"old"


async def test_a_second_data_stream_for_a_request_is_refused_and_reported(
        session: Session) -> None:
    client = session.client
    await client.open(1, "error", request="r")
    await client.open(3, "data", request="x")
    await client.open(5, "data", request="x")
    await client.wait(lambda: client.seen(5).reset)
    await client.open(7, "error", request="x")  # completes x with its first data stream
    await client.send(framing.Data(3, b"still fine", fin=True))
    await client.wait(lambda: client.seen(3).fin)
    assert bytes(client.seen(3).data) == b"still fine"


async def test_a_client_reset_closes_the_pod_connection(session: Session) -> None:
    client = session.client
    await client.open(1, "error")
    await client.open(3, "data")
    await client.send(framing.Data(3, b"ping"))
    await client.wait(lambda: client.seen(3).data == b"ping")
    await client.send(framing.RstStream(3, framing.CANCEL))
    async with asyncio.timeout(10):
        await session.pod.closed.wait()
    await client.wait(lambda: client.seen(1).fin)


async def test_pings_are_answered_and_flow_control_frames_ignored(session: Session) -> None:
    client = session.client
    await client.send(framing.Settings(((0, 7, 1024),)), framing.WindowUpdate(0, 10),
                      framing.Ping(1), framing.Ping(2))
    await client.wait(lambda: framing.Ping(1) in client.others)
    assert framing.Ping(2) not in client.others  # even ids are the server's own


async def test_stream_ids_must_be_odd_and_increasing(session: Session) -> None:
    client = session.client
    await client.open(5, "error")
    await client.open(3, "data")
    await client.open(6, "data")
    await client.wait(lambda: client.seen(3).reset and client.seen(6).reset)
    assert client.seen(3).reset == framing.PROTOCOL_ERROR
    assert client.seen(5).replied


async def test_malformed_bytes_end_the_session_with_a_goaway(session: Session) -> None:
    client = session.client
    await client.open(1, "error")
    await client.open(3, "data")
    await client.send(framing.Data(3, b"x"))
    await client.wait(lambda: client.seen(3).data == b"x")
    await client.channel.write(b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01")  # SPDY/2
    await client.wait(lambda: client.ended)
    assert framing.GoAway(3, framing.GOAWAY_PROTOCOL_ERROR) in client.others
    async with asyncio.timeout(10):
        await session.served
        await session.pod.closed.wait()


async def test_goaway_ends_the_session_and_closes_every_pod_connection(
        session: Session) -> None:
    client = session.client
    await client.open(1, "error")
    await client.open(3, "data")
    await client.send(framing.Data(3, b"x"))
    await client.wait(lambda: client.seen(3).data == b"x")
    await client.send(framing.GoAway(0))
    async with asyncio.timeout(10):
        await session.served
        await session.pod.closed.wait()
    await client.wait(lambda: client.ended)  # the server hangs up without a GOAWAY of its own
    assert client.others == []


async def test_an_unread_stream_holds_the_connection_back_instead_of_buffering_without_end(
) -> None:
    ours, theirs = channel_pair()
    session = SpdySession(theirs)
    reading = asyncio.create_task(session.run(), name="test-session")
    client = SpdyClient(ours)
    try:
        await client.send(framing.SynStream(1, {"x": ["y"]}))
        stream = await session.accept()
        assert stream is not None
        await client.send(framing.Data(1, b"x" * BUFFER_LIMIT))
        await client.send(framing.Ping(1))  # queued behind the full stream
        await theirs.wait_reads(2)  # the SYN_STREAM, then the data
        # Had the session gone on reading, it would have taken the ping in the same step.
        assert theirs.inbox.qsize() == 1
        assert client.others == []
        assert await stream.read() == b"x" * BUFFER_LIMIT
        await client.wait(lambda: framing.Ping(1) in client.others)
    finally:
        await client.aclose()
        await asyncio.wait_for(reading, 10)
