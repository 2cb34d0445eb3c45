"""An aiohttp app with the node's routes, served from a thread so sync clients can call it.

The official kubernetes client is synchronous; calling it inside the test's event loop would
block the very server it talks to.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from modes.sandbox.node.agent import NodeAgent
from modes.sandbox.node.routes import add_routes, status_middleware
from tests.sandbox_node.fakes import FakeStore
from tests.sandbox_node.helpers import make_config

T = TypeVar("T")


async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A pod port that sends back everything it receives."""
    try:
        while data := await reader.read(1 << 20):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class ThreadedNode:
    def __init__(self, tmp_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-node-server")
        self.thread.start()
        self.tmp_path = tmp_path
        self.store: FakeStore
        self.servers: list[asyncio.Server] = []
        self.url = ""
        self.run(self._start())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    async def _start(self) -> None:
        self.store = FakeStore()
        self.agent = NodeAgent(make_config(self.tmp_path))
        app = web.Application(middlewares=[status_middleware])
        add_routes(app, self.store, self.agent)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def add_pod(self, name: str, ip: str, handler: Callable[..., Awaitable[None]] = echo_handler,
                port: int = 8080) -> None:
        async def add() -> None:
            self.servers.append(await asyncio.start_server(handler, ip, port))
            self.store.put(("", "pods"), {
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"containers": [{"name": "main", "image": "kubetunnel/sandbox-echo"}]},
                "status": {"phase": "Running", "podIP": ip}})
        self.run(add())

    def close(self) -> None:
        async def stop() -> None:
            for server in self.servers:
                server.close()
            await self.agent.stop()
            await self.runner.cleanup()
        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


ECHO_POD_IP = "127.77.3.1"


@contextlib.contextmanager
def echo_node(tmp_path: Path) -> Iterator[ThreadedNode]:
    """A node serving one pod ``echo`` at :data:`ECHO_POD_IP` whose ports echo."""
    node = ThreadedNode(tmp_path)
    try:
        node.add_pod("echo", ECHO_POD_IP)
        yield node
    finally:
        node.close()
