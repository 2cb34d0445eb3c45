"""Just enough of the Kubernetes API, over real HTTP on loopback, to watch ``policy apply`` work.

It serves discovery for networking.k8s.io/v1 and answers server-side apply PATCHes the way the
API server does for the checks that matter here: the apply content type and a field manager are
required, an unchanged object keeps its resourceVersion, and a namespace can be made to refuse
with 403. It runs on its own thread and event loop, so a synchronous CLI call can talk to it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from aiohttp import web

APPLY = "application/apply-patch+yaml"
DISCOVERY = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": "networking.k8s.io/v1",
    "resources": [
        {"name": "networkpolicies", "kind": "NetworkPolicy", "namespaced": True,
         "singularName": "networkpolicy", "verbs": ["get", "list", "patch", "create"]},
        {"name": "networkpolicies/status", "kind": "NetworkPolicy", "namespaced": True},
    ],
}


def status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "code": code, "reason": reason, "message": message}
    return web.json_response(body, status=code)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


@dataclass
class FakeApiServer:
    forbidden_namespaces: set[str] = field(default_factory=set)
    requests: list[Recorded] = field(default_factory=list)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    port: int = 0
    _version: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    async def _discovery(self, request: web.Request) -> web.Response:
        self._record(request, None)
        return web.json_response(DISCOVERY)

    async def _patch(self, request: web.Request) -> web.Response:
        text = await request.text()
        body = yaml.safe_load(text) if request.content_type == APPLY else json.loads(text)
        self._record(request, body)
        ns, name = request.match_info["ns"], request.match_info["name"]
        if request.content_type != APPLY:
            return status(415, "UnsupportedMediaType", f"{request.content_type} is not apply")
        if not request.query.get("fieldManager"):
            return status(400, "BadRequest", "fieldManager is required for apply patch")
        if ns in self.forbidden_namespaces:
            return status(403, "Forbidden", f'networkpolicies "{name}" is forbidden: '
                          f'User "dev" cannot patch resource "networkpolicies" in "{ns}"')
        if body["metadata"].get("name") != name or body["metadata"].get("namespace") != ns:
            return status(400, "BadRequest", "the name of the object does not match the URL")
        key = f"{ns}/{name}"
        previous = self.objects.get(key)
        content = {k: v for k, v in body.items() if k != "metadata"}
        if previous is None or {k: v for k, v in previous.items() if k != "metadata"} != content:
            self._version += 1
            stored = {**body, "metadata": {**body["metadata"],
                                           "resourceVersion": str(self._version)}}
            self.objects[key] = stored
        return web.json_response(self.objects[key])

    async def _not_found(self, request: web.Request) -> web.Response:
        self._record(request, None)
        return status(404, "NotFound", "the server could not find the requested resource")

    def _record(self, request: web.Request, body: Any) -> None:
        self.requests.append(Recorded(request.method, request.path, dict(request.query),
                                      request.content_type, body))

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "dev", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "dev"}}],
        }))
        return path

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/apis/networking.k8s.io/v1", self._discovery)
        app.router.add_patch(
            "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}", self._patch
        )
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def __enter__(self) -> FakeApiServer:
        loop = self._loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._start())
            started.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-apiserver", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fake API server did not start")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._loop is not None
        assert self._thread is not None
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
