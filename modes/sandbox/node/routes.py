"""The node's two API endpoints, ``pods/{name}/portforward`` and ``pods/{name}/log``.

Offered two ways: as handlers for the API server's subresource table (so authentication and
Status bodies come from the server) and as plain aiohttp routes for a small app of one's own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from modes.sandbox.errors import ApiError, not_found
from modes.sandbox.node import logs, portforward
from modes.sandbox.node.agent import NodeAgent
from modes.sandbox.node.store import PODS, NodeStore

Obj = dict[str, Any]
PodHandler = Callable[[web.Request, str, str], Awaitable[web.StreamResponse]]

PORTFORWARD_PATH = "/api/v1/namespaces/{namespace}/pods/{name}/portforward"
LOG_PATH = "/api/v1/namespaces/{namespace}/pods/{name}/log"


class NodeHandlers:
    """Looks pods up in the store and their processes up in the node agent."""

    def __init__(self, store: NodeStore, agent: NodeAgent) -> None:
        self.store = store
        self.agent = agent

    async def _pod(self, namespace: str, name: str) -> Obj:
        pod = await self.store.get(PODS, namespace, name)
        if pod is None:
            raise not_found("pods", "", name)
        return pod

    async def portforward(
        self, request: web.Request, namespace: str, name: str
    ) -> web.StreamResponse:
        pod = await self._pod(namespace, name)
        ip = self.agent.pod_ip(namespace, name) or (pod.get("status") or {}).get("podIP")
        if not ip:
            phase = (pod.get("status") or {}).get("phase", "Pending")
            raise ApiError(
                400,
                "BadRequest",
                f"unable to upgrade connection: pod {name} is not running ({phase})",
            )
        return await portforward.serve(request, ip, f"{namespace}/{name}", self.agent.sessions)

    async def log(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        if request.method != "GET":
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        pod = await self._pod(namespace, name)
        return await logs.serve(request, pod, self.agent.log_of(namespace, name))


class _Target(Protocol):
    namespace: str | None
    name: str | None


def subresource_handlers(
    store: NodeStore, agent: NodeAgent
) -> dict[tuple[str, str, str], Callable[[web.Request, Any], Awaitable[web.StreamResponse]]]:
    """Entries for the API server's (group, plural, subresource) -> handler(request, target)."""
    handlers = NodeHandlers(store, agent)

    def adapt(handler: PodHandler) -> Callable[[web.Request, Any], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request, target: _Target) -> web.StreamResponse:
            return await handler(request, target.namespace or "default", target.name or "")

        return handle

    return {
        ("", "pods", "portforward"): adapt(handlers.portforward),
        ("", "pods", "log"): adapt(handlers.log),
    }


def add_routes(app: web.Application, store: NodeStore, agent: NodeAgent) -> None:
    """Plain aiohttp routes; the app must turn ApiError into a Status (``status_middleware``)."""
    handlers = NodeHandlers(store, agent)

    def route(handler: PodHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await handler(
                request, request.match_info["namespace"], request.match_info["name"]
            )

        return handle

    app.router.add_route("*", PORTFORWARD_PATH, route(handlers.portforward))
    app.router.add_route("*", LOG_PATH, route(handlers.log))


@web.middleware
async def status_middleware(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """ApiError -> ``kind: Status`` JSON, for an app that is not the API server itself."""
    try:
        return await handler(request)
    except ApiError as exc:
        return web.json_response(exc.status(), status=exc.code)
