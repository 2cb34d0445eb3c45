"""The ``portforward`` transport: the agent's tunnel port through the API server's pod
port-forward, the one path from a laptop to a pod that every cluster offers.

One websocket per tunnel (the tunnel protocol multiplexes every connection inside it), opened
with aiohttp and authenticated from the official client's configuration (kubetunnel.kube).

Framing (subprotocol ``v4.channel.k8s.io``, or ``v5`` when the server picks it): every binary
message starts with a channel byte; for the one forwarded port, channel 0 carries data and
channel 1 errors. The first message on each channel is the port number (uint16, little-endian)
and carries no data. v5 adds a close signal (channel 255) that we use for half-close.
"""

from __future__ import annotations

import asyncio
import struct

import aiohttp

from kubetunnel.errors import KubetunnelError
from kubetunnel.kube import ApiError, KubeAccess, KubeClient
from kubetunnel.logging import get_logger
from kubetunnel.plugins import ByteStream, TransportSettings, TunnelTarget

V4 = "v4.channel.k8s.io"
V5 = "v5.channel.k8s.io"
DATA, ERROR, CLOSE = 0, 1, 255
# Websocket frames above this are split: large frames delay other traffic on the API server.
MAX_FRAME = 256 * 1024

log = get_logger(__name__)


class PortForwardError(ConnectionResetError):
    """The API server or kubelet reported an error on the port's error channel."""


class PortForwardStream:
    """One forwarded port as a :class:`kubetunnel.plugins.ByteStream`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, port: int) -> None:
        self._ws = ws
        self._port = port
        self._seen_port_header = {DATA: False, ERROR: False}
        self._pending = b""
        self._eof = False
        self._send_lock = asyncio.Lock()

    @property
    def protocol(self) -> str | None:
        return self._ws.protocol

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while not self._pending:
            if self._eof:
                return b""
            await self._read_message()
        data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return data

    async def _read_message(self) -> None:
        msg = await self._ws.receive()
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.CLOSED):
            self._eof = True
            return
        if msg.type == aiohttp.WSMsgType.ERROR:
            raise PortForwardError(f"port-forward websocket failed: {msg.data}")
        if msg.type != aiohttp.WSMsgType.BINARY or not msg.data:
            return  # text frames are not part of the channel protocol; ignore as kubectl does
        raw: bytes = msg.data
        channel, payload = raw[0], raw[1:]
        if channel in self._seen_port_header and not self._seen_port_header[channel]:
            self._seen_port_header[channel] = True
            if len(payload) >= 2:
                (port,) = struct.unpack_from("<H", payload)
                if port != self._port:
                    raise PortForwardError(f"port-forward answered for port {port}, "
                                           f"asked for {self._port}")
                payload = payload[2:]
        if channel == DATA:
            self._pending += payload
        elif channel == ERROR and payload:
            text = payload.decode(errors="replace").strip()
            raise PortForwardError(f"port-forward to port {self._port} failed: {text}")
        elif channel == CLOSE:
            self._eof = True

    async def send(self, data: bytes) -> None:
        if self._ws.closed:
            raise ConnectionResetError("port-forward websocket is closed")
        view = memoryview(data)
        async with self._send_lock:
            for start in range(0, len(view), MAX_FRAME):
                await self._ws.send_bytes(b"\x00" + view[start:start + MAX_FRAME])

    async def send_eof(self) -> None:
        # v4 has no half-close; the tunnel protocol ends its streams with its own FIN frames,
        # so closing our direction only matters when the whole tunnel ends.
        if self._ws.protocol == V5 and not self._ws.closed:
            async with self._send_lock:
                await self._ws.send_bytes(bytes((CLOSE, DATA)))

    async def aclose(self) -> None:
        if not self._ws.closed:
            await self._ws.close()


class PortForwardTransport:
    """Transport plugin ``portforward`` (default): through the Kubernetes API server.

    ``settings.kube`` is a :class:`kubetunnel.kube.KubeAccess`; without one, the usual
    kubeconfig (in-cluster first, then KUBECONFIG or ~/.kube/config) is read on first use.
    """

    def __init__(self, settings: TransportSettings) -> None:
        self._access: KubeAccess | None = settings.kube
        self._client: KubeClient | None = None

    async def _client_for_use(self) -> KubeClient:
        if self._client is None:
            if self._access is None:
                self._access = await asyncio.to_thread(KubeAccess.load)
            self._client = KubeClient(self._access)
        return self._client

    async def connect(self, target: TunnelTarget) -> ByteStream:
        if not target.pod:
            raise KubetunnelError("the portforward transport needs a pod to connect to")
        client = await self._client_for_use()
        path = f"/api/v1/namespaces/{target.namespace}/pods/{target.pod}/portforward"
        try:
            ws = await client.websocket(path, [("ports", str(target.port))], (V5, V4))
        except ApiError as exc:
            raise KubetunnelError(
                f"port-forward to pod {target.namespace}/{target.pod} port {target.port} "
                f"refused by the API server ({exc.status}): {exc}"
            ) from exc
        if ws.protocol not in (V4, V5):
            await ws.close()
            raise KubetunnelError(
                f"the API server does not speak {V4} for port-forward (got {ws.protocol!r})"
            )
        log.debug("portforward.open", namespace=target.namespace, pod=target.pod,
                  port=target.port, protocol=ws.protocol)
        return PortForwardStream(ws, target.port)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
