"""The kubelet's own HTTPS API, which a real kube-apiserver calls for logs and port-forward.

kube-apiserver does not serve ``pods/log`` or ``pods/portforward`` itself: it authorises the
client, then opens ``/containerLogs/{namespace}/{pod}/{container}`` or
``/portForward/{namespace}/{pod}`` on the pod's node (the Node's InternalIP and
``daemonEndpoints.kubeletEndpoint.Port``), presenting its kubelet-client certificate, and
relays the answer (an upgraded connection for port-forward). This server answers those paths
from the same node handlers the builtin API server uses, accepting only clients whose
certificate the cluster CA signed, as a kubelet with webhook authentication off would.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from modes.sandbox.node.agent import NodeAgent
from modes.sandbox.node.routes import NodeHandlers, status_middleware
from modes.sandbox.node.store import NodeStore


def server_context(ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca_file)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(cert_file, key_file)
    return context


def kubelet_app(store: NodeStore, agent: NodeAgent) -> web.Application:
    handlers = NodeHandlers(store, agent)

    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def container_logs(request: web.Request) -> web.StreamResponse:
        info = request.match_info
        # The node handlers read the container from the query, as pods/log has it.
        query = request.rel_url.update_query(container=info["container"])
        return await handlers.log(request.clone(rel_url=query), info["namespace"], info["name"])

    async def port_forward(request: web.Request) -> web.StreamResponse:
        info = request.match_info
        # kube-apiserver hands the kubelet each port as its own ``port`` parameter (the
        # client's ``ports`` list, split); the node handlers read the API's ``ports`` form.
        ports = request.query.getall("port", [])
        if ports and "ports" not in request.query:
            request = request.clone(rel_url=request.rel_url.update_query(ports=",".join(ports)))
        return await handlers.portforward(request, info["namespace"], info["name"])

    routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
        ("GET", "/healthz", healthz),
        ("GET", "/containerLogs/{namespace}/{name}/{container}", container_logs),
        ("*", "/portForward/{namespace}/{name}", port_forward),
    ]
    app = web.Application(middlewares=[status_middleware])
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    return app
