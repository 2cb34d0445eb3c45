"""Benchmark of the tunnel data plane against socat relays and a direct connection.

Three paths to the same local server, measured side by side on 127.0.0.1 in one run:

    direct   client -> server
    socat    client -> socat -> socat -> server          (two relays: a tunnel has two ends)
    tunnel   client -> agent port -> tunnel (direct transport) -> CLI -> server

Each relay process (the agent, the CLI, each socat) is its own process, like in real use.
Measured: bulk throughput (one connection, one direction), request/response latency (1 KiB each
way, one connection, sequential; p50/p99), and for the tunnel 1,000 concurrent streams doing
100 request/responses each (errors, p99); then bench/portforward.py: the ``portforward``
transport against the official client through a sandbox pod. The last line is machine-readable:

    RESULT throughput_vs_socat=<x> latency_p50_vs_socat=<x> streams_errors=<n> \
        portforward_vs_official=<x or na>      (one line in the output)

The paths are measured in interleaved rounds, so that load from elsewhere on the machine hits
them alike; ratios are the median of the per-round ratios, p50/p99 pool all samples.
The event loop of every helper process follows KUBETUNNEL_EVENT_LOOP (auto|asyncio|uvloop).

Run: ``python bench/tunnel.py`` (``--help`` for sizes). Needs socat: ``apt-get install -y socat``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"  # noqa: S105 -- a throw-away agent on 127.0.0.1
MSG = 1024


# --- helper processes ---------------------------------------------------------------------------

async def _serve_local(sink_port: int, echo_port: int) -> None:
    """The "local process": a sink (counts bytes until EOF, answers the count) and an echo."""

    class Sink(asyncio.Protocol):
        def __init__(self) -> None:
            self.count = 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.count += len(data)

        def eof_received(self) -> bool:
            self.transport.write(self.count.to_bytes(8, "big"))  # type: ignore[attr-defined]
            self.transport.close()
            return True

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[attr-defined]

    loop = asyncio.get_running_loop()
    await loop.create_server(Sink, "127.0.0.1", sink_port, backlog=4096)
    await loop.create_server(Echo, "127.0.0.1", echo_port, backlog=4096)
    print("ready", flush=True)
    await asyncio.Event().wait()


async def _run_cli(agent: str, routes: list[str]) -> None:
    """The CLI end, as ``cli connect`` will run it: a TunnelClient over the direct transport."""
    sys.path.insert(0, str(ROOT))
    from kubetunnel import logging as kt_logging
    from kubetunnel.plugins import TransportSettings, TunnelTarget
    from kubetunnel.transports.direct import DirectTransport
    from kubetunnel.tunnel.client import Route, TunnelClient

    kt_logging.configure("warning", "json")  # logs go to stderr; stdout says "ready"
    parsed = [Route(int(a), int(b)) for a, b in (r.split(":") for r in routes)]
    transport = DirectTransport(TransportSettings())
    async with TunnelClient(transport, TunnelTarget("bench", address=agent), TOKEN, parsed) as c:
        await c.wait_connected(10)
        for _ in range(200):  # the agent sends nothing to the server until it answers
            if c.local_answering:
                break
            await asyncio.sleep(0.05)
        print("ready", flush=True)
        await c.wait_failed()


def _use_loop() -> str:
    """The same choice the agent makes (KUBETUNNEL_EVENT_LOOP, default auto), for the CLI and
    the helper processes."""
    sys.path.insert(0, str(ROOT))
    from kubetunnel.loops import install_event_loop

    return install_event_loop(os.environ.get("KUBETUNNEL_EVENT_LOOP", "auto"))


# --- measurements -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def bulk(port: int, total: int) -> float:
    """Send ``total`` bytes to the sink, wait for its count; bytes per second."""
    block = os.urandom(1 << 20)
    sock = _connect(port)
    started = time.perf_counter()

    def send() -> None:
        left = total
        while left > 0:
            sock.sendall(block[:left])
            left -= len(block)
        sock.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send)
    sender.start()
    answer = b""
    while len(answer) < 8:
        chunk = sock.recv(8 - len(answer))
        if not chunk:
            break
        answer += chunk
    elapsed = time.perf_counter() - started
    sender.join()
    sock.close()
    if int.from_bytes(answer, "big") != total:
        raise RuntimeError(f"sink counted {int.from_bytes(answer, 'big')} of {total} bytes")
    return total / elapsed


def latency(port: int, count: int) -> list[float]:
    """1 KiB request, 1 KiB echoed response, ``count`` times in a row; seconds each."""
    sock = _connect(port)
    request = os.urandom(MSG)
    samples = []
    for i in range(count + 200):
        started = time.perf_counter()
        sock.sendall(request)
        got = 0
        while got < MSG:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("echo closed the connection")
            got += len(chunk)
        if i >= 200:  # warm-up excluded
            samples.append(time.perf_counter() - started)
    sock.close()
    return samples


async def _streams(port: int, streams: int, rounds: int) -> tuple[int, list[float]]:
    errors = 0
    samples: list[float] = []
    payload = os.urandom(64)

    async def one() -> None:
        nonlocal errors
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(rounds):
                started = time.perf_counter()
                writer.write(payload)
                if await reader.readexactly(len(payload)) != payload:
                    raise RuntimeError("corrupted echo")
                samples.append(time.perf_counter() - started)
            writer.close()
            await writer.wait_closed()
        except (OSError, RuntimeError, asyncio.IncompleteReadError):
            errors += 1

    await asyncio.gather(*(one() for _ in range(streams)))
    return errors, samples


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- orchestration ------------------------------------------------------------------------------

@dataclass
class Row:
    path: str
    throughput: float  # bytes/s
    p50: float
    p99: float


class Processes:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, argv: list[str], wait_ready: bool = False, env: dict[str, str] | None = None
              ) -> subprocess.Popen[str]:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE if wait_ready else subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
                                env={**os.environ, **(env or {})})
        self.procs.append(proc)
        if wait_ready:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{argv[2:4]} did not start")
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


@contextlib.contextmanager
def environment(procs: Processes) -> Iterator[dict[str, int]]:
    """Start the local server, the socat chains and the agent + CLI; yield the entry ports."""
    me = [sys.executable, str(Path(__file__).resolve())]
    p = {name: free_port() for name in (
        "sink", "echo", "socat_sink_1", "socat_sink_2", "socat_echo_1", "socat_echo_2",
        "agent_sink", "agent_echo", "tunnel", "health")}
    procs.start([*me, "--role", "server", "--sink-port", str(p["sink"]),
                 "--echo-port", str(p["echo"])], wait_ready=True)
    for kind in ("sink", "echo"):
        first, second = p[f"socat_{kind}_1"], p[f"socat_{kind}_2"]
        procs.start(["socat", f"TCP-LISTEN:{first},bind=127.0.0.1,reuseaddr,fork,nodelay",
                     f"TCP:127.0.0.1:{second},nodelay"])
        procs.start(["socat", f"TCP-LISTEN:{second},bind=127.0.0.1,reuseaddr,fork,nodelay",
                     f"TCP:127.0.0.1:{p[kind]},nodelay"])
    with tempfile.NamedTemporaryFile("w", suffix=".token", delete=False) as handle:
        handle.write(TOKEN)
    try:
        procs.start([sys.executable, "-m", "modes", "agent", "--log-level", "warning",
                     "--bind-address", "127.0.0.1", "--tunnel-port", str(p["tunnel"]),
                     "--health-port", str(p["health"]), "--token-file", handle.name,
                     "--port", str(p["agent_sink"]), "--port", str(p["agent_echo"])])
        wait_port(p["tunnel"])
        procs.start([*me, "--role", "cli", "--agent", f"127.0.0.1:{p['tunnel']}",
                     "--route", f"{p['agent_sink']}:{p['sink']}",
                     "--route", f"{p['agent_echo']}:{p['echo']}"], wait_ready=True)
        for kind in ("sink", "echo"):
            wait_port(p[f"socat_{kind}_1"])
        yield p
    finally:
        Path(handle.name).unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bytes", type=int, default=1 << 30, help="bulk bytes per path")
    parser.add_argument("--requests", type=int, default=8000, help="sequential req/resp per path")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=100, help="req/resp per concurrent stream")
    parser.add_argument("--rounds-of-paths", type=int, default=8,
                        help="interleaved measurement rounds over the paths")
    parser.add_argument("--role", choices=["bench", "server", "cli"], default="bench")
    parser.add_argument("--sink-port", type=int)
    parser.add_argument("--echo-port", type=int)
    parser.add_argument("--pf-mib", type=int, default=50,
                        help="MiB each way for the port-forward comparison (0: skip it)")
    parser.add_argument("--agent")
    parser.add_argument("--route", action="append", default=[])
    args = parser.parse_args()
    loop = _use_loop()
    if args.role == "server":
        asyncio.run(_serve_local(args.sink_port, args.echo_port))
        return 0
    if args.role == "cli":
        asyncio.run(_run_cli(args.agent, args.route))
        return 0
    if shutil.which("socat") is None:
        print("socat is missing: install it with `apt-get install -y socat` (Debian/Ubuntu) "
              "and run again", file=sys.stderr)
        return 2
    print(f"event loop: {loop} (KUBETUNNEL_EVENT_LOOP=auto|asyncio|uvloop)")
    procs = Processes()
    try:
        with environment(procs) as p:
            return report(p, args)
    finally:
        procs.stop()


def entry_ports(p: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Path name -> (sink port, echo port). One more path (port-forward) is one more entry."""
    return {"direct": (p["sink"], p["echo"]),
            "socat x2": (p["socat_sink_1"], p["socat_echo_1"]),
            "tunnel (direct)": (p["agent_sink"], p["agent_echo"])}


def report(p: dict[str, int], args: argparse.Namespace) -> int:
    ports = entry_ports(p)
    names = list(ports)
    rates: dict[str, list[float]] = {name: [] for name in names}
    lats: dict[str, list[float]] = {name: [] for name in names}
    round_p50: dict[str, list[float]] = {name: [] for name in names}
    for sink, _ in ports.values():
        bulk(sink, 32 << 20)  # warm-up: connections, caches, page faults
    rounds = args.rounds_of_paths
    for _ in range(rounds):
        for name, (sink, echo) in ports.items():
            rates[name].append(bulk(sink, args.bytes // rounds))
            samples = latency(echo, args.requests // rounds)
            lats[name].extend(samples)
            round_p50[name].append(quantile(samples, 0.5))
    rows = [Row(name, statistics.median(rates[name]), quantile(lats[name], 0.5),
                quantile(lats[name], 0.99)) for name in names]
    # Ratios are taken round by round (each path measured right after the other) and then the
    # median is reported, so that load elsewhere on the machine cancels out.
    base = names[1]

    def ratio(values: dict[str, list[float]], name: str) -> float:
        return statistics.median(a / b for a, b in zip(values[name], values[base], strict=True))

    print(f"{'path':<18}{'MB/s':>8}{'x socat':>9}{'p50 us':>9}{'p99 us':>9}{'x socat':>9}")
    for row in rows:
        print(f"{row.path:<18}{row.throughput / 1e6:>8.0f}{ratio(rates, row.path):>9.2f}"
              f"{row.p50 * 1e6:>9.0f}{row.p99 * 1e6:>9.0f}{ratio(round_p50, row.path):>9.2f}")
    started = time.perf_counter()
    errors, samples = asyncio.run(_streams(p["agent_echo"], args.streams, args.rounds))
    took = time.perf_counter() - started
    p50 = quantile(samples, 0.5) * 1e3 if samples else float("nan")
    p99 = quantile(samples, 0.99) * 1e3 if samples else float("nan")
    print(f"tunnel: {args.streams} concurrent streams x {args.rounds} req/resp: errors={errors} "
          f"p50={p50:.1f}ms p99={p99:.1f}ms in {took:.1f}s")
    tunnel = names[2]
    pf_ratio = "na"
    if args.pf_mib > 0:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import portforward  # bench/portforward.py: the sandbox and the three clients

        result = portforward.measure(args.pf_mib, rounds=3)
        pf_ratio = f"{result.ratio:.2f}"
        print(portforward.describe(result, args.pf_mib, 3))
    print(f"RESULT throughput_vs_socat={ratio(rates, tunnel):.2f} "
          f"latency_p50_vs_socat={ratio(round_p50, tunnel):.2f} streams_errors={errors} "
          f"portforward_vs_official={pf_ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
