"""Port-forward throughput: KubeTunnel's ``portforward`` transport against the official client.

Every client moves the same bytes both ways at once (an upload and its echo) through
``pods/{name}/portforward`` of one sandbox pod to a TCP echo server:

    official   ``kubernetes.stream.portforward`` of the official Python client (the baseline)
    aiohttp    a bare aiohttp websocket client that only counts bytes (the ceiling of the path)
    ours       ``kubetunnel.transports.portforward.PortForwardTransport``, as the CLI uses it

The sandbox runs as its own process (``python -m modes sandbox up``), as an API server always
does, and so does the echo server: only the client under test runs in this process, on the
event loop the product uses (uvloop when it is installed). The clients take turns round by
round and each ratio is the median of the per-round ratios, so that load from elsewhere on the
machine hits them alike.

Run: ``python bench/portforward.py [--mib 50] [--rounds 3]``. Target: ours >= 3x official.
Last line: ``RESULT portforward_vs_official=<ratio> official_mibps=… aiohttp_mibps=… ours_mibps=…``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import aiohttp
from kubernetes import client
from kubernetes.stream import portforward

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubetunnel.kube import KubeAccess
from kubetunnel.logging import configure
from kubetunnel.loops import install_event_loop
from kubetunnel.plugins import TransportSettings, TunnelTarget
from kubetunnel.transports.portforward import PortForwardTransport
from modes.sandbox.testing import running_sandbox

MIB = 1 << 20
BLOCK = bytes(range(256)) * 1024  # 256 KiB per write, as the tunnel's largest batches

# A TCP echo server with back-pressure: it stops reading while its writes are queued.
ECHO_SERVER = """
import asyncio

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(data)
    def pause_writing(self):
        self.transport.pause_reading()
    def resume_writing(self):
        self.transport.resume_reading()

async def main():
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


class ForwardPath(NamedTuple):
    kubeconfig: Path  # the sandbox's: HTTPS with its own CA and a bearer token, as a cluster
    port: int  # the echo server's, forwarded through the pod


class Run(NamedTuple):
    rate: float  # MiB/s, both directions counted
    client_cpu: float  # CPU seconds of this process (every thread) per GiB moved
    server_busy: float  # the sandbox process's CPU time over the run's wall time (1.0 = a core)
    # The same for kube-apiserver (real control plane), which relays every byte to the node.
    apiserver_busy: float | None = None


class Result(NamedTuple):
    runs: dict[str, list[Run]]
    ratio: float  # median of per-round ours/official throughput
    cpu_ratio: float  # median of per-round official/ours client CPU per byte
    loop: str
    control_plane: str = "builtin"

    def median(self, client: str, field: str) -> float:
        return statistics.median(getattr(run, field) for run in self.runs[client])


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _apiserver_pid(sandbox_pid: int) -> int | None:
    """kube-apiserver, a child of the sandbox on the real control plane (``controlplane
    apiserver ...``); None on the builtin one, whose API server is the sandbox process."""
    for child in Path(f"/proc/{sandbox_pid}/task/{sandbox_pid}/children").read_text().split():
        argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if len(argv) > 1 and argv[1] == b"apiserver":
            return int(child)
    return None


def _timed(server_pid: int, apiserver_pid: int | None, work: Callable[[], float]) -> Run:
    own = resource.getrusage(resource.RUSAGE_SELF)
    server, began = _cpu_of(server_pid), time.monotonic()
    apiserver = _cpu_of(apiserver_pid) if apiserver_pid else 0.0
    rate = work()
    elapsed = time.monotonic() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - own.ru_utime - own.ru_stime
    moved_gib = rate * elapsed / 1024
    apiserver_busy = (_cpu_of(apiserver_pid) - apiserver) / elapsed if apiserver_pid else None
    return Run(rate, cpu / moved_gib, (_cpu_of(server_pid) - server) / elapsed, apiserver_busy)


@contextmanager
def echo_server() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(10)


def _access(path: ForwardPath) -> KubeAccess:
    return KubeAccess.load(str(path.kubeconfig))


def _sink_pod(core: client.CoreV1Api) -> None:
    # hostNetwork: the pod's address is 127.0.0.1, where the echo server listens. Its image is
    # not one the sandbox runs; port-forward needs only the pod's address.
    core.create_namespaced_pod("default", {"metadata": {"name": "sink"}, "spec": {
        "hostNetwork": True, "containers": [{"name": "c", "image": "bench/not-runnable"}]}})
    deadline = time.monotonic() + 10
    while not core.read_namespaced_pod("sink", "default").status.pod_ip:
        if time.monotonic() > deadline:
            raise TimeoutError("the sink pod got no address within 10 s")
        time.sleep(0.01)


def bench_official(core: client.CoreV1Api, port: int, mib: int) -> float:
    pf = portforward(core.connect_get_namespaced_pod_portforward, "sink", "default",
                     ports=str(port))
    sock = pf.socket(port)
    sock.settimeout(60)
    blocks = mib * MIB // len(BLOCK)
    began = time.monotonic()
    writer = threading.Thread(target=lambda: [sock.sendall(BLOCK) for _ in range(blocks)])
    writer.start()
    got = 0
    while got < blocks * len(BLOCK):
        data = sock.recv(MIB)
        if not data:
            raise RuntimeError(f"official client: stream ended after {got} bytes")
        got += len(data)
    writer.join()
    elapsed = time.monotonic() - began
    pf.close()
    # Its proxy thread closes the websocket once it sees the sockets closed; shutting it down
    # under the thread makes the thread's select() fail on a closed descriptor.
    deadline = time.monotonic() + 5
    while pf.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    pf.websocket.shutdown()
    return 2 * got / MIB / elapsed


async def bench_aiohttp(path: ForwardPath, mib: int) -> float:
    access = _access(path)
    url = f"{access.server}/api/v1/namespaces/default/pods/sink/portforward?ports={path.port}"
    message = b"\x00" + BLOCK  # channel 0, data
    blocks = mib * MIB // len(BLOCK)
    headers = await access.auth_headers()
    async with aiohttp.ClientSession(headers=headers) as s, \
            s.ws_connect(url, protocols=("v4.channel.k8s.io",), max_msg_size=0,
                         ssl=await access.ssl_context()) as ws:
        for _ in range(2):
            assert len(await ws.receive_bytes()) == 3  # the two channel headers
        began = time.monotonic()

        async def upload() -> None:
            for _ in range(blocks):
                await ws.send_bytes(message)

        sender = asyncio.create_task(upload())
        got = 0
        while got < blocks * len(BLOCK):
            data = await ws.receive_bytes()
            if data[0] == 0:
                got += len(data) - 1
        await sender
        return 2 * got / MIB / (time.monotonic() - began)


async def bench_ours(path: ForwardPath, mib: int) -> float:
    transport = PortForwardTransport(TransportSettings(kube=_access(path)))
    stream = await transport.connect(TunnelTarget("default", pod="sink", port=path.port))
    blocks = mib * MIB // len(BLOCK)
    began = time.monotonic()

    async def upload() -> None:
        for _ in range(blocks):
            await stream.send(BLOCK)

    sender = asyncio.create_task(upload())
    got = 0
    try:
        while got < blocks * len(BLOCK):
            data = await stream.receive(MIB)
            if not data:
                raise RuntimeError(f"our transport: stream ended after {got} bytes")
            got += len(data)
        await sender
        return 2 * got / MIB / (time.monotonic() - began)
    finally:
        await stream.aclose()
        await transport.aclose()


def measure(mib: int, rounds: int, control_plane: str = "builtin") -> Result:
    """Official, bare aiohttp and our transport over one sandbox pod, ``rounds`` turns each."""
    configure("warning")
    loop = install_event_loop("auto")
    runs: dict[str, list[Run]] = {"official": [], "aiohttp": [], "ours": []}
    with running_sandbox(control_plane=control_plane) as sandbox, echo_server() as port:
        path = ForwardPath(sandbox.kubeconfig, port)
        with client.ApiClient(_access(path).configuration) as api:
            core = client.CoreV1Api(api)
            _sink_pod(core)
            clients: dict[str, Callable[[int], float]] = {
                "official": lambda n: bench_official(core, port, n),
                "aiohttp": lambda n: asyncio.run(bench_aiohttp(path, n)),
                "ours": lambda n: asyncio.run(bench_ours(path, n)),
            }
            for work in clients.values():  # warm-up: connections, imports, caches
                work(8)
            apiserver = _apiserver_pid(sandbox.pid) if control_plane == "real" else None
            for _ in range(rounds):
                for name, work in clients.items():
                    runs[name].append(_timed(sandbox.pid, apiserver,
                                             lambda w=work: w(mib)))  # type: ignore[misc]
    pairs = list(zip(runs["ours"], runs["official"], strict=True))
    return Result(runs, statistics.median(o.rate / b.rate for o, b in pairs),
                  statistics.median(b.client_cpu / o.client_cpu for o, b in pairs), loop,
                  control_plane)


def table(result: Result) -> str:
    real = result.control_plane == "real"
    lines = [f"{'client':<34}{'MiB/s':>8}{'x official':>12}{'client CPU s/GiB':>18}"
             f"{'server busy':>13}" + (f"{'apiserver busy':>16}" if real else "")]
    official = result.median("official", "rate")
    names = {"official": "official (kubernetes.stream)", "aiohttp": "bare aiohttp websocket",
             "ours": "ours (portforward transport)"}
    for key, label in names.items():
        rate = result.median(key, "rate")
        lines.append(f"{label:<34}{rate:>8.0f}{rate / official:>12.2f}"
                     f"{result.median(key, 'client_cpu'):>18.2f}"
                     f"{result.median(key, 'server_busy'):>12.0%}"
                     + (f"{result.median(key, 'apiserver_busy'):>15.0%}" if real else ""))
    return "\n".join(lines)


def describe(result: Result, mib: int, rounds: int) -> str:
    pace = ("'server busy' is the sandbox's Python process, here the node alone (its kubelet "
            "API relays every byte); 'apiserver busy' is kube-apiserver's relay. Near 100% "
            "means that process, not the client, set the pace."
            if result.control_plane == "real" else
            "'server busy' near 100% means the sandbox's one Python process, not the client, "
            "set the pace.")
    return (f"port-forward through a sandbox pod ({result.control_plane} control plane): "
            f"{mib} MiB each way at once, {rounds} rounds, "
            f"{result.loop} loop in the clients\n{table(result)}\n"
            f"ours / official: throughput {result.ratio:.2f}x (target >= 3x); client CPU per "
            f"byte {result.cpu_ratio:.2f}x less. {pace}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=50, help="MiB each way per run (default 50)")
    parser.add_argument("--rounds", type=int, default=3, help="turns per client (default 3)")
    parser.add_argument("--control-plane", choices=("builtin", "real"), default="builtin",
                        help="the sandbox's API server, or Kubernetes' own (needs root and "
                        "python3 build.py --control-plane)")
    args = parser.parse_args()
    result = measure(args.mib, args.rounds, args.control_plane)
    print(describe(result, args.mib, args.rounds))
    print(f"RESULT portforward_vs_official={result.ratio:.2f} "
          f"portforward_cpu_vs_official={result.cpu_ratio:.2f}")


if __name__ == "__main__":
    main()
