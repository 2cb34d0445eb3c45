"""Microbenchmark of the agent's request router (filtered intercepts) against its byte relay.

Side by side in one run, on 127.0.0.1, each part in its own process like in real use (servers;
the agent; the CLI end of a tunnel):

    relay      client -> agent port (FrontConnection: bytes) -> origin server
    router     client -> agent port (H1Connection: parsed, routed) -> origin server
    exclusive  client -> agent port (FrontConnection) -> tunnel -> CLI -> alice's server
    filtered   client -> agent port (H1Connection, x-dev: alice) -> tunnel -> CLI -> alice's server

The router holds three developers' header filters (alice through the tunnel, bob and carol on
plain connections). Latency: keep-alive HTTP/1.1 request/response (a GET with a few headers,
1 KiB answer), one connection, sequential; p50/p99 per path, measured in interleaved rounds;
ratios are the median of the per-round p50 ratios. "filtered vs exclusive" is the comparison a
developer sees (issue 14's target, <= 1.3); "router vs relay" is the router's bare cost against
the cheapest possible path. Routing: 10,000 requests mixed for the three developers and
unmatched traffic, over 16 kept-alive connections at once; every answer names its server, so a
misrouted one is counted. Ends with one line:

    RESULT filtered_p50_vs_exclusive=<x> router_p50_vs_relay=<x> misrouted=<n> requests=<n>

Run: ``python bench/intercept_router.py`` (``--help`` for sizes; about 30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httptools

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"  # noqa: S105 -- a throw-away agent on 127.0.0.1
NAMES = ("origin", "alice", "bob", "carol")
BODY = 1024


def _loop() -> str:
    sys.path.insert(0, str(ROOT))
    from kubetunnel.loops import install_event_loop

    return install_event_loop(os.environ.get("KUBETUNNEL_EVENT_LOOP", "auto"))


# --- helper processes ---------------------------------------------------------------------------

class _Server(asyncio.Protocol):
    """Answers each bodiless request with 1 KiB that starts with the server's name."""

    def __init__(self, name: str) -> None:
        body = (name.encode() + b" " * BODY)[:BODY]
        self.answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        data = self.tail + data
        count = data.count(b"\r\n\r\n")
        self.tail = data[data.rfind(b"\r\n\r\n") + 4:] if count else data
        if count:
            self.transport.write(self.answer * count)  # type: ignore[attr-defined]


async def _servers() -> None:
    loop = asyncio.get_running_loop()
    ports = {}
    for name in NAMES:
        server = await loop.create_server(lambda name=name: _Server(name), "127.0.0.1", 0)
        ports[name] = server.sockets[0].getsockname()[1]
    print(json.dumps(ports), flush=True)
    await asyncio.Event().wait()


async def _agent(ports: dict[str, int]) -> None:
    from kubetunnel import logging as kt_logging
    from kubetunnel.filters import make_filter
    from kubetunnel.intercepts import Intercept, Intercepts, Mode
    from kubetunnel.tunnel.framing import OPEN_INBOUND
    from kubetunnel.tunnel.streams import Stream
    from modes.agent.fronting import Counters, Front, FrontConnection
    from modes.agent.h1 import H1Connection
    from modes.agent.routing import Router
    from modes.agent.server import Agent, AgentConfig
    from modes.agent.upstreams import Dial, tcp_dial, tunnel_dial

    kt_logging.configure("warning", "json")
    loop = asyncio.get_running_loop()
    origin = ("127.0.0.1", ports["origin"])
    front = Front(lambda port: None, origin, lambda task: None, Counters())
    relay = await loop.create_server(lambda: FrontConnection(front, 0), "127.0.0.1", 0)
    # The exclusive path: the agent as it runs today (no origin: every connection to the CLI).
    agent = Agent(AgentConfig(token=TOKEN.encode(), ports=(0,), tunnel_port=0, health_port=None,
                              bind_address="127.0.0.1"))
    await agent.start()

    def to_alice() -> Stream | None:
        session = agent.session
        return None if session is None else session.open_stream(OPEN_INBOUND, agent.ports[0])

    dials: dict[str, Dial] = {name: tcp_dial("127.0.0.1", ports[name]) for name in NAMES[2:]}
    dials["alice"] = tunnel_dial(to_alice)
    router = Router(origin)
    router.update(Intercepts(Intercept(name, Mode.FILTERED, make_filter([f"x-dev={name}"]),
                                       float(index))
                             for index, name in enumerate(NAMES[1:])), dials)
    routed = await loop.create_server(lambda: H1Connection(router, 0), "127.0.0.1", 0)
    assert agent.tunnel_address is not None
    print(json.dumps({"relay": relay.sockets[0].getsockname()[1],
                      "router": routed.sockets[0].getsockname()[1],
                      "exclusive": agent.ports[0],
                      "tunnel": agent.tunnel_address[1]}), flush=True)
    await asyncio.Event().wait()


async def _cli(tunnel: int, agent_port: int, local_port: int) -> None:
    from kubetunnel import logging as kt_logging
    from kubetunnel.plugins import TransportSettings, TunnelTarget
    from kubetunnel.transports.direct import DirectTransport
    from kubetunnel.tunnel.client import Route, TunnelClient

    kt_logging.configure("warning", "json")
    async with TunnelClient(DirectTransport(TransportSettings()),
                            TunnelTarget("bench", address=f"127.0.0.1:{tunnel}"), TOKEN,
                            [Route(agent_port, local_port)]) as client:
        await client.wait_connected(10)
        print("ready", flush=True)
        await client.wait_failed()


# --- the client ---------------------------------------------------------------------------------

def _request(dev: str) -> bytes:
    return (b"GET /api/orders?id=42 HTTP/1.1\r\nHost: orders.default.svc\r\n"
            b"User-Agent: bench\r\nAccept: application/json\r\nx-request-id: 0af7651916cd43dd\r\n"
            b"x-dev: %b\r\n\r\n" % dev.encode())


class _Client(asyncio.Protocol):
    """One keep-alive connection; :meth:`ask` sends one request and returns the answer's body."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.body = bytearray()
        self.done: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        assert self.done is not None
        self.done.set_result(bytes(self.body))
        self.body.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("closed"))

    async def ask(self, request: bytes) -> bytes:
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.done


async def _connect(port: int) -> _Client:
    _, client = await asyncio.get_running_loop().create_connection(_Client, "127.0.0.1", port)
    return client


async def _latency(port: int, count: int, dev: str = "nobody") -> list[float]:
    client = await _connect(port)
    request = _request(dev)
    for _ in range(200):  # warm the path (and the router's upstream pool)
        await client.ask(request)
    samples = []
    for _ in range(count):
        start = time.perf_counter_ns()
        await client.ask(request)
        samples.append((time.perf_counter_ns() - start) / 1000)
    client.transport.close()
    return samples


async def _mixed(port: int, total: int, connections: int) -> tuple[int, int]:
    rng = random.Random(14)
    plan = [rng.choice(NAMES) for _ in range(total)]
    misrouted = answered = 0

    async def worker(share: list[str]) -> None:
        nonlocal misrouted, answered
        client = await _connect(port)
        for name in share:
            body = await client.ask(_request("nobody" if name == "origin" else name))
            answered += 1
            if not body.startswith(name.encode() + b" "):
                misrouted += 1
        client.transport.close()

    await asyncio.gather(*(worker(plan[i::connections]) for i in range(connections)))
    return answered, misrouted


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _start(procs: list[subprocess.Popen[str]], role: str, ports: object = None) -> str:
    """Start a helper process; its first line of output."""
    argv = [sys.executable, __file__, "--role", role]
    if ports is not None:
        argv += ["--ports", json.dumps(ports)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    procs.insert(0, proc)  # stopped in reverse order: the CLI before its agent
    assert proc.stdout is not None
    return proc.stdout.readline()


async def _bench(args: argparse.Namespace) -> int:
    procs: list[subprocess.Popen[str]] = []
    try:
        ports = json.loads(_start(procs, "servers"))
        paths = json.loads(_start(procs, "agent", ports))
        ready = _start(procs, "cli", [paths["tunnel"], paths["exclusive"], ports["alice"]])
        assert ready.strip() == "ready"
        runs = {"relay": (paths["relay"], "nobody"), "router": (paths["router"], "nobody"),
                "exclusive": (paths["exclusive"], "alice"), "filtered": (paths["router"], "alice")}
        samples: dict[str, list[float]] = {name: [] for name in runs}
        ratios: dict[str, list[float]] = {"router": [], "filtered": []}
        per_round = max(1, args.requests // args.rounds)
        for _ in range(args.rounds):
            p50 = {}
            for name, (port, dev) in runs.items():
                got = await _latency(port, per_round, dev)
                samples[name] += got
                p50[name] = statistics.median(got)
            ratios["router"].append(p50["router"] / p50["relay"])
            ratios["filtered"].append(p50["filtered"] / p50["exclusive"])
        answered, misrouted = await _mixed(paths["router"], args.mixed, args.connections)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
    print(f"event loop: {args.loop}; {args.requests} sequential requests per path in "
          f"{args.rounds} interleaved rounds")
    print(f"{'path':<10} {'p50 us':>8} {'p99 us':>8}")
    for path, got in samples.items():
        print(f"{path:<10} {_pct(got, 0.5):8.1f} {_pct(got, 0.99):8.1f}")
    filtered = statistics.median(ratios["filtered"])
    bare = statistics.median(ratios["router"])
    print(f"filtered / exclusive p50: {filtered:.2f}; router / relay p50: {bare:.2f} "
          f"(medians of {args.rounds} rounds)")
    print(f"mixed: {answered} requests for 3 developers + unmatched over {args.connections} "
          f"connections, {misrouted} misrouted")
    print(f"RESULT filtered_p50_vs_exclusive={filtered:.2f} router_p50_vs_relay={bare:.2f} "
          f"misrouted={misrouted} requests={answered}")
    return 0 if misrouted == 0 and answered == args.mixed else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="sequential, per path")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--mixed", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--role", choices=["bench", "servers", "agent", "cli"], default="bench")
    parser.add_argument("--ports")
    args = parser.parse_args()
    args.loop = _loop()
    if args.role == "servers":
        asyncio.run(_servers())
        return 0
    if args.role == "agent":
        asyncio.run(_agent(json.loads(args.ports)))
        return 0
    if args.role == "cli":
        asyncio.run(_cli(*json.loads(args.ports)))
        return 0
    return asyncio.run(_bench(args))


if __name__ == "__main__":
    sys.exit(main())
