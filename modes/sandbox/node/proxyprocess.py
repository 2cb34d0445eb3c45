"""kube-proxy as a process of its own, as Kubernetes runs it: apart from the API server and the
kubelet.

The node's watches still decide what is proxied; :class:`ProxyProcess` sends each change as a
JSON line to a child process that holds the :class:`~modes.sandbox.node.proxy.ServiceProxy`
and applies the lines in order. So the relays of Service traffic never wait behind the API
server, the controllers or a port-forward in one event loop, and they get a core of their own:
in one process, a tunnel's port-forward traffic slowed every Service connection on the node.

The child reads its standard input until EOF: when the node stops, or its process dies however
it dies, the child closes its listeners and connections and exits. Should the child die first,
it is started again with every Service and endpoint list it had.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any

from kubetunnel import logging as kt_logging
from kubetunnel.logging import get_logger
from modes.sandbox.node import network
from modes.sandbox.node.environment import python_path
from modes.sandbox.node.proxy import Backend, ServiceProxy

log = get_logger(__name__)

RESTART_DELAY = 1.0
STOP_TIMEOUT = 10.0


class ProxyProcess:
    """The calls of :class:`ServiceProxy`, carried out by the child process."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._services: dict[tuple[str, str], tuple[str | None, dict[str, int]]] = {}
        self._endpoints: dict[tuple[str, str], dict[str, list[Backend]]] = {}
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._next = 0
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        pod_network = network.active()
        argv = [sys.executable, "-m", "modes.sandbox.node.proxyprocess"]
        if pod_network.netns is not None:
            argv += [pod_network.netns, pod_network.host_ip]
        level, fmt = kt_logging.current()
        self._process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(python_path()),
                 "KUBETUNNEL_LOG_LEVEL": level, "KUBETUNNEL_LOG_FORMAT": fmt})
        self._spawn(self._read(self._process))
        for (namespace, name), (cluster_ip, ports) in self._services.items():
            self._send("service", namespace, name, ip=cluster_ip, ports=ports)
        for (namespace, name), backends in self._endpoints.items():
            self._send("endpoints", namespace, name, backends=backends)
        await self.synced()
        log.info("proxy.process_started", pid=self._process.pid)

    async def set_service(self, namespace: str, name: str, cluster_ip: str | None,
                          ports: dict[str, int]) -> None:
        self._services[(namespace, name)] = (cluster_ip, ports)
        await self._call("service", namespace, name, ip=cluster_ip, ports=ports)

    async def remove_service(self, namespace: str, name: str) -> None:
        self._services.pop((namespace, name), None)
        await self._call("service", namespace, name, ip=None, ports={})

    def set_endpoints(self, namespace: str, name: str, backends: dict[str, list[Backend]]) -> None:
        self._endpoints[(namespace, name)] = backends
        self._send("endpoints", namespace, name, backends=backends)

    def remove_endpoints(self, namespace: str, name: str) -> None:
        self._endpoints.pop((namespace, name), None)
        self._send("remove_endpoints", namespace, name)

    async def synced(self) -> None:
        """Until every change sent so far is in effect in the child."""
        await self._call("sync", "", "")

    async def stop(self) -> None:
        self._stopping = True
        process = self._process
        if process is not None and process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                process.kill()
                await process.wait()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- the pipe ---------------------------------------------------------------------------

    def _send(self, op: str, namespace: str, name: str, **fields: Any) -> int:
        self._next += 1
        process = self._process
        if process is not None and process.returncode is None:
            assert process.stdin is not None
            line = {"op": op, "id": self._next, "namespace": namespace, "name": name, **fields}
            process.stdin.write(json.dumps(line).encode() + b"\n")
        return self._next

    async def _call(self, op: str, namespace: str, name: str, **fields: Any) -> None:
        """Send and wait until the child has applied it (or has died: then the restart replays
        it)."""
        done = asyncio.get_running_loop().create_future()
        self._waiting[self._send(op, namespace, name, **fields)] = done
        await done

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            with contextlib.suppress(ValueError, KeyError):
                done = self._waiting.pop(int(line))
                if not done.done():
                    done.set_result(None)
        code = await process.wait()
        for done in self._waiting.values():
            if not done.done():
                done.set_result(None)
        self._waiting.clear()
        if self._stopping:
            return
        log.error("proxy.process_exited", pid=process.pid, code=code)
        await asyncio.sleep(RESTART_DELAY)
        if not self._stopping:
            await self.start()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


# --- the child -------------------------------------------------------------------------------


async def _serve(netns: str | None, host_ip: str | None) -> None:
    if netns is not None and host_ip is not None:
        network.use(network.NamespaceNetwork(netns, host_ip))
    proxy = ServiceProxy()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            try:
                order = json.loads(line)
                await _apply(proxy, order)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("proxy.bad_order", error=str(exc), line=line[:200].decode("latin-1"))
                continue
            sys.stdout.write(f"{order['id']}\n")
            sys.stdout.flush()
    finally:
        await proxy.stop()


async def _apply(proxy: ServiceProxy, order: dict[str, Any]) -> None:
    op, namespace, name = order["op"], order["namespace"], order["name"]
    if op == "service":
        ports = {str(k): int(v) for k, v in order["ports"].items()}
        await proxy.set_service(namespace, name, order["ip"], ports)
    elif op == "endpoints":
        proxy.set_endpoints(namespace, name, {
            str(k): [(str(a), int(p)) for a, p in v] for k, v in order["backends"].items()})
    elif op == "remove_endpoints":
        proxy.remove_endpoints(namespace, name)
    elif op != "sync":
        raise ValueError(f"unknown order {op!r}")


def main() -> None:
    from kubetunnel.loops import install_event_loop

    # A Ctrl-C of ``sandbox up`` reaches its whole process group; this process ends when the
    # node closes its pipe, after the node has stopped what uses the proxy.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    kt_logging.configure(os.environ.get("KUBETUNNEL_LOG_LEVEL", "info"),
                         "json" if os.environ.get("KUBETUNNEL_LOG_FORMAT") == "json"
                         else "console")
    install_event_loop("auto")
    netns, host_ip = (sys.argv[1], sys.argv[2]) if len(sys.argv) == 3 else (None, None)
    asyncio.run(_serve(netns, host_ip))


if __name__ == "__main__":
    main()
