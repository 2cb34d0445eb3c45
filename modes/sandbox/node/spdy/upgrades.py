"""The two ways a port-forward's SPDY byte stream arrives over HTTP, for an aiohttp handler.

- Plain upgrade: ``Connection: Upgrade``, ``Upgrade: SPDY/3.1`` and
  ``X-Stream-Protocol-Version: portforward.k8s.io``, answered 101 with the same; the TCP
  connection then carries SPDY. kube-apiserver sends this to a kubelet, and kubectl sends it
  when websockets are off (``KUBECTL_PORT_FORWARD_WEBSOCKETS=false``) or refused.
- Websocket tunnel: subprotocol ``SPDY/3.1+portforward.k8s.io``; every binary message holds
  a piece of the SPDY byte stream. kubectl's default since 1.30; kube-apiserver unwraps it
  into a plain upgrade towards the kubelet, or passes it on to a kubelet that says it can.

Refusals before the upgrade are plain text, as kubelet writes them (kube-apiserver relays
them unchanged).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import MutableSet
from typing import Any

from aiohttp import WSMsgType, web

from kubetunnel.logging import get_logger
from modes.sandbox.node.spdy import forwarding
from modes.sandbox.node.spdy.forwarding import PROTOCOL, Dial
from modes.sandbox.node.spdy.sessions import ByteChannel

log = get_logger(__name__)

SPDY = "SPDY/3.1"
TUNNEL_PREFIX = SPDY + "+"
PROTOCOL_HEADER = "X-Stream-Protocol-Version"
ACCEPTED_HEADER = "X-Accepted-Stream-Protocol-Versions"
READ_LIMIT = 1 << 20

Sessions = MutableSet[Any]  # objects with ``async close()``; closed when the node stops


def _values(header: list[str]) -> list[str]:
    return [item.strip() for value in header for item in value.split(",") if item.strip()]


def tunnel_protocols(request: web.Request) -> list[str]:
    """The SPDY protocols a websocket request offers to tunnel, without the prefix."""
    offered = _values(request.headers.getall("Sec-WebSocket-Protocol", []))
    return [
        p.removeprefix(TUNNEL_PREFIX)
        for p in offered
        if p.startswith(TUNNEL_PREFIX) and p.endswith(".k8s.io")
    ]


def is_upgrade(request: web.Request) -> bool:
    return any("upgrade" in v.lower() for v in request.headers.getall("Connection", []))


def _refuse(status: int, message: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", headers=headers)


def _negotiate(offered: list[str]) -> str | web.Response:
    if PROTOCOL in offered:
        return PROTOCOL
    return _refuse(
        403,
        # Lists printed as Go prints a []string, since this is kubelet's text.
        f"unable to upgrade: unable to negotiate protocol: client supports "
        f"[{' '.join(offered)}], server accepts [{PROTOCOL}]",
        **{ACCEPTED_HEADER: PROTOCOL},
    )


class _Feeder:
    """Stands in for aiohttp's websocket reader: the connection's bytes after our 101."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.reader.feed_data(data)
        return False, b""

    def feed_eof(self) -> None:
        self.reader.feed_eof()


class _UpgradedChannel:
    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.reader = asyncio.StreamReader(limit=READ_LIMIT)
        self.transport = request.transport
        self.reader.set_transport(self.transport)  # type: ignore[arg-type]
        self.response = response

    async def read(self) -> bytes:
        return await self.reader.read(READ_LIMIT)

    async def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection closed")
        await self.response.write(data)

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _WebSocketChannel:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws

    async def read(self) -> bytes:
        while True:
            msg = await self.ws.receive()
            if msg.type == WSMsgType.BINARY:
                if msg.data:
                    return bytes(msg.data)
                continue
            if msg.type == WSMsgType.TEXT:
                log.info("portforward.tunnel_text_message")  # gorilla's peer treats it as fatal
            return b""

    async def write(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def close(self) -> None:
        await self.ws.close()


class _Hangup:
    """What a stopping node closes: the session says GOAWAY and the connection is closed."""

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def _run(channel: ByteChannel, dial: Dial, pod: str, sessions: Sessions | None) -> None:
    task = asyncio.create_task(forwarding.serve(channel, dial, pod), name=f"portforward-{pod}")
    hangup = _Hangup(task)
    if sessions is not None:
        sessions.add(hangup)
    try:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await task
    finally:
        await hangup.close()
        if sessions is not None:
            sessions.discard(hangup)


async def serve_spdy(
    request: web.Request, dial: Dial, pod: str, sessions: Sessions | None = None
) -> web.StreamResponse:
    """Answer a plain ``Upgrade: SPDY/3.1`` request and forward over the connection."""
    if PROTOCOL_HEADER not in request.headers:
        return _refuse(
            400,
            f"unable to upgrade: header {PROTOCOL_HEADER} does not exist in request with "
            f"{len(request.headers)} headers",
        )
    negotiated = _negotiate(_values(request.headers.getall(PROTOCOL_HEADER)))
    if isinstance(negotiated, web.Response):
        return negotiated
    if not is_upgrade(request) or SPDY.lower() not in request.headers.get("Upgrade", "").lower():
        return _refuse(400, "unable to upgrade: missing upgrade headers in request")
    response = web.StreamResponse(
        status=101,
        headers={"Connection": "Upgrade", "Upgrade": SPDY, PROTOCOL_HEADER: negotiated},
    )
    response.force_close()
    channel = _UpgradedChannel(request, response)
    # From here on the connection's bytes are SPDY, not HTTP: aiohttp does not know this
    # upgrade, so its parser is replaced before the 101 can reach the client.
    request.protocol.set_parser(_Feeder(channel.reader))  # type: ignore[arg-type]
    await response.prepare(request)
    log.info("portforward.opened", pod=pod, protocol=SPDY)
    await _run(channel, dial, pod, sessions)
    log.info("portforward.closed", pod=pod, protocol=SPDY)
    return response


async def serve_tunnel(
    request: web.Request, dial: Dial, pod: str, sessions: Sessions | None = None
) -> web.StreamResponse:
    """Accept a ``SPDY/3.1+portforward.k8s.io`` websocket and forward over its messages."""
    negotiated = _negotiate(tunnel_protocols(request))
    if isinstance(negotiated, web.Response):
        return negotiated
    protocol = TUNNEL_PREFIX + negotiated
    ws = web.WebSocketResponse(protocols=(protocol,), max_msg_size=0, compress=False)
    await ws.prepare(request)
    log.info("portforward.opened", pod=pod, protocol=protocol)
    await _run(_WebSocketChannel(ws), dial, pod, sessions)
    log.info("portforward.closed", pod=pod, protocol=protocol)
    return ws

