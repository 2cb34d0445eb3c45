"""A small API-server stand-in that speaks only pod port-forward, for transport tests.

It checks the bearer token, answers unknown pods with a 404 Status, and for a known pod
connects to 127.0.0.1:<port> and relays with the v4/v5 channel framing kubelet uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from aiohttp import WSMsgType, web


@dataclass
class FakeApiServer:
    token: str = "s3cret"
    pods: set[str] = field(default_factory=lambda: {"agent-0"})
    protocols: tuple[str, ...] = ("v4.channel.k8s.io",)
    seen_tokens: list[str] = field(default_factory=list)
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{pod}/portforward", self.portforward)
        return app

    async def portforward(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        self.seen_tokens.append(auth)
        if auth != f"Bearer {self.token}":
            return web.json_response(
                {"kind": "Status", "status": "Failure", "reason": "Unauthorized", "code": 401},
                status=401,
            )
        if request.match_info["pod"] not in self.pods:
            return web.json_response(
                {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404,
                 "message": f'pods "{request.match_info["pod"]}" not found'},
                status=404,
            )
        port = int(request.query["ports"])
        ws = web.WebSocketResponse(protocols=self.protocols, max_msg_size=0)
        await ws.prepare(request)
        header = struct.pack("<H", port)
        await ws.send_bytes(b"\x00" + header)
        await ws.send_bytes(b"\x01" + header)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            await ws.send_bytes(b"\x01" + f"error forwarding port {port}: {exc}".encode())
            await ws.close()
            return ws

        async def pod_to_ws() -> None:
            while data := await reader.read(65536):
                await ws.send_bytes(b"\x00" + data)
            await ws.close()

        relay = asyncio.create_task(pod_to_ws())
        try:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY:
                    continue
                if msg.data[0] == 0:
                    writer.write(msg.data[1:])
                    await writer.drain()
                elif msg.data[0] == 255 and writer.can_write_eof():
                    writer.write_eof()
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return ws

    def kubeconfig(self, path: Path, user: dict[str, object] | None = None) -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "dev", "user": user or {"token": self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "dev",
                                                       "namespace": "shop"}}],
            "current-context": "fake",
        }))
        return path


@contextlib.asynccontextmanager
async def running(server: FakeApiServer) -> AsyncIterator[FakeApiServer]:
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sockets = site._server.sockets if site._server else []
    server.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    try:
        yield server
    finally:
        await runner.cleanup()
