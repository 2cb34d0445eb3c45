"""Random bytes into the decoder and into a live session: a clear error or nothing, never a crash,
a hang or unbounded memory."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubetunnel.transports.loopback import pipe_pair
from kubetunnel.tunnel import framing
from kubetunnel.tunnel.framing import HEADER_SIZE, FrameDecoder, FrameType, ProtocolError
from kubetunnel.tunnel.session import Session, SessionOptions

LIMIT = 4096


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=30))
def test_decoder_survives_random_bytes(chunks: list[bytes]) -> None:
    decoder = FrameDecoder(max_payload=LIMIT)
    error = None
    try:
        for chunk in chunks:
            for frame in decoder.feed(chunk):
                assert len(frame.payload) <= LIMIT
            # Bounded: never more than one frame plus the chunk that brought it.
            assert decoder.buffered <= HEADER_SIZE + LIMIT + len(chunk)
    except ProtocolError as exc:
        error = str(exc)
    assert error is None or error  # a failure always says what was wrong


# Frames with valid headers but arbitrary content: the hardest input for the session logic.
_frame = st.builds(
    lambda t, f, s, p: framing.encode(t, f, s, p),
    st.sampled_from([int(t) for t in FrameType]),
    st.integers(0, 3),
    st.integers(0, 12),
    st.binary(max_size=64),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_frame, st.binary(max_size=40)), max_size=25))
def test_session_survives_random_frames(blobs: list[bytes]) -> None:
    async def scenario() -> None:
        ours, theirs = pipe_pair()
        opened: list[object] = []
        session = Session(
            ours, initiator=True, peer_window=1024,
            options=SessionOptions(window=1024, ping_interval=60, ping_timeout=120,
                                   flush_timeout=0.2),
            on_open=opened.append, name="fuzz",
        )
        runner = asyncio.create_task(session.run())

        async def drain() -> None:  # the peer must read, or our pongs would back up
            while await theirs.receive():
                pass

        reader = asyncio.create_task(drain())
        try:
            for blob in blobs:
                await theirs.send(blob)
                await asyncio.sleep(0)
            for _ in range(5):
                await asyncio.sleep(0)
        except ConnectionError:
            pass  # the session already hung up on us: fine
        await session.aclose("done")
        reason = await asyncio.wait_for(runner, 5)
        assert reason
        assert not session.streams
        await theirs.aclose()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)

    asyncio.run(scenario())
