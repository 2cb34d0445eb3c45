"""Each connection the agent accepts on a Service port goes to the developer's process through the
tunnel, or to the Service's own pods (the origin Service the operator made with the original
selector), decided per connection and never waiting for the operator.

- While the tunnel is up and the local process answers, a connection becomes a tunnel stream.
  Until the first byte comes back from the laptop, the agent keeps a copy of what the client
  sent; if the CLI then says the local dial failed (``CONNECT_FAILED``, ``REFUSED``), the local
  process never saw those bytes, so the connection is handed to the origin with them replayed
  instead of being reset. A connection whose bytes may have reached the local process (a tunnel
  that died under it) is reset: replaying a request twice is worse than failing it once.
- Otherwise (no CLI, local process down, the CLI disconnecting, the agent stopping) it is
  relayed to the origin straight away.

This is also the seed of a per-request front door: the origin path does not care why a
connection did not go to a laptop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from kubetunnel.logging import get_logger
from kubetunnel.tunnel.bridging import SocketBridge
from kubetunnel.tunnel.framing import ErrorCode, Payload
from kubetunnel.tunnel.sockets import abort_with_reset, tune
from kubetunnel.tunnel.streams import Stream

log = get_logger(__name__)

REPLAY_LIMIT = 1024 * 1024
"""Bytes kept per connection for a replay; a longer request that fails locally is reset."""
_NOT_DELIVERED = (ErrorCode.CONNECT_FAILED, ErrorCode.REFUSED)
_WRITE_HIGH = 256 * 1024


@dataclass
class Counters:
    """What happened to accepted connections, for /readyz and the logs."""

    to_local: int = 0
    to_origin: int = 0
    handed_over: int = 0  # a failed local dial, replayed to the origin
    reset: int = 0  # could not be served (origin unreachable, tunnel died mid-request)
    open_origin: int = 0  # origin relays open now (draining waits for them)

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass(frozen=True)
class Front:
    """What every accepted connection needs to decide and act."""

    open_local: Callable[[int], Stream | None]
    origin: tuple[str, int] | None  # the origin's ClusterIP, and the port of this listener
    spawn: Callable[[asyncio.Future[None] | asyncio.Task[None]], None]
    counters: Counters
    dial_timeout: float = 5.0
    open: set[FrontConnection] = field(default_factory=set)

    def abort_all(self) -> None:
        """At the very end of a stop: whatever is still open is cut (reset)."""
        for connection in list(self.open):
            connection.abort()


class FrontConnection(SocketBridge):
    """One accepted connection: a :class:`SocketBridge` to a tunnel stream that can turn into a
    relay to the origin (at once, or after a local dial failed)."""

    def __init__(self, front: Front, port: int) -> None:
        super().__init__()
        self._front = front
        self._port = port
        self._replay: bytearray | None = bytearray()  # None: replay no longer possible
        self._client_eof = False
        self._origin: asyncio.Transport | None = None
        self._relaying = False  # in origin mode (connecting or connected)
        self._origin_eof = False
        self._relay_counted = False

    def abort(self) -> None:
        for transport in (self._origin, self._transport):
            if transport is not None and not transport.is_closing():
                abort_with_reset(transport)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self._front.open.add(self)
        stream = self._front.open_local(self._port)
        if stream is None:
            if self._front.origin is None:
                self._front.counters.reset += 1
                abort_with_reset(transport)
                return
            tune(transport)
            self._to_origin()
            return
        self._front.counters.to_local += 1
        self.stream = stream
        tune(transport)
        transport.set_write_buffer_limits(_WRITE_HIGH)
        stream.attach(self)

    # --- client socket ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._relaying:
            if self._origin is not None:
                self._origin.write(data)
            elif self._replay is not None:  # still connecting: reading is paused, but be safe
                self._replay += data
            return
        if self._replay is not None:
            if len(self._replay) + len(data) > REPLAY_LIMIT:
                self._replay = None
            else:
                self._replay += data
        super().data_received(data)

    def eof_received(self) -> bool:
        self._client_eof = True
        if self._relaying:
            if self._origin is not None and self._origin.can_write_eof():
                self._origin.write_eof()
            self._maybe_close_relay()
            return True
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._front.open.discard(self)
        if self._relaying:
            if self._origin is not None and not self._origin.is_closing():
                if exc is not None:
                    abort_with_reset(self._origin)
                else:
                    self._origin.close()
            return
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        if self._relaying:
            if self._origin is not None:
                self._origin.pause_reading()
            return
        super().pause_writing()

    def resume_writing(self) -> None:
        if self._relaying:
            if self._origin is not None and not self._origin.is_closing():
                self._origin.resume_reading()
            return
        super().resume_writing()

    # --- tunnel stream ------------------------------------------------------------------------

    def on_data(self, data: Payload) -> None:
        self._replay = None  # the local process answered: this connection is its own now
        super().on_data(data)

    def on_fin(self) -> None:
        self._replay = None
        super().on_fin()

    def on_reset(self, code: int, reason: str) -> None:
        transport = self._transport
        if (code in _NOT_DELIVERED and self._replay is not None
                and self._front.origin is not None and transport is not None
                and not transport.is_closing()):
            self._front.counters.handed_over += 1
            log.info("front.handed_over", port=self._port, reason=reason,
                     replay_bytes=len(self._replay))
            if self.stream is not None:
                self.stream.on_writable = None
            self._pending = None
            self._to_origin()
            return
        self._front.counters.reset += 1
        super().on_reset(code, reason)

    # --- the origin -------------------------------------------------------------------------

    def _to_origin(self) -> None:
        assert self._transport is not None
        self._relaying = True
        self._front.counters.to_origin += 1
        self._front.counters.open_origin += 1
        self._transport.pause_reading()
        self._front.spawn(asyncio.ensure_future(self._dial_origin()))

    async def _dial_origin(self) -> None:
        client = self._transport
        assert client is not None
        assert self._front.origin is not None
        host, port = self._front.origin
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._front.dial_timeout):
                origin, _ = await loop.create_connection(lambda: _OriginSide(self), host, port)
        except asyncio.CancelledError:
            self._origin_closed()
            abort_with_reset(client)
            raise
        except (OSError, TimeoutError) as exc:
            log.warning("front.origin_unreachable", origin=f"{host}:{port}",
                        error=str(exc) or type(exc).__name__)
            self._front.counters.reset += 1
            self._origin_closed()
            abort_with_reset(client)
            return
        if client.is_closing():
            origin.close()
            return
        self._origin = origin
        tune(self._origin)
        self._origin.set_write_buffer_limits(_WRITE_HIGH)
        client.set_write_buffer_limits(_WRITE_HIGH)
        if self._replay:
            self._origin.write(bytes(self._replay))
        self._replay = None
        if self._client_eof:
            if self._origin.can_write_eof():
                self._origin.write_eof()
        else:
            client.resume_reading()

    def _origin_data(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _origin_eof_received(self) -> None:
        self._origin_eof = True
        client = self._transport
        if client is not None and not client.is_closing() and client.can_write_eof():
            client.write_eof()
        self._maybe_close_relay()

    def _origin_lost(self, exc: Exception | None) -> None:
        self._origin_closed()
        client = self._transport
        if client is None or client.is_closing():
            return
        if exc is not None:
            abort_with_reset(client)
        elif not self._origin_eof:
            client.close()

    def _origin_closed(self) -> None:
        if self._relaying and not self._relay_counted:  # once, whichever side ends first
            self._relay_counted = True
            self._front.counters.open_origin -= 1

    def _maybe_close_relay(self) -> None:
        if self._client_eof and self._origin_eof:
            for transport in (self._origin, self._transport):
                if transport is not None and not transport.is_closing():
                    transport.close()


class _OriginSide(asyncio.Protocol):
    def __init__(self, front: FrontConnection) -> None:
        self._front = front
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._front._origin_data(data)

    def eof_received(self) -> bool:
        self._front._origin_eof_received()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._front._origin_lost(exc)

    def pause_writing(self) -> None:
        client = self._front._transport
        if client is not None and not client.is_closing():
            client.pause_reading()

    def resume_writing(self) -> None:
        client = self._front._transport
        if client is not None and not client.is_closing():
            with contextlib.suppress(RuntimeError):
                client.resume_reading()
