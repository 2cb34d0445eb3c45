"""The sample workload ``kubetunnel/sandbox-echo``: answers every request with its pod name.

Demos and tests rely on the exact contract: any method, any path, status 200, body = the pod
name as plain text. Knowing which pod answered is what makes Service routing, selector swaps
and tunnels visible from the outside, so the body carries nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket

from aiohttp import web

from kubetunnel.logging import get_logger

log = get_logger(__name__)


def pod_name() -> str:
    """``POD_NAME`` (set through the downward API), else HOSTNAME, which Kubernetes sets to it."""
    return os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()


def make_app(name: str) -> web.Application:
    body = name.encode()

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


async def serve(host: str | None = None, port: int | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting and exit 0, as a well-behaved pod does.

    ``SHUTDOWN_DELAY`` (seconds, default 0) keeps serving that long after SIGTERM first, as an
    application with a preStop sleep does while endpoint updates spread.
    """
    host = host or os.environ.get("KUBETUNNEL_BIND_ADDRESS") or "0.0.0.0"
    port = port if port is not None else int(os.environ.get("PORT") or 8080)
    name = pod_name()
    runner = web.AppRunner(make_app(name), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("echo.serving", host=host, port=port, pod=name)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        delay = float(os.environ.get("SHUTDOWN_DELAY") or 0)
        if delay > 0:
            log.info("echo.draining", pod=name, seconds=delay)
            with contextlib.suppress(TimeoutError):  # a second signal stops at once
                stop.clear()
                await asyncio.wait_for(stop.wait(), delay)
        log.info("echo.stopping", pod=name)
    finally:
        await runner.cleanup()


def main() -> None:
    from kubetunnel import logging as kt_logging

    kt_logging.configure()
    asyncio.run(serve())


if __name__ == "__main__":
    main()
