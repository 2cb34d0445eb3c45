"""SPDY/3 framing: every frame type round-trips, header blocks share one zlib context seeded
with the protocol dictionary, spdystream's own bytes decode, and malformed input is one clear
SpdyError."""

from __future__ import annotations

import struct
import zlib

import pytest

from modes.sandbox.node.spdy import framing
from modes.sandbox.node.spdy.dictionary import DICTIONARY
from modes.sandbox.node.spdy.framing import FrameDecoder, FrameEncoder, SpdyError

# What moby/spdystream v0.5.1's Framer writes for: SYN_STREAM 1 {streamtype: error},
# SYN_STREAM 3 {streamtype: data} with FIN, DATA 3 "hello" with FIN, PING 1.
SPDYSTREAM_BYTES = bytes.fromhex(
    "80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800"
    "000000ffff800300010100001600000003000000000000c22a052a651201000000ffff000000030100000568"
    "656c6c6f800300060000000400000001"
)

FRAMES: list[framing.Frame] = [
    framing.SynStream(1, {"streamtype": ["error"], "port": ["8080"], "requestid": ["0"]}),
    framing.SynStream(3, {"x": ["a", "b"]}, associated_id=1, priority=7, fin=True,
                      unidirectional=True),
    framing.SynReply(1),
    framing.SynReply(3, {"status": ["200 OK"]}, fin=True),
    framing.HeadersFrame(5, {"trailer": ["yes"]}, fin=True),
    framing.Data(1, b"payload"),
    framing.Data(3, b"", fin=True),
    framing.Data(0x7FFFFFFF, bytes(range(256)) * 300),
    framing.RstStream(1, framing.CANCEL),
    framing.Settings(((1, 7, 65536), (0, 4, 100)), clear=True),
    framing.Settings(),
    framing.Ping(1),
    framing.GoAway(7, framing.GOAWAY_PROTOCOL_ERROR),
    framing.WindowUpdate(3, 1 << 20),
]


def test_the_dictionary_is_the_protocols() -> None:
    assert len(DICTIONARY) == 1423
    assert zlib.adler32(DICTIONARY) == 0xE3C6A7C2  # the id zlib checks for SPDY/3's dictionary


def test_every_frame_round_trips_fed_whole_or_byte_by_byte() -> None:
    encoder = FrameEncoder()
    wire = b"".join(encoder.encode(frame) for frame in FRAMES)
    assert FrameDecoder().feed(wire) == FRAMES
    decoder = FrameDecoder()
    decoded = [frame for i in range(len(wire)) for frame in decoder.feed(wire[i : i + 1])]
    assert decoded == FRAMES


def test_spdystreams_bytes_decode() -> None:
    assert FrameDecoder().feed(SPDYSTREAM_BYTES) == [
        framing.SynStream(1, {"streamtype": ["error"]}),
        framing.SynStream(3, {"streamtype": ["data"]}, fin=True),
        framing.Data(3, b"hello", fin=True),
        framing.Ping(1),
    ]


def test_header_blocks_are_compressed_with_the_dictionary_in_one_context() -> None:
    encoder = FrameEncoder()
    first = encoder.encode(framing.SynReply(1, {"port": ["8080"]}))
    second = encoder.encode(framing.SynReply(3, {"port": ["8080"]}))
    assert len(second) < len(first)  # the second block refers back into the first
    with pytest.raises(zlib.error):
        zlib.decompressobj().decompress(first[12:])  # needs the dictionary
    inflate = zlib.decompressobj(zdict=DICTIONARY)
    block = inflate.decompress(first[12:])
    assert block == struct.pack(">II", 1, 4) + b"port" + struct.pack(">I", 4) + b"8080"
    assert framing.parse_header_block(inflate.decompress(second[12:])) == {"port": ["8080"]}


def test_encoder_lowercases_names_and_joins_values_with_nul() -> None:
    wire = FrameEncoder().encode(framing.SynReply(1, {"X-Multi": ["a", "b"]}))
    (frame,) = FrameDecoder().feed(wire)
    assert frame == framing.SynReply(1, {"x-multi": ["a", "b"]})


def test_a_partial_frame_waits_for_the_rest() -> None:
    wire = FrameEncoder().encode(framing.Data(1, b"x" * 100))
    decoder = FrameDecoder()
    assert decoder.feed(wire[:50]) == []
    assert decoder.feed(wire[50:]) == [framing.Data(1, b"x" * 100)]


def test_unknown_control_frames_are_skipped() -> None:
    unknown = struct.pack(">HHI", 0x8003, 10, 3) + b"abc"  # type 10 was CREDENTIAL in SPDY/3
    ping = FrameEncoder().encode(framing.Ping(3))
    assert FrameDecoder().feed(unknown + ping) == [framing.Ping(3)]


def control(kind: int, payload: bytes, version: int = 3, flags: int = 0) -> bytes:
    return struct.pack(">HHI", 0x8000 | version, kind, flags << 24 | len(payload)) + payload


def block(*pairs: tuple[bytes, bytes], count: int | None = None) -> bytes:
    raw = struct.pack(">I", len(pairs) if count is None else count) + b"".join(
        struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v for n, v in pairs)
    deflate = zlib.compressobj(zdict=DICTIONARY)
    return deflate.compress(raw) + deflate.flush(zlib.Z_SYNC_FLUSH)


def syn(stream: int, compressed: bytes) -> bytes:
    return control(framing.SYN_STREAM, struct.pack(">IIBB", stream, 0, 0, 0) + compressed)


@pytest.mark.parametrize(("wire", "reason"), [
    (control(framing.PING, struct.pack(">I", 1), version=2), "unsupported SPDY version 2"),
    (struct.pack(">II", 0, 1) + b"x", "data frame on stream 0"),
    (syn(0, block()), "SYN_STREAM frame on stream 0"),
    (control(framing.SYN_STREAM, b"\0" * 6), "SYN_STREAM frame of 6 bytes (expected 10)"),
    (control(framing.RST_STREAM, struct.pack(">II", 1, 0)), "RST_STREAM with status 0"),
    (control(framing.RST_STREAM, struct.pack(">I", 1)), "RST_STREAM frame of 4 bytes"),
    (control(framing.SETTINGS, struct.pack(">I", 2) + b"\0" * 8), "claims 2 entries"),
    (control(framing.PING, b"\0" * 8), "PING frame of 8 bytes (expected 4)"),
    (control(framing.GOAWAY, b"\0" * 4), "GOAWAY frame of 4 bytes (expected 8)"),
    (control(framing.WINDOW_UPDATE, b"\0" * 9), "WINDOW_UPDATE frame of 9 bytes"),
    (syn(1, b"not zlib at all"), "header block does not decompress"),
    (syn(1, block((b"port", b"1"), count=2)), "header block is truncated"),
    (syn(1, block((b"Port", b"1"))), "header name 'Port' is not lowercase"),
    (syn(1, block((b"port", b"1"), (b"port", b"2"))), "header 'port' appears twice"),
    (syn(1, block((b"", b"1"))), "empty header name"),
    (syn(1, block(count=5000)), "header block of 5000 headers"),
    (syn(1, block((b"big", b"x" * (2 << 20)))), "header block larger than"),
])
def test_malformed_input_is_one_clear_error(wire: bytes, reason: str) -> None:
    with pytest.raises(SpdyError) as caught:
        FrameDecoder().feed(wire)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


def test_trailing_bytes_in_a_header_block_are_an_error() -> None:
    raw = struct.pack(">I", 0) + b"junk"
    deflate = zlib.compressobj(zdict=DICTIONARY)
    with pytest.raises(SpdyError, match="4 bytes after its last header"):
        FrameDecoder().feed(syn(1, deflate.compress(raw) + deflate.flush(zlib.Z_SYNC_FLUSH)))


def test_oversized_frames_are_refused_by_the_encoder() -> None:
    with pytest.raises(ValueError, match="too large"):
        FrameEncoder().encode(framing.Data(1, b"\0" * (1 << 24)))
