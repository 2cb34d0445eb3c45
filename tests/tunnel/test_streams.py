"""Streams inside one session: the state machine, credit windows, FIN/RST, GOAWAY, keepalive."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os

import pytest

from kubetunnel.transports.loopback import pipe_pair
from kubetunnel.tunnel.framing import OPEN_INBOUND, OPEN_OUTBOUND, ErrorCode
from kubetunnel.tunnel.session import Session, SessionOptions
from kubetunnel.tunnel.streams import StreamState

from .conftest import Pair


async def _read_all(stream: object) -> bytes:
    out = bytearray()
    while chunk := await stream.receive(100_000):  # type: ignore[attr-defined]
        out += chunk
    return bytes(out)


async def test_open_data_and_fin_both_ways(pair: Pair) -> None:
    ours = pair.agent.open_stream(OPEN_INBOUND, 8080)
    theirs = await pair.cli_opened.get()
    assert (theirs.kind, theirs.destination, theirs.id) == (OPEN_INBOUND, 8080, ours.id)
    await ours.send(b"request")
    await ours.send_eof()
    assert ours.state is StreamState.HALF_CLOSED_LOCAL
    assert await _read_all(theirs) == b"request"
    assert theirs.state is StreamState.HALF_CLOSED_REMOTE
    await theirs.send(b"response")
    await theirs.send_eof()
    assert await _read_all(ours) == b"response"
    assert ours.state is theirs.state is StreamState.CLOSED
    await asyncio.sleep(0.01)
    assert not pair.agent.streams
    assert not pair.cli.streams


async def test_ids_have_the_parity_of_their_opener(pair: Pair) -> None:
    inbound = [pair.agent.open_stream(OPEN_INBOUND, 80) for _ in range(3)]
    outbound = [pair.cli.open_stream(OPEN_OUTBOUND, "db:5432") for _ in range(3)]
    assert [s.id % 2 for s in inbound] == [0, 0, 0]
    assert [s.id % 2 for s in outbound] == [1, 1, 1]
    assert len({s.id for s in inbound}) == 3
    for stream in inbound + outbound:
        stream.reset()


async def test_credit_bounds_what_a_non_reader_is_sent(pair: Pair) -> None:
    window = pair.cli.options.window
    ours = pair.cli.open_stream(OPEN_OUTBOUND, "x:1")
    theirs = await pair.agent_opened.get()
    sender = asyncio.create_task(ours.send(os.urandom(window * 4)))
    await asyncio.sleep(0.05)
    assert not sender.done()  # blocked on credit, not buffering without bound
    assert theirs._buffered <= window
    assert ours.send_credit == 0
    data = bytearray()
    while len(data) < window * 4:
        data += await theirs.receive()
    await sender
    assert len(data) == window * 4


async def test_a_stalled_stream_does_not_stall_another(pair: Pair) -> None:
    stalled = pair.cli.open_stream(OPEN_OUTBOUND, "slow:1")
    await pair.agent_opened.get()  # never read
    busy = pair.cli.open_stream(OPEN_OUTBOUND, "fast:1")
    busy_peer = await pair.agent_opened.get()
    blocker = asyncio.create_task(stalled.send(b"s" * 1_000_000))
    payload = os.urandom(2_000_000)

    async def push() -> None:
        await busy.send(payload)
        await busy.send_eof()

    pusher = asyncio.create_task(push())
    received = await asyncio.wait_for(_read_all(busy_peer), 10)
    await pusher
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    assert not blocker.done()
    stalled.reset()
    with pytest.raises(ConnectionResetError):
        await blocker


async def test_reset_reaches_both_directions(pair: Pair) -> None:
    ours = pair.cli.open_stream(OPEN_OUTBOUND, "x:1")
    theirs = await pair.agent_opened.get()
    receiver = asyncio.create_task(theirs.receive())
    ours.reset(ErrorCode.CANCEL, "changed my mind")
    with pytest.raises(ConnectionResetError, match="changed my mind"):
        await receiver
    assert theirs.state is StreamState.RESET
    with pytest.raises(ConnectionResetError):
        await ours.send(b"late")
    with pytest.raises(ConnectionResetError):
        await theirs.send(b"late")


async def test_send_after_eof_is_an_error(pair: Pair) -> None:
    ours = pair.cli.open_stream(OPEN_OUTBOUND, "x:1")
    await ours.send_eof()
    with pytest.raises(BrokenPipeError):
        await ours.send(b"more")
    ours.reset()


async def test_aclose_is_graceful_only_when_the_peer_is_done(pair: Pair) -> None:
    ours = pair.cli.open_stream(OPEN_OUTBOUND, "x:1")
    theirs = await pair.agent_opened.get()
    await theirs.send(b"bye")
    await theirs.send_eof()
    assert await _read_all(ours) == b"bye"
    await ours.aclose()  # peer already finished: a FIN, not a reset
    assert await _read_all(theirs) == b""
    assert theirs.state is StreamState.CLOSED
    second = pair.cli.open_stream(OPEN_OUTBOUND, "x:1")
    second_peer = await pair.agent_opened.get()
    await second.aclose()  # the peer could still send: reset
    with pytest.raises(ConnectionResetError):
        await second_peer.receive()


async def test_status_reaches_the_agent(pair: Pair) -> None:
    pair.cli.send_status(True, "answering")
    pair.cli.send_status(False, "gone")
    await pair.cli.ping()
    assert pair.statuses == [(True, "answering"), (False, "gone")]


async def test_ping_measures_a_round_trip(pair: Pair) -> None:
    rtt = await pair.agent.ping()
    assert 0 <= rtt < 1


async def test_goaway_lets_open_streams_finish(pair: Pair) -> None:
    ours = pair.cli.open_stream(OPEN_OUTBOUND, "x:1")
    theirs = await pair.agent_opened.get()
    pair.agent.goaway("maintenance")
    await asyncio.sleep(0.01)
    with pytest.raises(ConnectionRefusedError):
        pair.cli.open_stream(OPEN_OUTBOUND, "x:1")
    await ours.send(b"still flowing")
    await ours.send_eof()
    assert await _read_all(theirs) == b"still flowing"
    assert not pair.agent.closed
    await theirs.send_eof()
    # The last stream finished: both ends close by themselves, without an error.
    await asyncio.wait_for(pair.cli.wait_closed(), 2)
    await asyncio.wait_for(pair.agent.wait_closed(), 2)
    assert not pair.cli.close_error
    assert not pair.agent.close_error


async def test_session_loss_resets_every_stream(pair: Pair) -> None:
    streams = [pair.cli.open_stream(OPEN_OUTBOUND, "x:1") for _ in range(3)]
    await pair.agent.aclose("agent gone")
    await asyncio.wait_for(pair.cli.wait_closed(), 2)
    for stream in streams:
        assert stream.state is StreamState.RESET
        with pytest.raises(ConnectionResetError):
            await stream.receive()
    with pytest.raises(ConnectionResetError):
        pair.cli.open_stream(OPEN_OUTBOUND, "x:1")


async def test_keepalive_timeout_ends_a_silent_session() -> None:
    ours, theirs = pipe_pair()
    session = Session(ours, initiator=True, peer_window=4096,
                      options=SessionOptions(ping_interval=0.05, ping_timeout=0.2))
    reason = await asyncio.wait_for(session.run(), 5)
    assert "keepalive timeout" in reason
    assert session.close_error
    await theirs.aclose()


async def test_keepalive_pings_keep_an_idle_session_up() -> None:
    a, b = pipe_pair()
    fast = SessionOptions(ping_interval=0.05, ping_timeout=0.3)
    left = Session(a, initiator=True, peer_window=4096, options=fast)
    right = Session(b, initiator=False, peer_window=4096, options=fast)
    tasks = [asyncio.create_task(left.run()), asyncio.create_task(right.run())]
    await asyncio.sleep(0.6)  # twice the timeout, with no traffic but pings
    assert not left.closed
    assert not right.closed
    await left.aclose()
    await asyncio.gather(*tasks)


async def test_protocol_error_closes_with_a_clear_reason() -> None:
    ours, theirs = pipe_pair()
    session = Session(ours, initiator=True, peer_window=4096)
    runner = asyncio.create_task(session.run())
    await theirs.send(b"\x00\x00\x00\x04\x04\x00\x00\x00\x00\x00\x00\x63abcd")  # DATA, stream 99
    reason = await asyncio.wait_for(runner, 2)
    assert reason == "protocol error: DATA for stream 99, which was never opened"
    await theirs.aclose()


async def test_flow_control_violation_is_a_protocol_error() -> None:
    from kubetunnel.tunnel import framing

    ours, theirs = pipe_pair()
    session = Session(ours, initiator=True, peer_window=4096,
                      options=SessionOptions(window=1024), on_open=lambda s: None)
    runner = asyncio.create_task(session.run())
    await theirs.send(framing.encode_open_inbound(2, 80)
                      + framing.encode(framing.FrameType.DATA, 0, 2, b"x" * 2000))
    reason = await asyncio.wait_for(runner, 2)
    assert "credit" in reason
    await theirs.aclose()


async def test_a_peer_that_never_reads_ends_the_session() -> None:
    """Pings keep coming, the pongs cannot leave: memory stays bounded, the session ends."""
    from kubetunnel.tunnel import framing

    ours, theirs = pipe_pair(4096)
    session = Session(ours, initiator=True, peer_window=4096,
                      options=SessionOptions(max_backlog=64 * 1024))
    runner = asyncio.create_task(session.run())
    ping = framing.encode(framing.FrameType.PING, 0, 0, b"12345678")
    with contextlib.suppress(ConnectionError):
        for _ in range(200):
            await theirs.send(ping * 100)
            if session.closed:
                break
    reason = await asyncio.wait_for(runner, 5)
    assert reason == "the peer stopped reading from the tunnel"
    await theirs.aclose()


async def test_sessions_count_payload_bytes_each_way(pair: Pair) -> None:
    stream = pair.cli.open_stream(OPEN_OUTBOUND, "h:1")
    await stream.send(b"x" * 1000)
    await stream.send_eof()
    peer = await asyncio.wait_for(pair.agent_opened.get(), 5)
    received = b""
    while chunk := await peer.receive():
        received += chunk
    await peer.send(b"y" * 300)
    await peer.send_eof()
    while await stream.receive():
        pass
    assert len(received) == 1000
    assert (pair.cli.bytes_sent, pair.cli.bytes_received) == (1000, 300)
    assert (pair.agent.bytes_sent, pair.agent.bytes_received) == (300, 1000)
