"""The real sandbox API server, in-process on a thread, with the node switched on."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from kubernetes import client

from modes.sandbox import certificates
from modes.sandbox.claims import claim_ranges
from modes.sandbox.node.wiring import SandboxNode, start_node
from modes.sandbox.server import Sandbox
from tests.sandbox_node.conftest import TEST_POD_CIDR

T = TypeVar("T")


class ThreadedSandbox:
    def __init__(self, tmp_path: Path, *, tls: bool = False) -> None:
        self.tls = tls
        self.ca_pem = b""
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-sandbox")
        self.thread.start()
        self.node: SandboxNode
        self.clients: list[client.ApiClient] = []
        # ClusterIPs from a block no other running sandbox holds (the pods' range is the suite's
        # marker, see conftest), so Services of sandboxes running at once do not collide.
        self._held = contextlib.ExitStack()
        claimed = self._held.enter_context(claim_ranges(defaults_first=False))
        self.service_cidr = claimed.service_cidr
        self.run(self._start(tmp_path))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    async def _start(self, tmp_path: Path) -> None:
        self.sandbox = Sandbox(service_cidr=self.service_cidr)
        self.runner = web.AppRunner(self.sandbox.app(), access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        context = None
        if self.tls:  # kubectl sends a bearer token only over https
            credentials = certificates.issue("127.0.0.1")
            context, self.ca_pem = credentials.server_context(), credentials.ca_pem
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"{'https' if self.tls else 'http'}://{host}:{port}"
        self.sandbox.address = f"{host}:{port}"
        self.node = await start_node(self.sandbox, server=self.url, state_dir=tmp_path,
                                     ca_pem=self.ca_pem or None, pod_cidr=TEST_POD_CIDR)

    def api_client(self, token: str | None = None) -> client.ApiClient:
        config = client.Configuration(host=self.url)
        config.api_key = {"authorization": token or self.sandbox.token}
        config.api_key_prefix = {"authorization": "Bearer"}
        api = client.ApiClient(config)
        self.clients.append(api)
        return api

    def close(self) -> None:
        for api in self.clients:
            api.close()
        async def stop() -> list[str]:
            await self.node.stop()
            await self.runner.cleanup()
            await asyncio.sleep(0)
            left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
            await asyncio.get_running_loop().shutdown_asyncgens()
            return sorted(t.get_name() for t in left)
        try:
            left = self.run(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
            self._held.close()
        # The suite's leaked-task guard sees only the test's own loop; this one is checked here.
        assert not left, f"tasks left running after the node stopped: {left}"


def eventually(check: Callable[[], T | None], timeout: float = 10.0, every: float = 0.02) -> T:
    """Poll ``check`` (a sync API read) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        time.sleep(every)
