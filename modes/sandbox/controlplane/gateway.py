"""The API server as pods reach it: the ``kubernetes`` Service's endpoint inside the pod network.

kube-apiserver listens on this machine's loopback and advertises an address of the pod network
(it writes that into the ``kubernetes`` Service's EndpointSlice, and refuses loopback there).
Pods reach ``kubernetes.default`` by ClusterIP like any Service; the node's kube-proxy sends
them to the advertised address, where this relay listens inside the pod network and carries
the bytes to the real listener. TLS passes through untouched: the serving certificate names
both addresses.
"""

from __future__ import annotations

import asyncio
import contextlib

from kubetunnel.logging import get_logger
from modes.sandbox.node.network import PodNetwork
from modes.sandbox.node.proxy import close, pipe

log = get_logger(__name__)


class Gateway:
    def __init__(self, network: PodNetwork, inside: tuple[str, int],
                 target: tuple[str, int]) -> None:
        self.network = network
        self.inside = inside
        self.target = target
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        sock = await self.network.listen(*self.inside)
        self._server = await asyncio.start_server(self._accept, sock=sock)
        log.info("gateway.listening", inside=f"{self.inside[0]}:{self.inside[1]}",
                 target=f"{self.target[0]}:{self.target[1]}")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError as exc:
                log.info("gateway.dial_failed", error=str(exc))
                return
            try:
                await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
            finally:
                await close(up_writer)
        finally:
            await close(writer)
            self._connections.discard(task)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._connections, return_exceptions=True)
