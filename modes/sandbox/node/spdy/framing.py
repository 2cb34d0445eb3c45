"""SPDY/3 frames to bytes and back (draft 3.1, section 2).

Every frame starts with 8 bytes. A control frame: the control bit, version 3, a 16-bit type,
8 bits of flags and a 24-bit length. A data frame: a 31-bit stream id, flags, length. Header
blocks (SYN_STREAM, SYN_REPLY, HEADERS) are zlib-compressed with one compression context per
direction for the whole connection, seeded with the protocol's dictionary and sync-flushed
after every block, so blocks must be encoded and decoded in wire order.

The decoder is incremental (``feed`` takes whatever the transport delivered) and turns every
malformed input into one ``SpdyError`` with a one-line reason; it never needs more memory than
one frame (at most 16 MiB, the format's limit) plus a bounded header block.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from modes.sandbox.node.spdy.dictionary import DICTIONARY

VERSION = 3

SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_CLEAR_SETTINGS = 0x01

# RST_STREAM status codes
PROTOCOL_ERROR = 1
INVALID_STREAM = 2
REFUSED_STREAM = 3
CANCEL = 5
INTERNAL_ERROR = 6
# GOAWAY status codes
GOAWAY_OK = 0
GOAWAY_PROTOCOL_ERROR = 1

MAX_LENGTH = (1 << 24) - 1
MAX_HEADER_BLOCK = 1 << 20  # decompressed; spdystream's per-field limit is the same
MAX_HEADER_COUNT = 1000
STREAM_ID_MASK = 0x7FFFFFFF

Headers = dict[str, list[str]]


class SpdyError(Exception):
    """The peer sent something that is not SPDY/3; the connection cannot go on."""


@dataclass(frozen=True)
class Data:
    stream_id: int
    data: bytes = b""
    fin: bool = False


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    associated_id: int = 0
    priority: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    values: tuple[tuple[int, int, int], ...] = ()  # (flags, id, value)
    clear: bool = False


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = GOAWAY_OK


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


Frame = (
    Data | SynStream | SynReply | RstStream | Settings | Ping | GoAway | HeadersFrame | WindowUpdate
)


def first(headers: Headers, name: str) -> str:
    """The first value of a header, "" if absent (as Go's ``http.Header.Get``)."""
    values = headers.get(name)
    return values[0] if values else ""


def _control(kind: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_LENGTH:
        raise ValueError(f"control frame payload of {len(payload)} bytes is too large")
    return struct.pack(">HHI", 0x8000 | VERSION, kind, flags << 24 | len(payload)) + payload


class FrameEncoder:
    """Frames to bytes for one direction of one connection (it owns the header compressor)."""

    def __init__(self) -> None:
        self._zlib = zlib.compressobj(level=9, zdict=DICTIONARY)

    def _block(self, headers: Headers) -> bytes:
        raw = [struct.pack(">I", len(headers))]
        for name, values in headers.items():
            key = name.lower().encode(errors="surrogateescape")
            value = "\0".join(values).encode(errors="surrogateescape")
            raw.append(struct.pack(">I", len(key)) + key + struct.pack(">I", len(value)) + value)
        return self._zlib.compress(b"".join(raw)) + self._zlib.flush(zlib.Z_SYNC_FLUSH)

    def encode(self, frame: Frame) -> bytes:
        match frame:
            case Data(stream_id, data, fin):
                if len(data) > MAX_LENGTH:
                    raise ValueError(f"data frame of {len(data)} bytes is too large")
                flags = FLAG_FIN if fin else 0
                head = struct.pack(">II", stream_id & STREAM_ID_MASK, flags << 24 | len(data))
                return head + data
            case SynStream(stream_id, headers, associated, priority, fin, unidirectional):
                flags = (FLAG_FIN if fin else 0) | (FLAG_UNIDIRECTIONAL if unidirectional else 0)
                head = struct.pack(">IIBB", stream_id, associated, (priority & 7) << 5, 0)
                return _control(SYN_STREAM, flags, head + self._block(headers))
            case SynReply(stream_id, headers, fin):
                block = struct.pack(">I", stream_id) + self._block(headers)
                return _control(SYN_REPLY, FLAG_FIN if fin else 0, block)
            case HeadersFrame(stream_id, headers, fin):
                block = struct.pack(">I", stream_id) + self._block(headers)
                return _control(HEADERS, FLAG_FIN if fin else 0, block)
            case RstStream(stream_id, status):
                return _control(RST_STREAM, 0, struct.pack(">II", stream_id, status))
            case Settings(values, clear):
                entries = b"".join(struct.pack(">II", f << 24 | i, v) for f, i, v in values)
                payload = struct.pack(">I", len(values)) + entries
                return _control(SETTINGS, FLAG_CLEAR_SETTINGS if clear else 0, payload)
            case Ping(ping_id):
                return _control(PING, 0, struct.pack(">I", ping_id))
            case GoAway(last_good, status):
                return _control(GOAWAY, 0, struct.pack(">II", last_good, status))
            case WindowUpdate(stream_id, delta):
                return _control(WINDOW_UPDATE, 0, struct.pack(">II", stream_id, delta))
        raise TypeError(f"not a SPDY frame: {frame!r}")


class FrameDecoder:
    """Bytes to frames for one direction of one connection (it owns the decompressor)."""

    def __init__(self) -> None:
        self._zlib = zlib.decompressobj(zdict=DICTIONARY)
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """Every frame that ``data`` completes; unknown control frame types are skipped."""
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            first_word, flags_length = struct.unpack_from(">II", self._buffer)
            length = flags_length & MAX_LENGTH
            if len(self._buffer) < 8 + length:
                break
            payload = bytes(self._buffer[8 : 8 + length])
            del self._buffer[: 8 + length]
            flags = flags_length >> 24
            if first_word & 0x80000000:
                version, kind = first_word >> 16 & 0x7FFF, first_word & 0xFFFF
                frame = self._control(version, kind, flags, payload)
                if frame is not None:
                    frames.append(frame)
            else:
                if first_word == 0:
                    raise SpdyError("data frame on stream 0")
                frames.append(Data(first_word, payload, bool(flags & FLAG_FIN)))
        return frames

    def _control(self, version: int, kind: int, flags: int, payload: bytes) -> Frame | None:
        if version != VERSION:
            raise SpdyError(f"unsupported SPDY version {version} (only 3 is spoken)")
        fin = bool(flags & FLAG_FIN)
        if kind == SYN_STREAM:
            self._expect(payload, 10, "SYN_STREAM", exact=False)
            stream_id, associated, priority = struct.unpack_from(">IIB", payload)
            headers = self._headers(payload[10:])
            return SynStream(
                self._stream(stream_id, "SYN_STREAM"), headers, associated & STREAM_ID_MASK,
                priority >> 5, fin, bool(flags & FLAG_UNIDIRECTIONAL),
            )
        if kind in (SYN_REPLY, HEADERS):
            name = "SYN_REPLY" if kind == SYN_REPLY else "HEADERS"
            self._expect(payload, 4, name, exact=False)
            stream_id = self._stream(struct.unpack_from(">I", payload)[0], name)
            headers = self._headers(payload[4:])
            if kind == SYN_REPLY:
                return SynReply(stream_id, headers, fin)
            return HeadersFrame(stream_id, headers, fin)
        if kind == RST_STREAM:
            self._expect(payload, 8, "RST_STREAM")
            stream_id, status = struct.unpack(">II", payload)
            if status == 0:
                raise SpdyError("RST_STREAM with status 0")
            return RstStream(self._stream(stream_id, "RST_STREAM"), status)
        if kind == SETTINGS:
            self._expect(payload, 4, "SETTINGS", exact=False)
            count = struct.unpack_from(">I", payload)[0]
            if len(payload) != 4 + 8 * count:
                raise SpdyError(f"SETTINGS frame of {len(payload)} bytes claims {count} entries")
            pairs = struct.iter_unpack(">II", payload[4:])
            values = tuple((fid >> 24, fid & 0xFFFFFF, value) for fid, value in pairs)
            return Settings(values, bool(flags & FLAG_CLEAR_SETTINGS))
        if kind == PING:
            self._expect(payload, 4, "PING")
            return Ping(struct.unpack(">I", payload)[0])
        if kind == GOAWAY:
            self._expect(payload, 8, "GOAWAY")
            last_good, status = struct.unpack(">II", payload)
            return GoAway(last_good & STREAM_ID_MASK, status)
        if kind == WINDOW_UPDATE:
            self._expect(payload, 8, "WINDOW_UPDATE")
            stream_id, delta = struct.unpack(">II", payload)
            return WindowUpdate(stream_id & STREAM_ID_MASK, delta & STREAM_ID_MASK)
        return None  # the draft: a control frame of an unknown type is ignored

    @staticmethod
    def _expect(payload: bytes, size: int, name: str, *, exact: bool = True) -> None:
        if len(payload) < size or (exact and len(payload) != size):
            raise SpdyError(f"{name} frame of {len(payload)} bytes (expected {size})")

    @staticmethod
    def _stream(stream_id: int, name: str) -> int:
        stream_id &= STREAM_ID_MASK
        if stream_id == 0:
            raise SpdyError(f"{name} frame on stream 0")
        return stream_id

    def _headers(self, compressed: bytes) -> Headers:
        try:
            block = self._zlib.decompress(compressed, MAX_HEADER_BLOCK)
        except zlib.error as exc:
            raise SpdyError(f"header block does not decompress: {exc}") from None
        if self._zlib.unconsumed_tail:
            raise SpdyError(f"header block larger than {MAX_HEADER_BLOCK} bytes")
        return parse_header_block(block)


def parse_header_block(block: bytes) -> Headers:
    """A decompressed name/value block; names must be lowercase and unique."""
    view = memoryview(block)
    offset = 0

    def take(size: int) -> bytes:
        nonlocal offset
        if offset + size > len(view):
            raise SpdyError("header block is truncated")
        chunk = view[offset : offset + size].tobytes()
        offset += size
        return chunk

    def length() -> int:
        return int(struct.unpack(">I", take(4))[0])

    count = length()
    if count > MAX_HEADER_COUNT:
        raise SpdyError(f"header block of {count} headers (at most {MAX_HEADER_COUNT})")
    headers: Headers = {}
    for _ in range(count):
        name = take(length()).decode(errors="surrogateescape")
        value = take(length()).decode(errors="surrogateescape")
        if not name:
            raise SpdyError("header block has an empty header name")
        if name != name.lower():
            raise SpdyError(f"header name {name!r} is not lowercase")
        if name in headers:
            raise SpdyError(f"header {name!r} appears twice")
        headers[name] = value.split("\0")
    if offset != len(view):
        raise SpdyError(f"header block has {len(view) - offset} bytes after its last header")
    return headers
