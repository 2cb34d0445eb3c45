"""The agent's health endpoints, for the kubelet's probes.

``/healthz`` answers while the process runs; ``/readyz`` once the service and tunnel ports are
bound, so the CLI (which waits for the pod to be Ready) never races the listeners, and on until
they close (a stopping agent keeps accepting for a moment, for the origin). Both return a
small JSON body with the tunnel state, which is handy when debugging with ``kubectl exec``.
"""

from __future__ import annotations

from aiohttp import web

from modes.agent.base import AgentBase


def make_app(agent: AgentBase) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        up, reason = agent.state()
        serving = agent.ready or agent.lingering
        body = {"ready": agent.ready, "serving": serving, "tunnel": agent.attached, "up": up,
                "reason": reason, "draining": agent.draining,
                "connections": agent.counters.as_dict()}
        return web.json_response(body, status=200 if serving else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_health(agent: AgentBase, host: str, port: int
                       ) -> tuple[web.AppRunner, int]:
    """Serve the endpoints; returns the runner (to clean up) and the bound port."""
    runner = web.AppRunner(make_app(agent), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner, int(runner.addresses[0][1])
