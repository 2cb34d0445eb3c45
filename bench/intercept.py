#!/usr/bin/env python3
"""Filtered and mirrored intercepts end to end on the sandbox (issue 14).

    python bench/intercept.py [--rounds 10] [--per-round 100] [--mixed 10000]
                              [--control-plane builtin|real]

One sandbox with the operator installed, an echo Deployment (2 pods) behind two Services with the
same selector: ``orders`` (shared by developers) and ``plain`` (intercepted exclusively). Every
request is sent from inside the cluster's network (``cluster_socket``) on kept-alive HTTP/1.1
connections, and every answer names who answered (``local:<name>`` or the echo pod's name).

- latency: ``x-dev: alice`` GETs through alice's filtered intercept of ``orders`` (shared agent:
  parsed, routed -> tunnel -> CLI -> local server) and through an exclusive intercept of
  ``plain`` (agent relay -> tunnel -> CLI -> the SAME local server), one connection each,
  sequential, in interleaved rounds (the order flips every round); p50/p99 pool all samples,
  the ratio is the median of the per-round p50 ratios;
- routing: with three developers (``--header x-dev=alice|bob|carol``) attached, --mixed requests
  for them, for nobody and without the header, at random over 8 kept-alive connections; an
  answer from anyone but the expected server is misrouted;
- mirror: unmatched ("cluster path") GETs to ``orders`` without a mirror, then with a
  ``cli connect --mirror`` attached (a copy of every request goes to its local server; the
  mirror's record must count them), then without again once it has ended (Ctrl-C), --cycles
  times; each with-mirror phase's p50 is set against the mean of the two phases around it, and
  the ratio is the median of those. Each phase also reads the CPU time of every process the
  copies go through (the shared agent, the sandbox's API server and kubelet, kube-proxy, the
  mirror's CLI and local server) per request: the agent's own share of the mirror's cost.

  With --isolate the cycles run again with the cluster's side (this client, kube-proxy, the
  agent, the echo pods) on CPU 0 and the laptop's side (the CLIs and local servers, and the API
  server and kubelet that carry the tunnel) on the other cores, shown in the table only: on a
  2-core machine that crowds the whole cluster path onto one core, so the agent's copy work
  lands on it in full, which no real deployment does either.

Ends with exactly one line:

    RESULT filtered_p50_vs_plain=<x> misrouted=<n> mirror_cluster_p50_ratio=<x> requests=<n>

Targets: filtered p50 <= 1.3x plain, misrouted 0, mirror ratio <= 1.15.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modes.sandbox.testing import RunningSandbox, cluster_socket, running_sandbox  # noqa: E402

SERVER = ROOT / "tests" / "e2e" / "local_server.py"
DEVS = ("alice", "bob", "carol")


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {what} did not happen within {timeout:.0f}s")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers_here(port: int, name: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
            return bool(response.read().decode() == f"local:{name}")
    except OSError:
        return False


class KeepAlive:
    """One kept-alive HTTP/1.1 connection as a pod would open it."""

    def __init__(self, sandbox: RunningSandbox, ip: str) -> None:
        self.connection = http.client.HTTPConnection(ip, 80, timeout=10)
        self.connection.sock = cluster_socket(sandbox, ip, 80, 10)
        self.connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self.connection.sock

    def get(self, dev: str | None) -> str:
        """Who answered: a developer's name, or ``cluster`` for an echo pod."""
        self.connection.request("GET", "/", headers={"x-dev": dev} if dev is not None else {})
        response = self.connection.getresponse()
        body = response.read().decode()
        if self.connection.sock is not self.sock:
            raise SystemExit("bench: the agent closed a kept-alive connection")
        if response.status != 200:
            return f"error:{response.status}"
        if body.startswith("local:"):
            return body.removeprefix("local:")
        return "cluster" if body.startswith("orders-") else f"other:{body[:40]}"

    def timed(self, dev: str | None, expected: str) -> float:
        start = time.perf_counter()
        who = self.get(dev)
        elapsed = time.perf_counter() - start
        if who != expected:
            raise SystemExit(f"bench: expected {expected}, {who} answered")
        return elapsed

    def close(self) -> None:
        self.connection.close()


class Bench:
    def __init__(self, sandbox: RunningSandbox, stack: contextlib.ExitStack, logs: Path) -> None:
        self.sandbox = sandbox
        self.env = {**os.environ, "KUBECONFIG": str(sandbox.kubeconfig)}
        self.stack = stack
        self.logs = logs

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        out = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True,
                             env=self.env, check=False, timeout=60)
        if out.returncode != 0:
            raise SystemExit(f"bench: kubectl {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def deploy(self) -> dict[str, str]:
        """The echo pods behind ``orders`` and ``plain``; their ClusterIPs."""
        labels = {"app": "orders"}
        self.kubectl("apply", "-f", "-", stdin=json.dumps(
            {"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": "orders", "namespace": "default"},
             "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                      "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                          "name": "echo", "image": "kubetunnel/sandbox-echo",
                          "env": [{"name": "PORT", "value": "8080"}],
                          "ports": [{"name": "http", "containerPort": 8080}],
                          "readinessProbe": {"httpGet": {"path": "/", "port": "http"}}}]}}}}))
        for name in ("orders", "plain"):
            self.kubectl("apply", "-f", "-", stdin=json.dumps(
                {"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": name, "namespace": "default"},
                 "spec": {"selector": labels, "ports": [{"name": "http", "port": 80,
                                                         "targetPort": "http"}]}}))
        self.kubectl("rollout", "status", "deployment/orders", "--timeout=60s")
        return {name: self.kubectl("get", "service", name, "-o",
                                   "jsonpath={.spec.clusterIP}").strip()
                for name in ("orders", "plain")}

    def local(self, name: str, pids: dict[str, int]) -> int:
        port = free_port()
        process = subprocess.Popen([sys.executable, str(SERVER), str(port), name, "http/1.1"],
                                   stderr=subprocess.DEVNULL)
        self.stack.callback(_end, process, signal.SIGKILL)
        pids[name] = process.pid
        wait_until(lambda: answers_here(port, name), 10, f"local server {name}")
        return port

    def connect(self, service: str, port: int, *options: str) -> subprocess.Popen[bytes]:
        log = self.logs / f"connect-{service}-{port}-{len(options)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "modes", "cli", "connect", service, "-p", f"{port}:80",
                 "--no-forward", *options], env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.stack.callback(_end, process, signal.SIGINT)
        process.log = log  # type: ignore[attr-defined]
        return process

    def mirrored(self, process: subprocess.Popen[bytes], at_least: int) -> None:
        """Until the mirror's record counts ``at_least`` copies: proof they were made."""
        def counted() -> bool:
            records = json.loads(self.kubectl("get", "kubetunnels.application.dcode.tech",
                                              "-n", "default", "-o", "json"))["items"]
            return any(r.get("spec", {}).get("mode") == "mirror"
                       and r.get("status", {}).get("requests", 0) >= at_least for r in records)

        wait_until(counted, 30, f"the mirror counting {at_least} copies")

    @staticmethod
    def switched(process: subprocess.Popen[bytes]) -> None:
        log: Path = process.log  # type: ignore[attr-defined]

        def done() -> bool:
            if process.poll() is not None:
                raise SystemExit(f"bench: connect ended:\n{log.read_text()[-2000:]}")
            return "traffic switched" in log.read_text()

        wait_until(done, 90, "connect switching traffic")


def shared_agent_pid(sandbox: int) -> int:
    """The shared agent's process (a sandbox pod is a child process of the sandbox)."""
    for pid in children(sandbox, b"modes"):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"KUBETUNNEL_SHARED=true" in environ and b"agent" in command:
            return pid
    raise SystemExit("bench: no shared agent process found")


def child_pid(parent: int, module: bytes) -> int:
    """A child process of ``parent`` running ``python -m module``."""
    for pid in children(parent, module):
        return pid
    raise SystemExit(f"bench: no {module.decode()} process under {parent}")


def cpu_seconds(pid: int) -> float:
    """CPU time a process's threads have used (scheduler statistics, in nanoseconds; 0 once it
    is gone)."""
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


CLUSTER_CPUS = {0}
LAPTOP_CPUS = set(range(1, os.cpu_count() or 2))


def pin(pids: list[int], cpus: set[int]) -> None:
    """Every thread of each process onto ``cpus`` (new threads inherit it)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task.name), cpus)


def children(parent: int, module: bytes) -> list[int]:
    found = []
    for entry in Path(f"/proc/{parent}/task").iterdir():
        for child in (entry / "children").read_text().split():
            with contextlib.suppress(OSError):
                if module in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0"):
                    found.append(int(child))
    return found


@dataclasses.dataclass
class Cycles:
    """Cluster-path samples without and with a mirror, and CPU per request per process."""

    without: list[list[float]] = dataclasses.field(default_factory=list)
    with_mirror: list[list[float]] = dataclasses.field(default_factory=list)
    cpu: dict[bool, dict[str, list[float]]] = dataclasses.field(
        default_factory=lambda: {False: {}, True: {}})

    def ratios(self) -> list[float]:
        """Each with-mirror phase's p50 over the mean p50 of the two phases around it."""
        p50 = statistics.median
        return [p50(w) / ((p50(self.without[i]) + p50(self.without[i + 1])) / 2)
                for i, w in enumerate(self.with_mirror)]

    def ratio(self) -> float:
        return statistics.median(self.ratios())

    def rows(self, how: str, p50: Callable[[list[float]], float]) -> list[tuple[str, str]]:
        flat_without = [x for phase in self.without for x in phase]
        flat_with = [x for phase in self.with_mirror for x in phase]
        return [
            (f"mirror, {how}:", ""),
            ("  cluster path without mirror (each phase)",
             ", ".join(f"{p50(w) * 1e3:.3f}" for w in self.without) + " ms p50"),
            ("  cluster path with a mirror attached (each phase)",
             ", ".join(f"{p50(w) * 1e3:.3f}" for w in self.with_mirror) + " ms p50"),
            ("  pooled p50 / p99 without, with",
             f"{p50(flat_without) * 1e3:.3f} / {quantile(flat_without, 0.99) * 1e3:.3f}, "
             f"{p50(flat_with) * 1e3:.3f} / {quantile(flat_with, 0.99) * 1e3:.3f} ms"),
            ("  cluster-path p50 ratio (median of cycles)",
             f"{self.ratio():.2f}x (cycles " + ", ".join(f"{r:.2f}" for r in self.ratios())
             + ")"),
            ("  CPU per request without / with mirror (us):", ""),
            *((f"    {name}", f"{p50(self.cpu[False][name]) * 1e6:.0f} / {p50(v) * 1e6:.0f}")
              for name, v in self.cpu[True].items()),
        ]


def _end(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def progress(started: float, what: str) -> None:
    print(f"bench: {time.monotonic() - started:5.1f}s {what}", file=sys.stderr, flush=True)


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency(filtered: KeepAlive, plain: KeepAlive, rounds: int, per_round: int,
            ) -> tuple[list[float], list[float], list[float]]:
    """Samples of both paths and the per-round p50 ratios (filtered over plain)."""
    all_filtered: list[float] = []
    all_plain: list[float] = []
    ratios = []
    for round_ in range(rounds):
        def run(client: KeepAlive) -> list[float]:
            return [client.timed("alice", "alice") for _ in range(per_round)]

        if round_ % 2 == 0:
            f, p = run(filtered), run(plain)
        else:
            p, f = run(plain), run(filtered)
        all_filtered += f
        all_plain += p
        ratios.append(statistics.median(f) / statistics.median(p))
    return all_filtered, all_plain, ratios


def mixed(clients: list[KeepAlive], count: int, seed: int) -> tuple[int, dict[str, int]]:
    """Misrouted answers of ``count`` random requests over ``clients``, and who answered."""
    rng = random.Random(seed)
    choices: list[str | None] = [*DEVS, "nobody", None]
    misrouted = 0
    seen: dict[str, int] = {}
    for _ in range(count):
        dev = rng.choice(choices)
        expected = dev if dev in DEVS else "cluster"
        who = rng.choice(clients).get(dev)
        seen[who] = seen.get(who, 0) + 1
        misrouted += who != expected
    return misrouted, seen


def cluster_path(client: KeepAlive, count: int) -> list[float]:
    return [client.timed(None, "cluster") for _ in range(count)]


@contextlib.contextmanager
def clients(sandbox: RunningSandbox, ip: str, count: int) -> Iterator[list[KeepAlive]]:
    made = [KeepAlive(sandbox, ip) for _ in range(count)]
    try:
        yield made
    finally:
        for client in made:
            client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--mixed", type=int, default=10_000)
    parser.add_argument("--cluster", type=int, default=400, help="requests per mirror phase")
    parser.add_argument("--cycles", type=int, default=5,
                        help="mirror attached then detached, this many times")
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=False,
                        help="repeat the mirror cycles with the cluster's side (this client, "
                             "kube-proxy, the agent, the echo pods) on CPU 0 and the laptop's "
                             "side (CLIs, local servers, the sandbox's API server and kubelet) on "
                             "the others (shown in the table only)")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--control-plane", choices=("builtin", "real"), default="builtin")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        sandbox = stack.enter_context(running_sandbox(Path(tmp),
                                                      control_plane=args.control_plane))
        progress(started, "sandbox up")
        bench = Bench(sandbox, stack, Path(tmp))
        install = subprocess.run([sys.executable, "-m", "modes", "cli", "install"],
                                 env=bench.env, capture_output=True, text=True, check=False)
        if install.returncode != 0:
            raise SystemExit(f"bench: install failed: {install.stderr.strip()}")
        ips = bench.deploy()
        progress(started, "deployed")
        local_pids: dict[str, int] = {}
        ports = {name: bench.local(name, local_pids) for name in (*DEVS, "mirror")}
        progress(started, "local servers up")
        sessions = [bench.connect("plain", ports["alice"])]
        sessions += [bench.connect("orders", ports[dev], "--header", f"x-dev={dev}")
                     for dev in DEVS]
        for session in sessions:
            bench.switched(session)
        progress(started, "four intercepts switched")
        with clients(sandbox, ips["orders"], 1) as (filtered,), \
                clients(sandbox, ips["plain"], 1) as (plain,):
            for _ in range(50):  # warm both paths (pooled upstream connections, caches)
                filtered.timed("alice", "alice")
                plain.timed("alice", "alice")
            f_samples, p_samples, ratios = latency(filtered, plain, args.rounds, args.per_round)
            progress(started, "latency measured")
        with clients(sandbox, ips["orders"], 8) as many:
            misrouted, seen = mixed(many, args.mixed, args.seed)
            progress(started, "mixed done")
        agent, mirror_server = shared_agent_pid(sandbox.pid), local_pids["mirror"]
        kube_proxy = child_pid(sandbox.pid, b"modes.sandbox.node.proxyprocess")
        cluster_side = [os.getpid(), agent, kube_proxy,
                        *children(sandbox.pid, b"modes.sandbox.node.echo")]
        laptop_side = [sandbox.pid, *local_pids.values(), *(s.pid for s in sessions)]

        def cycles(isolated: bool) -> Cycles:
            made = Cycles()

            def phase(mirrored: bool, cli: int | None = None) -> None:
                pids = {"shared agent": agent, "sandbox (API server, kubelet)": sandbox.pid,
                        "kube-proxy (the sandbox's child)": kube_proxy,
                        "mirror's CLI": cli or 0, "mirror's local server": mirror_server}
                with clients(sandbox, ips["orders"], 1) as (client,):
                    cluster_path(client, 50)
                    used = {name: cpu_seconds(pid) for name, pid in pids.items()}
                    samples = cluster_path(client, args.cluster)
                    for name, pid in pids.items():
                        spent = (cpu_seconds(pid) - used[name]) / len(samples) if pid else 0.0
                        made.cpu[mirrored].setdefault(name, []).append(spent)
                (made.with_mirror if mirrored else made.without).append(samples)

            phase(False)
            for cycle in range(args.cycles):
                mirror = bench.connect("orders", ports["mirror"], "--mirror")
                bench.switched(mirror)
                if isolated:
                    pin([mirror.pid], LAPTOP_CPUS)
                phase(True, mirror.pid)
                bench.mirrored(mirror, args.cluster + 50)
                _end(mirror, signal.SIGINT)
                phase(False)
                progress(started, f"mirror cycle {cycle + 1} of {args.cycles}"
                         + (" (isolated)" if isolated else " (shared cores)"))
            return made

        shared = cycles(False)
        isolated: Cycles | None = None
        if args.isolate and len(os.sched_getaffinity(0)) >= 2:
            pin(cluster_side, CLUSTER_CPUS)
            pin(laptop_side, LAPTOP_CPUS)
            try:
                isolated = cycles(True)
            finally:
                every = os.sched_getaffinity(0) | LAPTOP_CPUS
                pin([*cluster_side, *laptop_side], every)
    ratio = statistics.median(ratios)
    p50 = statistics.median
    mirror_ratio = shared.ratio()
    total = (len(f_samples) + len(p_samples) + args.mixed
             + sum(len(x) for c in (shared, isolated) if c for x in c.without + c.with_mirror))
    rows = [
        ("plain (exclusive) intercept, x-dev: alice",
         f"{statistics.median(p_samples) * 1e3:.3f} / {quantile(p_samples, 0.99) * 1e3:.3f} ms"),
        ("filtered intercept, x-dev: alice",
         f"{statistics.median(f_samples) * 1e3:.3f} / {quantile(f_samples, 0.99) * 1e3:.3f} ms"),
        ("filtered / plain p50 (median of rounds)", f"{ratio:.2f}x (target <= 1.3)"),
        (f"mixed: misrouted of {args.mixed} (8 connections)", f"{misrouted} (target 0)"),
        ("  answered by", ", ".join(f"{k} {v}" for k, v in sorted(seen.items()))),
        *shared.rows("shared cores", p50),
        *(isolated.rows("laptop side on its own core", p50) if isolated else []),
        ("mirror cluster-path p50 ratio (RESULT)", f"{mirror_ratio:.2f}x (target <= 1.15)"),
        ("wall time", f"{time.monotonic() - started:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'measure'.ljust(width)}  p50 / p99 or result")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    print(f"RESULT filtered_p50_vs_plain={ratio:.2f} misrouted={misrouted} "
          f"mirror_cluster_p50_ratio={mirror_ratio:.2f} requests={total}")


if __name__ == "__main__":
    main()
