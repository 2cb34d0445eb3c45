"""A fault-injecting reverse proxy in front of the sandbox API server: what a real API server
(and the load balancers before it) do to clients on a bad day.

- a share of requests answered with 409 Conflict, 429 TooManyRequests or 500 *without* reaching
  the server, and a share of writes that *do* reach it but are answered 500 anyway (the client
  cannot know whether its write happened);
- watches cut after a random short time, and a share of watch requests answered with an ERROR
  event carrying 410 Gone, as for a compacted resource version.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import random
import ssl
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from kubetunnel.kube import KubeAccess

_REASONS = {409: "Conflict", 429: "TooManyRequests", 500: "InternalError"}


@dataclass
class Faults:
    error_rate: float = 0.0
    error_after_write_rate: float = 0.0
    watch_gone_rate: float = 0.0
    watch_cut_after: tuple[float, float] | None = None
    seed: int = 7
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


def _status(code: int, message: str) -> dict[str, object]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
            "reason": _REASONS.get(code, "Gone"), "message": message}


class FaultProxy:
    def __init__(self, upstream: str, upstream_ssl: ssl.SSLContext | bool, faults: Faults) -> None:
        self.upstream = upstream.rstrip("/")
        self.ssl = upstream_ssl
        self.faults = faults
        self.rng = random.Random(faults.seed)
        self.enabled = True
        self._watches: set[web.StreamResponse] = set()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        watch = request.query.get("watch") in ("true", "1")
        faults = self.faults
        if self.enabled and watch and self.rng.random() < faults.watch_gone_rate:
            faults.count("watch-410")
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            event = {"type": "ERROR", "object": _status(410, "too old resource version")}
            await response.write(json.dumps(event).encode() + b"\n")
            return response
        if self.enabled and not watch and self.rng.random() < faults.error_rate:
            code = self.rng.choice((409, 429, 500))
            faults.count(f"error-{code}")
            return web.json_response(_status(code, "injected fault"), status=code)
        write = request.method in ("POST", "PUT", "PATCH", "DELETE")
        lie = self.enabled and write and self.rng.random() < faults.error_after_write_rate
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding")}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers,
            data=await request.read(), ssl=self.ssl,
        ) as upstream:
            if lie:
                faults.count("error-after-write")
                return web.json_response(_status(500, "injected fault after write"), status=500)
            if not watch:
                body = await upstream.read()
                return web.Response(body=body, status=upstream.status,
                                    headers={"Content-Type": upstream.content_type})
            return await self._stream(request, upstream)

    async def _stream(self, request: web.Request, upstream: aiohttp.ClientResponse
                      ) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status,
                                      headers={"Content-Type": upstream.content_type})
        await response.prepare(request)
        cut = self.faults.watch_cut_after
        deadline = (asyncio.get_running_loop().time() + self.rng.uniform(*cut)
                    if cut and self.enabled else None)
        self._watches.add(response)
        try:
            while True:
                timeout = None
                if deadline is not None:
                    timeout = max(deadline - asyncio.get_running_loop().time(), 0)
                try:
                    line = await asyncio.wait_for(upstream.content.readline(), timeout)
                except TimeoutError:
                    self.faults.count("watch-cut")
                    if self.rng.random() < 0.5 and request.transport is not None:
                        # A load balancer dropping the connection mid-event, not a clean end.
                        self.faults.count("watch-drop")
                        await response.write(b'{"type": "MODIFIED", "object": {"kind"')
                        request.transport.close()
                        return response
                    break
                if not line:
                    break
                await response.write(line)
        except (ConnectionResetError, aiohttp.ClientError):
            pass
        finally:
            self._watches.discard(response)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response


def proxied(access: KubeAccess, url: str) -> KubeAccess:
    """``access`` with its server replaced by the proxy's URL (same credentials)."""
    configuration = copy.copy(access.configuration)
    configuration.host = url
    # The kubeconfig loader's refresh hook rewrites the whole configuration, host included,
    # before each request; the sandbox's token is static, so the copy needs no refresh.
    configuration.refresh_api_key_hook = None
    return KubeAccess(configuration, access.namespace)
