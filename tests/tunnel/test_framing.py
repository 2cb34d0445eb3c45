"""The frame codec: round trips, every way a byte stream can be cut, and every malformed header."""

from __future__ import annotations

import struct

import pytest

from kubetunnel.tunnel import framing
from kubetunnel.tunnel.framing import (
    FLAG_FIN,
    HEADER_SIZE,
    FrameDecoder,
    FrameType,
    ProtocolError,
)


def _frames() -> list[bytes]:
    return [
        framing.encode(FrameType.DATA, FLAG_FIN, 7, b"hello"),
        framing.encode_window(7, 4096),
        framing.encode_reset(9, framing.ErrorCode.CANCEL, "bye"),
        framing.encode_open_inbound(2, 8080),
        framing.encode_open_outbound(3, "db.default.svc:5432"),
        framing.encode_goaway(3, 0, "done"),
        framing.encode_status(True, "ok"),
        framing.header(FrameType.DATA, 0, 1, 40000) + bytes(range(256)) * 156 + b"\0" * 64,
    ]


def test_round_trip_in_one_piece() -> None:
    blob = b"".join(_frames())
    frames = FrameDecoder().feed(blob)
    assert [bytes(f.payload) for f in frames] == [f[HEADER_SIZE:] for f in _frames()]
    assert frames[0] == (FrameType.DATA, FLAG_FIN, 7, b"hello")
    assert framing.parse_window(frames[1].payload) == 4096
    assert framing.parse_reset(frames[2].payload) == (framing.ErrorCode.CANCEL, "bye")
    assert framing.parse_open(frames[3].payload) == (framing.OPEN_INBOUND, 8080)
    assert framing.parse_open(frames[4].payload) == (framing.OPEN_OUTBOUND, "db.default.svc:5432")
    assert framing.parse_goaway(frames[5].payload) == (3, 0, "done")
    assert framing.parse_status(frames[6].payload) == (True, "ok")


@pytest.mark.parametrize("step", [1, 5, 11, 12, 13, 4096])
def test_any_split_gives_the_same_frames(step: int) -> None:
    blob = b"".join(_frames())
    decoder = FrameDecoder()
    frames = []
    for start in range(0, len(blob), step):
        frames.extend(decoder.feed(blob[start:start + step]))
    assert [bytes(f.payload) for f in frames] == [f[HEADER_SIZE:] for f in _frames()]
    assert decoder.buffered == 0


def test_oversized_frame_is_refused_from_its_header_alone() -> None:
    decoder = FrameDecoder(max_payload=1024)
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decoder.feed(framing.header(FrameType.DATA, 0, 1, 1025))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (struct.pack("!IBBHI", 0, 0x7F, 0, 0, 0), "unknown frame type"),
        (struct.pack("!IBBHI", 0, FrameType.DATA, 0, 1, 1), "reserved"),
    ],
)
def test_malformed_headers(raw: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        FrameDecoder().feed(raw)


@pytest.mark.parametrize(
    ("parse", "payload"),
    [
        (framing.parse_window, b"\0\0\0"),
        (framing.parse_window, b"\0\0\0\0"),
        (framing.parse_reset, b"\0"),
        (framing.parse_reset, b"\0\0\0\0\xff"),
        (framing.parse_goaway, b"\0" * 7),
        (framing.parse_open, b""),
        (framing.parse_open, b"\x01\x00"),
        (framing.parse_open, b"\x02nohost"),
        (framing.parse_open, b"\x02host:99999"),
        (framing.parse_open, b"\x09"),
        (framing.parse_open, b"\x02[]:80"),
        (framing.parse_status, b"\x05"),
    ],
)
def test_malformed_payloads(parse: object, payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse(payload)  # type: ignore[operator]


def test_large_payloads_are_views_of_the_read_small_ones_copies() -> None:
    big = framing.header(FrameType.DATA, 0, 1, 20000) + b"x" * 20000
    small = framing.encode(FrameType.DATA, 0, 1, b"y" * 10)
    frames = FrameDecoder().feed(big + small)
    assert isinstance(frames[0].payload, memoryview)
    assert isinstance(frames[1].payload, bytes)
