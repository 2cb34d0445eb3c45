#!/usr/bin/env python3
"""Chaos suite on the sandbox: no request lost at any switch, disconnect or crash.

    python bench/chaos.py [--trials 100] [--seed N] [--profile default|ci]

A client sends a GET every 10 ms to the Service's ClusterIP for the whole run while faults hit
the tunnel at random (seeded) points of its life: SIGKILL of the CLI, of the agent, of the leading
operator (also twice in a row, with the CLI, with the agent); the agent pod deleted; the local
process stopped and started; the operator's API calls answered with 409/429/500 and its watches
ended (the sandbox's --faults); Ctrl-C with requests in flight. After every trial: the selector is
the original, no tunnel object or annotation is left, the hosts file is as before (a block left
by a SIGKILLed CLI must be gone after the next run). Per fault: failed requests, the longest run
of failures, and the time to the final state. The last line:

    RESULT trials=<n> selectors_lost=<n> leftovers=<n> failed_requests=<n> worst_outage_ms=<n>

(worst_outage_ms leaves out the one fault nothing can cover: operator and agent dead at once.)
The ``ci`` profile runs six faults once each (no second operator kill, no double faults), in
about a minute and a half.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modes.sandbox.testing import running_sandbox  # noqa: E402

SERVER = ROOT / "tests" / "e2e" / "local_server.py"
NS = "chaos"
OPERATOR_SA = "system:serviceaccount:kubetunnel:kubetunnel-operator"
CI_FAULTS = ("cli-kill", "agent-kill", "operator-kill", "local-stop-start", "api-faults",
             "ctrl-c-under-load")
EXCUSED = {"operator+agent-kill"}  # nothing serves while both are dead: the selector waits
FAULTS = ("cli-kill", "agent-kill", "agent-delete", "operator-kill", "operator-kill-twice",
          "operator+cli-kill", "operator+agent-kill", "local-stop-start", "api-faults",
          "ctrl-c-under-load")


def ask(address: str, path: str = "/", timeout: float = 1.0) -> str:
    try:
        with urllib.request.urlopen(f"http://{address}:80{path}", timeout=timeout) as response:
            return str(response.read().decode())
    except Exception as exc:  # any failure is a failed request, counted
        return f"error:{type(exc).__name__}"


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(0.02)
    return time.monotonic() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    def __init__(self, kubeconfig: Path, faults: Path) -> None:
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        self.faults = faults

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        out = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True,
                             env=self.env, check=False, timeout=60)
        if check and out.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def get(self, *args: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", *args, "-o", "json")))

    def pod_pid(self, pod: dict[str, Any]) -> int | None:
        """The sandbox runs a pod as a process whose environment names the pod's IP."""
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            return None
        needle = f"KUBETUNNEL_BIND_ADDRESS={ip}\0".encode()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if needle in (entry / "environ").read_bytes():
                        return int(entry.name)
                except OSError:
                    continue
        return None

    def agent_pods(self) -> list[dict[str, Any]]:
        items = self.get("-n", NS, "pods", "-l", "kubetunnel.dev/tunnel=orders")["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def leader_pid(self) -> int | None:
        lease = self.get("-n", "kubetunnel", "lease", "kubetunnel-operator")
        holder = lease["spec"].get("holderIdentity") or ""
        match = re.match(r"^.*-(\d+)-[0-9a-f]{6}$", holder)
        return int(match.group(1)) if match else None

    def final_state(self, original: dict[str, str]) -> tuple[bool, bool]:
        """(selector is the original without our annotations, tunnel objects are gone)."""
        service = self.get("-n", NS, "service", "orders")
        annotations = service["metadata"].get("annotations") or {}
        selector_ok = (service["spec"].get("selector") == original
                       and not any(k.startswith("kubetunnel.dev/") for k in annotations))
        names = self.kubectl("-n", NS, "get",
                             "kubetunnels,deployments,secrets,serviceaccounts,services",
                             "-o", "name").split()
        return selector_ok, not any("kubetunnel" in n for n in names)

    def set_faults(self, plan: dict[str, Any] | None) -> None:
        self.faults.write_text(json.dumps(plan) if plan else "")

    def heal_operators(self) -> None:
        """Replace operator pods left waiting in restart back-off, so the next trial has a
        standby (a SIGKILLed container restarts only after 10 s, then 20 s, ...)."""
        pods = self.get("-n", "kubetunnel", "pods", "-l", "we-dcode-app=kubetunnel-operator")
        for pod in pods["items"]:
            states = [c.get("state") or {} for c in pod["status"].get("containerStatuses") or []]
            if not states or any("running" not in s for s in states):
                self.kubectl("-n", "kubetunnel", "delete", "pod", pod["metadata"]["name"],
                             "--grace-period=0", "--force", "--wait=false", check=False)

        def running() -> bool:
            listing = self.get("-n", "kubetunnel", "pods", "-l",
                               "we-dcode-app=kubetunnel-operator")["items"]
            alive = [p for p in listing if not p["metadata"].get("deletionTimestamp")
                     and all("running" in (c.get("state") or {})
                             for c in p["status"].get("containerStatuses") or [{}])]
            return len(alive) >= 2 and self.leader_pid() is not None

        wait_until(running, 60, "two operator pods running, one leading")


@dataclass
class Request:
    started: float
    ended: float
    answer: str

    @property
    def failed(self) -> bool:
        return self.answer.startswith("error:")


class Client(threading.Thread):
    """One GET every 10 ms to the ClusterIP, for the whole run."""

    def __init__(self, ip: str) -> None:
        super().__init__(daemon=True)
        self.ip = ip
        self.requests: list[Request] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            answer = ask(self.ip)
            self.requests.append(Request(started, time.monotonic(), answer))
            time.sleep(max(0.0, 0.01 - (time.monotonic() - started)))

    def window(self, start: float, end: float) -> list[Request]:
        return [r for r in list(self.requests) if start <= r.started < end]


def longest_outage(requests: list[Request]) -> float:
    """Seconds from the first failure of a run of failures to the next success."""
    worst, first_failure = 0.0, None
    for request in requests:
        if request.failed:
            first_failure = first_failure if first_failure is not None else request.started
        elif first_failure is not None:
            worst = max(worst, request.ended - first_failure)
            first_failure = None
    if first_failure is not None and requests:
        worst = max(worst, requests[-1].ended - first_failure)
    return worst


def describe_failures(requests: list[Request], origin: float) -> str:
    """Each run of failures: when it began (relative to the fault), how long, what failed."""
    runs: list[str] = []
    current: list[Request] = []
    for request in [*requests, None]:
        if request is not None and request.failed:
            current.append(request)
            continue
        if current:
            kinds = sorted({r.answer for r in current})
            runs.append(f"{(current[0].started - origin) * 1000:+.0f}ms x{len(current)} "
                        f"{'/'.join(kinds)}")
            current = []
    return "; ".join(runs)


@dataclass
class Trial:
    fault: str
    failed: int = 0
    outage: float = 0.0
    to_final: float = 0.0
    selector_lost: bool = False
    leftover: bool = False
    note: str = ""
    failures: str = ""  # the runs of failures, relative to the fault


@dataclass
class Run:
    cluster: Cluster
    ip: str
    port: int
    hosts: Path
    hosts_original: bytes
    workdir: Path
    rng: random.Random
    local: subprocess.Popen[bytes] | None = None
    connect: subprocess.Popen[bytes] | None = None
    connect_log: Path | None = None
    stale_hosts: bool = False
    verbose: bool = False
    trials: list[Trial] = field(default_factory=list)

    # -- the pieces -------------------------------------------------------------------------
    def start_local(self) -> None:
        self.local = subprocess.Popen([sys.executable, str(SERVER), str(self.port), "chaos"])
        wait_until(lambda: ask_direct(self.port) == "local:chaos", 10, "the local server")

    def stop_local(self) -> None:
        if self.local is not None:
            self.local.kill()
            self.local.wait()
            self.local = None

    def start_connect(self, index: int) -> None:
        self.connect_log = self.workdir / f"connect-{index}.log"
        with self.connect_log.open("wb") as log:
            self.connect = subprocess.Popen(
                [sys.executable, "-m", "modes", "cli", "connect", "orders", "-n", NS,
                 "-p", f"{self.port}:80", "--hosts-file", str(self.hosts), "--lease-ttl", "5",
                 "--drain-timeout", "5"],
                env=self.cluster.env, stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT)
        wait_until(lambda: ask(self.ip) == "local:chaos", 60, "traffic reaching the laptop")

    def stop_connect(self, sig: int = signal.SIGINT) -> None:
        if self.connect is not None and self.connect.poll() is None:
            self.connect.send_signal(sig)
            try:
                self.connect.wait(40)
            except subprocess.TimeoutExpired:
                self.connect.kill()
                self.connect.wait()
        self.connect = None

    def kill(self, pid: int | None) -> None:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # -- one trial --------------------------------------------------------------------------
    def trial(self, index: int, fault: str, client: Client) -> Trial:
        result = Trial(fault)
        if self.local is None:
            self.start_local()
        begin = time.monotonic()
        injected = begin
        killed_cli = False
        try:
            self.start_connect(index)
            time.sleep(self.rng.uniform(0.0, 1.0))  # a random point of the connected life
            injected = time.monotonic()
            killed_cli = self.inject(fault)
        except TimeoutError as exc:  # counted as a failed trial; the run goes on
            result.note = f"{exc}; "
            if self.verbose:
                self.dump()
        self.stop_connect()
        original = {"app": "orders"}

        def final() -> bool:
            selector_ok, clean = self.cluster.final_state(original)
            return selector_ok and clean

        try:
            wait_until(final, 90, "the final state")
        except TimeoutError as exc:
            result.note += str(exc)
            if self.verbose:
                self.dump()
        end = time.monotonic()
        result.to_final = end - injected
        selector_ok, clean = self.cluster.final_state(original)
        result.selector_lost = not selector_ok
        hosts_ok = self.hosts.read_bytes() == self.hosts_original
        if not hosts_ok and killed_cli and not self.stale_hosts:
            self.stale_hosts = True  # the next connect must repair it
        else:
            self.stale_hosts = False
            if not hosts_ok:
                result.note += " hosts file changed"
        result.leftover = (not clean or (not hosts_ok and not self.stale_hosts)
                           or bool(result.note.strip()))
        time.sleep(0.1)  # the last requests of the window finish
        requests = client.window(begin, end)
        result.failed = sum(r.failed for r in requests)
        result.outage = longest_outage(requests)
        result.failures = describe_failures(requests, injected)
        self.cluster.set_faults(None)
        if "operator" in fault:
            self.cluster.heal_operators()
        return result

    def inject(self, fault: str) -> bool:
        """Do ``fault``; True if the CLI was killed (it cannot clean its hosts block)."""
        c = self.cluster
        if fault == "cli-kill":
            self.stop_connect(signal.SIGKILL)
            return True
        if fault in ("agent-kill", "operator+agent-kill"):
            if fault == "operator+agent-kill":
                self.kill(c.leader_pid())
            self.kill(next((c.pod_pid(p) for p in c.agent_pods()), None))
            time.sleep(1.0)  # the agent stays dead a while (its restart waits 10 s)
            return False
        if fault == "agent-delete":
            for pod in c.agent_pods():
                c.kubectl("-n", NS, "delete", "pod", pod["metadata"]["name"], "--wait=false")
            time.sleep(1.0)
            return False
        if fault in ("operator-kill", "operator-kill-twice", "operator+cli-kill"):
            first = c.leader_pid()
            self.kill(first)
            if fault == "operator+cli-kill":
                self.stop_connect(signal.SIGKILL)
                return True
            if fault == "operator-kill-twice":
                wait_until(lambda: c.leader_pid() not in (None, first), 30, "a new leader")
                self.kill(c.leader_pid())
            # While no operator leads: the local process stops and comes back.
            self.local_bounce()
            return False
        if fault == "local-stop-start":
            self.local_bounce()
            return False
        if fault == "api-faults":
            c.set_faults({"users": [OPERATOR_SA], "error_rate": 0.1,
                          "codes": [409, 429, 500], "watch_end_after": [1, 3],
                          "seed": self.rng.randrange(1 << 30)})
            self.local_bounce()
            return False
        if fault == "ctrl-c-under-load":
            self.slow_requests_then_ctrl_c()
            return False
        raise ValueError(fault)

    def dump(self) -> None:
        """What is left, for a person to read (--verbose)."""
        c = self.cluster
        print(c.kubectl("-n", NS, "get", "kubetunnels,deployments,pods,services", "-o", "wide",
                        check=False), flush=True)
        print(c.kubectl("-n", NS, "get", "kubetunnels", "-o", "yaml", check=False)[-3000:])
        pods = c.get("-n", "kubetunnel", "pods")["items"]
        for pod in pods:
            name = pod["metadata"]["name"]
            print(f"--- {name}")
            print(c.kubectl("-n", "kubetunnel", "logs", name, "--tail", "25", check=False))
        if self.connect_log is not None:
            print(self.connect_log.read_text()[-2000:])

    def local_bounce(self) -> None:
        self.stop_local()
        time.sleep(self.rng.uniform(0.3, 1.5))
        self.start_local()
        time.sleep(self.rng.uniform(0.3, 1.0))

    def slow_requests_then_ctrl_c(self) -> None:
        answers: list[str] = []
        marks = [self.workdir / f"slow-{i}-{time.monotonic_ns()}" for i in range(3)]
        threads = [threading.Thread(target=lambda m=m: answers.append(  # type: ignore[misc]
            ask(self.ip, f"/slow?seconds=1&mark={m}", timeout=20))) for m in marks]
        for thread in threads:
            thread.start()
        wait_until(lambda: all(m.exists() for m in marks), 10, "slow requests in flight")
        self.stop_connect(signal.SIGINT)
        for thread in threads:
            thread.join(30)
        lost = [a for a in answers if a != "local:chaos"]
        if lost:
            raise SystemExit(f"chaos: requests in flight at Ctrl-C were lost: {lost}")


def ask_direct(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=0.5) as response:
            return str(response.read().decode())
    except Exception as exc:  # any failure means "not answering"
        return f"error:{type(exc).__name__}"


def deploy(cluster: Cluster) -> str:
    labels = {"app": "orders"}
    cluster.kubectl("create", "namespace", NS)
    for obj in (
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "orders", "namespace": NS},
         "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                      "name": "echo", "image": "kubetunnel/sandbox-echo",
                      "ports": [{"name": "http", "containerPort": 8080}],
                      "readinessProbe": {"httpGet": {"path": "/", "port": "http"}}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "orders", "namespace": NS},
         "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]}},
    ):
        cluster.kubectl("apply", "-f", "-", stdin=json.dumps(obj))
    cluster.kubectl("-n", NS, "rollout", "status", "deployment/orders", "--timeout=60s")
    return cluster.kubectl("-n", NS, "get", "service", "orders", "-o",
                           "jsonpath={.spec.clusterIP}").strip()


def schedule(profile: str, trials: int, rng: random.Random, only: str = "") -> list[str]:
    if profile == "ci":
        return [f for f in CI_FAULTS if not only or f in only.split(",")]
    faults = tuple(f for f in FAULTS if not only or f in only.split(","))
    chosen = [faults[i % len(faults)] for i in range(trials)]
    rng.shuffle(chosen)
    return chosen


def report(trials: list[Trial]) -> None:
    print(f"{'fault':22} {'trials':>6} {'failed req':>10} {'worst outage':>13} "
          f"{'final p50/max':>15}")
    for fault in FAULTS:
        rows = [t for t in trials if t.fault == fault]
        if not rows:
            continue
        finals = sorted(t.to_final for t in rows)
        print(f"{fault:22} {len(rows):>6} {sum(t.failed for t in rows):>10} "
              f"{max(t.outage for t in rows) * 1000:>10.0f} ms "
              f"{finals[len(finals) // 2]:>6.1f}/{finals[-1]:.1f} s")
    for t in trials:
        if t.note:
            print(f"note: {t.fault}: {t.note.strip()}")
    counted = [t for t in trials if t.fault not in EXCUSED]
    worst = max((t.outage for t in counted), default=0.0)
    print(f"RESULT trials={len(trials)} selectors_lost={sum(t.selector_lost for t in trials)} "
          f"leftovers={sum(t.leftover for t in trials)} "
          f"failed_requests={sum(t.failed for t in counted)} "
          f"worst_outage_ms={worst * 1000:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--profile", choices=("default", "ci"), default="default")
    parser.add_argument("--only", default="", help="Comma-separated faults to run (all: empty).")
    parser.add_argument("--verbose", action="store_true", help="Print each run of failures.")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    print(f"chaos: seed {seed} (rerun with --seed {seed})", flush=True)
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        faults = workdir / "faults.json"
        with running_sandbox(workdir, extra_args=("--faults", str(faults))) as sandbox:
            cluster = Cluster(sandbox.kubeconfig, faults)
            installed = subprocess.run(
                [sys.executable, "-m", "modes", "cli", "install", "--timeout", "90"],
                env=cluster.env, check=False, capture_output=True, text=True, cwd=ROOT)
            if installed.returncode != 0:
                raise SystemExit(f"chaos: cli install failed: {installed.stderr.strip()[-2000:]}")
            # A standby replica: a killed leader's successor takes over within the Lease.
            cluster.kubectl("-n", "kubetunnel", "scale", "deployment/kubetunnel-operator",
                            "--replicas", "2")
            cluster.heal_operators()
            ip = deploy(cluster)
            hosts = workdir / "hosts"
            hosts.write_text("127.0.0.1 localhost\n")
            run = Run(cluster, ip, free_port(), hosts, hosts.read_bytes(), workdir, rng,
                      verbose=args.verbose)
            client = Client(ip)
            client.start()
            try:
                for index, fault in enumerate(schedule(args.profile, args.trials, rng, args.only)):
                    trial = run.trial(index, fault, client)
                    run.trials.append(trial)
                    print(f"trial {index + 1:3d} {fault:22} failed={trial.failed} "
                          f"outage_ms={trial.outage * 1000:.0f} "
                          f"final_s={trial.to_final:.1f}{' ' + trial.note if trial.note else ''}",
                          flush=True)
                    if trial.failures and args.verbose:
                        print(f"    failures: {trial.failures}", flush=True)
            finally:
                client.stopping.set()
                client.join(5)
                run.stop_connect(signal.SIGKILL)
                run.stop_local()
    report(run.trials)


if __name__ == "__main__":
    main()
