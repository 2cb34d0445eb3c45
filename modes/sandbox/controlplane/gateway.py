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
        # The relay is a task of its own, cancelled on stop; this callback's task is never
        # cancelled, since Python 3.11's start_server logs a cancelled callback as an error.
        relay = asyncio.create_task(self._relay(reader, writer))
        self._connections.add(relay)
        relay.add_done_callback(self._connections.discard)
        with contextlib.suppress(asyncio.CancelledError):
            await relay

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
