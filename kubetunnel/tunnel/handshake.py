"""Opening a session: the CLI says which protocol versions it speaks and proves it holds the
tunnel token; the agent picks a version or refuses with a reason the user can act on.

The handshake is the only JSON on the wire: it happens once per connection, and JSON lets a later
version add fields without a new frame layout. Everything after it is binary frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from kubetunnel.errors import KubetunnelError
from kubetunnel.plugins import ByteStream
from kubetunnel.tunnel.framing import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    Frame,
    FrameDecoder,
    FrameType,
    ProtocolError,
    encode,
)

VERSIONS = (1,)  # protocol versions this build speaks, oldest first
MAX_HELLO = 16 * 1024  # a handshake frame is small; anything bigger is not our peer

REFUSE_UNAUTHORIZED = "unauthorized"
REFUSE_VERSION = "version"
REFUSE_BUSY = "busy"
REFUSE_MALFORMED = "malformed"


class TunnelRefused(KubetunnelError):
    """The agent refused the session; ``code`` tells whether retrying can help."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"the agent refused the tunnel ({code}): {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Hello:
    """What the CLI announces. ``token`` is a secret: never log this object."""

    versions: tuple[int, ...]
    token: str
    client: str = ""
    window: int = 256 * 1024
    intercept: dict[str, Any] | None = None
    """A filtered or mirrored intercept's id, mode, filter, created time and holder (the
    ``Intercept.to_dict`` shape); None for a plain (exclusive) connect. Older agents ignore it."""

    def __repr__(self) -> str:
        return (f"Hello(versions={self.versions}, client={self.client!r}, window={self.window}, "
                f"intercept={self.intercept!r})")


@dataclass(frozen=True)
class Welcome:
    version: int
    window: int
    agent: str = ""


@dataclass(frozen=True)
class Opened:
    """The outcome of a handshake: the agreed parameters and bytes already read past it."""

    version: int
    peer_window: int
    leftover: bytes


async def _read_frame(stream: ByteStream) -> tuple[Frame, bytes]:
    """The first frame and the bytes after it (the peer's first session frames, if any).

    Read at byte level rather than through a FrameDecoder, so that whatever follows the frame
    reaches the session untouched.
    """
    buffer = b""
    need = HEADER_SIZE
    while True:
        while len(buffer) < need:
            chunk = await stream.receive(MAX_HELLO + HEADER_SIZE)
            if not chunk:
                raise ProtocolError("the peer closed the connection during the handshake")
            buffer += chunk
        if need == HEADER_SIZE:
            length, ftype, _, reserved, _ = HEADER.unpack_from(buffer)
            if length > MAX_HELLO or reserved or ftype > FrameType.REFUSE:
                raise ProtocolError("the peer does not speak the KubeTunnel protocol")
            need += length
            continue
        frames = FrameDecoder(MAX_HELLO).feed(buffer[:need])
        return frames[0], buffer[need:]


def _json(frame: Frame) -> dict[str, Any]:
    try:
        value = json.loads(bytes(frame.payload))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("handshake payload is not JSON") from exc
    if not isinstance(value, dict):
        raise ProtocolError("handshake payload is not a JSON object")
    return value


def _window(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1024 <= value <= 1 << 30:
        raise ProtocolError("handshake window must be an integer between 1 KiB and 1 GiB")
    return value


async def client_handshake(stream: ByteStream, hello: Hello, timeout: float) -> Opened:
    """Send HELLO, wait for WELCOME; raise TunnelRefused or ProtocolError otherwise."""
    fields: dict[str, Any] = {
        "versions": list(hello.versions),
        "token": hello.token,
        "client": hello.client,
        "window": hello.window,
    }
    if hello.intercept is not None:
        fields["intercept"] = hello.intercept
    payload = json.dumps(fields).encode()
    async with asyncio.timeout(timeout):
        await stream.send(MAGIC + encode(FrameType.HELLO, 0, 0, payload))
        frame, leftover = await _read_frame(stream)
    body = _json(frame)
    if frame.type == FrameType.REFUSE:
        raise TunnelRefused(str(body.get("code", "unknown")), str(body.get("reason", ""))[:500])
    if frame.type != FrameType.WELCOME:
        raise ProtocolError(f"expected WELCOME, got frame type {frame.type}")
    version = body.get("version")
    if version not in hello.versions:
        raise ProtocolError(f"the agent chose protocol version {version!r}, not one we offered")
    return Opened(int(version), _window(body.get("window")), leftover)


Admit = Callable[[Hello], str | None]
"""Agent policy after authentication: None admits, a string refuses as busy with that reason."""


async def server_handshake(
    stream: ByteStream, token: bytes, admit: Admit, window: int, timeout: float, agent: str = ""
) -> tuple[Hello, Opened]:
    """Read HELLO, check version and token, ask ``admit``; reply WELCOME or REFUSE.

    Raises TunnelRefused (after telling the peer) or ProtocolError (garbage: nothing is sent).
    """
    async with asyncio.timeout(timeout):
        magic = b""
        while len(magic) < len(MAGIC):
            chunk = await stream.receive(len(MAGIC) - len(magic))
            if not chunk:
                raise ProtocolError("the peer closed the connection before the handshake")
            magic += chunk
        if magic != MAGIC:
            raise ProtocolError("the peer is not a KubeTunnel CLI (bad preface)")
        frame, leftover = await _read_frame(stream)
    if leftover:
        raise ProtocolError("the CLI sent frames before the handshake completed")
    if frame.type != FrameType.HELLO:
        raise ProtocolError(f"expected HELLO, got frame type {frame.type}")
    body = _json(frame)
    versions = body.get("versions")
    raw_token = body.get("token")
    if not isinstance(versions, list) or not all(isinstance(v, int) for v in versions):
        await _refuse(stream, REFUSE_MALFORMED, "HELLO lacks a list of versions")
    if not isinstance(raw_token, str):
        await _refuse(stream, REFUSE_MALFORMED, "HELLO lacks a token")
    intercept = body.get("intercept")
    hello = Hello(tuple(versions), raw_token, str(body.get("client", ""))[:200],
                  _window(body.get("window")), intercept if isinstance(intercept, dict) else None)
    # Authenticate before saying anything else, so an unauthenticated peer learns nothing.
    if not hmac.compare_digest(hello.token.encode(), token):
        await _refuse(stream, REFUSE_UNAUTHORIZED, "wrong tunnel token")
    common = sorted(set(hello.versions) & set(VERSIONS))
    if not common:
        await _refuse(
            stream, REFUSE_VERSION,
            f"no common protocol version (agent speaks {list(VERSIONS)}, CLI {list(versions)}); "
            "use matching kubetunnel versions",
        )
    busy = admit(hello)
    if busy is not None:
        await _refuse(stream, REFUSE_BUSY, busy)
    welcome = {"version": common[-1], "window": window, "agent": agent}
    await stream.send(encode(FrameType.WELCOME, 0, 0, json.dumps(welcome).encode()))
    return hello, Opened(common[-1], hello.window, b"")


async def _refuse(stream: ByteStream, code: str, reason: str) -> NoReturn:
    payload = json.dumps({"code": code, "reason": reason}).encode()
    with contextlib.suppress(ConnectionError, OSError):
        await stream.send(encode(FrameType.REFUSE, 0, 0, payload))
    raise TunnelRefused(code, reason)
