"""The wire format of the tunnel: a fixed 12-byte frame header, the frame types, and a decoder.

Why our own framing rather than HTTP/2 (``h2``): the tunnel carries opaque byte streams between
two programs we ship together, so HTTP/2's header compression, priorities and pseudo-headers are
dead weight, and ``h2``'s pure-Python frame handling costs more per frame than the whole relay
budget of a socat hop. A fixed header that ``struct`` parses in one call, with no per-frame
object beyond one tuple, keeps the relay within reach of C. docs/protocol.md has the measurements.

Layout of every frame (network byte order)::

    length:u32  type:u8  flags:u8  reserved:u16 (zero)  stream:u32  payload[length]

The header is frozen for every protocol version, so a peer can always read a HELLO and refuse a
version it does not speak.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from kubetunnel.errors import KubetunnelError

MAGIC = b"KTUNNEL\n"
HEADER = struct.Struct("!IBBHI")
HEADER_SIZE = HEADER.size  # 12
# The largest payload a peer may send; a header announcing more closes the session at once, so
# a garbage header can never make us buffer more than this.
MAX_PAYLOAD = 256 * 1024
# Payloads below this are copied out of the read chunk; larger ones are handed on as views of it
# (the chunk is immutable ``bytes``, so a view is safe), which saves a copy on bulk transfers
# without letting a tiny view pin a large chunk for long.
_COPY_BELOW = 16 * 1024

Payload = bytes | memoryview


class FrameType(enum.IntEnum):
    HELLO = 0x0
    WELCOME = 0x1
    REFUSE = 0x2
    OPEN = 0x3
    DATA = 0x4
    WINDOW = 0x5
    RESET = 0x6
    PING = 0x7
    GOAWAY = 0x8
    STATUS = 0x9


_KNOWN_TYPES = frozenset(int(t) for t in FrameType)

FLAG_FIN = 0x1  # DATA: the sender will send no more bytes on this stream
FLAG_ACK = 0x1  # PING: this is the answer to a ping

OPEN_INBOUND = 1  # agent -> CLI: a cluster client connected to an agent port (payload: u16 port)
OPEN_OUTBOUND = 2  # CLI -> agent: dial "host:port" from inside the cluster


class ErrorCode(enum.IntEnum):
    """Why a stream was reset or a session went away; carried in RESET and GOAWAY."""

    NO_ERROR = 0
    PROTOCOL_ERROR = 1
    REFUSED = 2  # the stream was never processed; safe to retry
    CANCEL = 3  # the application closed the stream early
    CONNECT_FAILED = 4  # the side asked to dial could not reach the target
    CONNECTION_RESET = 5  # the real socket behind the stream was reset
    SESSION_CLOSED = 6  # the tunnel connection ended under the stream
    FLOW_CONTROL = 7
    INTERNAL = 8


class ProtocolError(KubetunnelError):
    """The peer broke the protocol; the session ends with this one-line reason."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class Frame(NamedTuple):
    type: int
    flags: int
    stream: int
    payload: Payload


def header(frame_type: int, flags: int, stream: int, length: int) -> bytes:
    return HEADER.pack(length, frame_type, flags, 0, stream)


def encode(frame_type: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One whole frame as bytes; for control frames (data frames keep header and payload apart)."""
    return HEADER.pack(len(payload), frame_type, flags, 0, stream) + payload


_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
_RESET = struct.Struct("!I")
_GOAWAY = struct.Struct("!II")


def encode_window(stream: int, increment: int) -> bytes:
    return HEADER.pack(4, FrameType.WINDOW, 0, 0, stream) + _U32.pack(increment)


def encode_reset(stream: int, code: int, reason: str = "") -> bytes:
    return encode(FrameType.RESET, 0, stream, _RESET.pack(code) + _reason(reason))


def encode_goaway(last_stream: int, code: int, reason: str = "") -> bytes:
    return encode(FrameType.GOAWAY, 0, 0, _GOAWAY.pack(last_stream, code) + _reason(reason))


def encode_open_inbound(stream: int, port: int) -> bytes:
    return encode(FrameType.OPEN, 0, stream, bytes([OPEN_INBOUND]) + _U16.pack(port))


def encode_open_outbound(stream: int, target: str) -> bytes:
    return encode(FrameType.OPEN, 0, stream, bytes([OPEN_OUTBOUND]) + target.encode())


def encode_status(answering: bool, reason: str) -> bytes:
    return encode(FrameType.STATUS, 0, 0, bytes([1 if answering else 0]) + _reason(reason))


def _reason(reason: str) -> bytes:
    # Reasons are for humans and logs; cap them so they never dominate a frame.
    return reason.encode("utf-8", "replace")[:1024]


def _text(payload: Payload, what: str) -> str:
    try:
        return bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{what} is not valid UTF-8") from exc


def parse_window(payload: Payload) -> int:
    if len(payload) != 4:
        raise ProtocolError(f"WINDOW payload must be 4 bytes, got {len(payload)}")
    increment: int = _U32.unpack(payload)[0]
    if increment == 0:
        raise ProtocolError("WINDOW increment must not be zero")
    return increment


def parse_reset(payload: Payload) -> tuple[int, str]:
    if len(payload) < 4:
        raise ProtocolError(f"RESET payload must be at least 4 bytes, got {len(payload)}")
    return _RESET.unpack_from(payload)[0], _text(payload[4:], "RESET reason")


def parse_goaway(payload: Payload) -> tuple[int, int, str]:
    if len(payload) < 8:
        raise ProtocolError(f"GOAWAY payload must be at least 8 bytes, got {len(payload)}")
    last, code = _GOAWAY.unpack_from(payload)
    return last, code, _text(payload[8:], "GOAWAY reason")


def parse_open(payload: Payload) -> tuple[int, int | str]:
    """``(OPEN_INBOUND, port)`` or ``(OPEN_OUTBOUND, "host:port")``."""
    if not payload:
        raise ProtocolError("OPEN payload is empty")
    kind = payload[0]
    if kind == OPEN_INBOUND:
        if len(payload) != 3:
            raise ProtocolError("OPEN inbound payload must be 3 bytes")
        port: int = _U16.unpack_from(payload, 1)[0]
        return kind, port
    if kind == OPEN_OUTBOUND:
        target = _text(payload[1:], "OPEN target")
        check_target(target)
        return kind, target
    raise ProtocolError(f"OPEN kind {kind} is unknown")


def check_target(target: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) of an outbound stream -> (host, port)."""
    host, sep, port_text = target.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ProtocolError(f"target {target[:100]!r} is not host:port")
    return host, int(port_text)


def parse_status(payload: Payload) -> tuple[bool, str]:
    if not payload or payload[0] not in (0, 1):
        raise ProtocolError("STATUS payload must start with 0 or 1")
    return payload[0] == 1, _text(payload[1:], "STATUS reason")


class FrameDecoder:
    """Turns a byte stream into frames; raises ProtocolError on a malformed header.

    Memory stays below one read chunk plus one maximal frame whatever the input: a header is
    checked as soon as its 12 bytes are in, before any of its payload is kept.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = HEADER_SIZE

    @property
    def buffered(self) -> int:
        return self._have

    def feed(self, data: bytes) -> list[Frame]:
        if not data:
            return []
        if self._have:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._have = 0
        return self._parse(data)

    def _parse(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        view = memoryview(data)
        end = len(data)
        offset = 0
        unpack = HEADER.unpack_from
        while end - offset >= HEADER_SIZE:
            length, ftype, flags, reserved, stream = unpack(data, offset)
            if length > self.max_payload:
                raise ProtocolError(
                    f"frame of {length} bytes exceeds the limit of {self.max_payload}"
                )
            if ftype not in _KNOWN_TYPES:
                raise ProtocolError(f"unknown frame type 0x{ftype:02x}")
            if reserved:
                raise ProtocolError("reserved header bits are set")
            start = offset + HEADER_SIZE
            stop = start + length
            if stop > end:
                self._need = HEADER_SIZE + length
                break
            payload: Payload = view[start:stop] if length >= _COPY_BELOW else data[start:stop]
            frames.append(Frame(ftype, flags, stream, payload))
            offset = stop
        else:
            self._need = HEADER_SIZE
        if offset < end:
            rest = data[offset:] if offset else data
            self._chunks.append(rest)
            self._have = len(rest)
        return frames
