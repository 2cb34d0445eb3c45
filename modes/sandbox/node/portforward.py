"""``pods/{name}/portforward``: the websocket channel protocols here, SPDY in ``spdy/``.

Which protocol a request gets, as kube-apiserver decides it: a websocket offering a
``SPDY/3.1+…k8s.io`` subprotocol is the SPDY tunnel (kubectl 1.30+); another websocket gets
the channel protocol below (the official Python client, the product); a non-websocket
``Connection: Upgrade`` is a plain SPDY upgrade (kubectl with websockets off); anything else
is refused with "Upgrade request required".

Channel protocol (``v4.channel.k8s.io``): every binary message starts with a channel byte. Port
i of the ``ports`` query gets data channel 2i and error channel 2i+1; each channel's first
message is the port as a little-endian uint16. Bytes from the pod go out on the data channel;
a failed dial is reported as text on the error channel. The websocket closes once every port
is finished (or when the client closes it).

``v5.channel.k8s.io`` adds a close signal: a message ``[255, channel]`` half-closes one
direction of a channel. When a client offers both, v4 is chosen: kube-apiserver serves
port-forward with v4 only, and the official Python client, which offers v5 first, would treat
a close signal as an unknown channel. A client offering only v5 gets v5 with its close signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import struct

from aiohttp import WSMsgType, web

from kubetunnel.logging import get_logger
from modes.sandbox.errors import ApiError, bad_request
from modes.sandbox.node.dialing import dial_pod
from modes.sandbox.node.spdy import upgrades
from modes.sandbox.node.spdy.forwarding import DialError

log = get_logger(__name__)

V4 = "v4.channel.k8s.io"
V5 = "v5.channel.k8s.io"
PLAIN = "channel.k8s.io"  # the original, unversioned binary channel protocol
CLOSE_SIGNAL = 255
CHUNK = 256 * 1024


def choose_protocol(offered: str) -> str | None:
    """The subprotocol to answer with, "" for none; None if nothing offered is supported."""
    protocols = [p.strip() for p in offered.split(",") if p.strip()]
    if not protocols:
        return ""
    for wanted in (V4, V5, PLAIN):
        if wanted in protocols:
            return wanted
    return None


def parse_ports(request: web.Request) -> list[int]:
    """``ports`` may repeat and may hold a comma-separated list, as kubelet accepts."""
    ports: list[int] = []
    for value in request.query.getall("ports", []):
        for item in value.split(","):
            try:
                port = int(item)
            except ValueError:
                raise bad_request(f"unable to parse {item!r} as a port") from None
            if not 0 < port < 65536:
                raise bad_request(f"port {port} must be > 0 and < 65536")
            ports.append(port)
    if not ports:
        raise bad_request("at least one port must be specified")
    return ports


def header(channel: int, port: int) -> bytes:
    return bytes([channel]) + struct.pack("<H", port)


class _Session:
    """One websocket: the pod connection of every port and the pumps between them."""

    def __init__(
        self, ws: web.WebSocketResponse, pod_ip: str, ports: list[int], protocol: str, pod: str
    ) -> None:
        self.ws = ws
        self.pod_ip = pod_ip
        self.ports = ports
        self.v5 = protocol == V5
        self.pod = pod
        self.writers: dict[int, asyncio.StreamWriter] = {}  # data channel -> pod connection
        self.dialed: dict[int, asyncio.Event] = {2 * i: asyncio.Event() for i in range(len(ports))}

    async def run(self) -> None:
        for i, port in enumerate(self.ports):
            await self.ws.send_bytes(header(2 * i, port))
            await self.ws.send_bytes(header(2 * i + 1, port))
        pumps = [
            asyncio.create_task(self._port(i, port), name=f"portforward-{self.pod}:{port}")
            for i, port in enumerate(self.ports)
        ]
        inbound: asyncio.Future[None] = asyncio.create_task(
            self._inbound(), name=f"portforward-{self.pod}-in"
        )
        outbound: asyncio.Future[list[None]] = asyncio.ensure_future(asyncio.gather(*pumps))
        try:
            await asyncio.wait([inbound, outbound], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
        finally:
            outbound.cancel()
            for task in [inbound, *pumps]:
                task.cancel()
            await asyncio.gather(inbound, outbound, *pumps, return_exceptions=True)
            for writer in self.writers.values():
                writer.close()
            await self.ws.close()

    async def _port(self, i: int, port: int) -> None:
        """Dial the pod and copy the pod's bytes to the client until the pod closes."""
        data = 2 * i
        try:
            reader, writer = await dial_pod(self.pod_ip, self.pod, port)
        except DialError as exc:
            await self.ws.send_bytes(bytes([data + 1]) + str(exc).encode())
            return
        finally:
            self.dialed[data].set()
        self.writers[data] = writer
        while chunk := await reader.read(CHUNK):
            await self.ws.send_bytes(bytes([data]) + chunk)
        if self.v5:
            # Half-close: the client may still send; the session ends when it closes.
            await self.ws.send_bytes(bytes([CLOSE_SIGNAL, data]))
            await asyncio.Event().wait()

    async def _inbound(self) -> None:
        """Client messages to the pod connections, until the client closes the websocket."""
        async for msg in self.ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, payload = msg.data[0], msg.data[1:]
            if channel == CLOSE_SIGNAL and self.v5 and payload:
                writer = await self._writer(payload[0])
                if writer is not None and writer.can_write_eof():
                    writer.write_eof()
                continue
            writer = await self._writer(channel)
            if writer is None or not payload:
                continue
            try:
                writer.write(payload)
                await writer.drain()
            except (ConnectionError, OSError):
                continue  # the pod side ended; its pump reports and finishes the port

    async def _writer(self, channel: int) -> asyncio.StreamWriter | None:
        dialed = self.dialed.get(channel)
        if dialed is None:
            return None
        await dialed.wait()  # bytes may arrive before the dial has finished
        return self.writers.get(channel)


async def serve(
    request: web.Request, pod_ip: str, pod: str, sessions: upgrades.Sessions | None = None
) -> web.StreamResponse:
    """Upgrade and forward; errors before the upgrade are ApiErrors (a Status body), except
    the SPDY handshake's, which are kubelet's plain text.

    ``sessions`` holds the open sessions (each with ``close()``), so that a stopping sandbox
    can close them rather than wait for clients that may never hang up.
    """
    websocket = request.headers.get("Upgrade", "").lower() == "websocket"
    dial = functools.partial(dial_pod, pod_ip, pod)
    if websocket and upgrades.tunnel_protocols(request):
        return await upgrades.serve_tunnel(request, dial, pod, sessions)
    if not websocket and upgrades.is_upgrade(request):
        return await upgrades.serve_spdy(request, dial, pod, sessions)
    if not websocket:
        raise ApiError(400, "BadRequest", "Upgrade request required")
    ports = parse_ports(request)
    protocol = choose_protocol(request.headers.get("Sec-WebSocket-Protocol", ""))
    if protocol is None:
        raise bad_request(f"none of the offered subprotocols is supported (use {V4})")
    ws = web.WebSocketResponse(
        protocols=(protocol,) if protocol else (), max_msg_size=0, autoping=True, compress=False
    )
    await ws.prepare(request)
    log.info("portforward.opened", pod=pod, ports=ports, protocol=protocol or "none")
    if sessions is not None:
        sessions.add(ws)
    try:
        with contextlib.suppress(ConnectionError):
            await _Session(ws, pod_ip, ports, protocol, pod).run()
    finally:
        if sessions is not None:
            sessions.discard(ws)
    log.info("portforward.closed", pod=pod, ports=ports)
    return ws
