#!/usr/bin/env python3
"""End-to-end benchmark of issue 7 on the sandbox: intercept time, failback time, throughput.

    python bench/e2e.py [--trials 10] [--requests 400] [--control-plane builtin|real]

- intercept: from starting `kubetunnel cli connect` to the first request to the Service's
  ClusterIP answered by the local process (target < 3 s);
- failback: from killing the local process to the first answer from a cluster pod, over
  --trials trials (target p95 < 1 s);
- requests/s through the whole path (ClusterIP -> agent -> tunnel -> CLI -> local server)
  against the same local server asked directly (the tunnel bypassed), sequential keep-alive-less
  GETs from one client.
Ends with `RESULT intercept_s=<n> failback_p95_s=<n> rps_vs_bypass=<ratio>`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modes.sandbox.testing import RunningSandbox, cluster_get, running_sandbox  # noqa: E402

SERVER = ROOT / "tests" / "e2e" / "local_server.py"


def ask(address: str, port: int = 80) -> str:
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/", timeout=1) as response:
            return str(response.read().decode())
    except OSError as exc:
        return f"error:{type(exc).__name__}"


def ask_cluster(sandbox: RunningSandbox, address: str, port: int = 80) -> str:
    """As a pod would ask: from inside the cluster's network (a namespace on the real one)."""
    try:
        return cluster_get(sandbox, address, port, timeout=1)[1]
    except OSError as exc:
        return f"error:{type(exc).__name__}"


def wait_until(predicate, timeout: float) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise SystemExit("bench: timed out waiting")
        time.sleep(0.01)
    return time.monotonic() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kubectl(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    out = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True,
                         env=env, check=True)
    return out.stdout


def start_local(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, str(SERVER), str(port), "bench"])
    wait_until(lambda: ask("127.0.0.1", port) == "local:bench", 10)
    return process


def rps(get: Callable[[], str], count: int) -> float:
    start = time.monotonic()
    for _ in range(count):
        assert get() == "local:bench"
    return count / (time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--control-plane", choices=("builtin", "real"), default="builtin",
                        help="the sandbox's API server, or Kubernetes' own (needs root and "
                        "python3 build.py --control-plane)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_sandbox(
            Path(tmp), control_plane=args.control_plane) as sandbox:
        env = {**os.environ, "KUBECONFIG": str(sandbox.kubeconfig)}
        subprocess.run([sys.executable, "-m", "modes", "cli", "install"], env=env, check=True,
                       capture_output=True)
        labels = {"app": "orders"}
        for obj in (
            {"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": "orders", "namespace": "default"},
             "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                      "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                          "name": "echo", "image": "kubetunnel/sandbox-echo",
                          "ports": [{"name": "http", "containerPort": 8080}],
                          "readinessProbe": {"httpGet": {"path": "/", "port": "http"}}}]}}}},
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "orders", "namespace": "default"},
             "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]}},
        ):
            kubectl(env, "apply", "-f", "-", stdin=json.dumps(obj))
        kubectl(env, "rollout", "status", "deployment/orders", "--timeout=30s")
        ip = kubectl(env, "get", "service", "orders", "-o", "jsonpath={.spec.clusterIP}").strip()
        port = free_port()
        local = start_local(port)
        started = time.monotonic()
        connect = subprocess.Popen(
            [sys.executable, "-m", "modes", "cli", "connect", "orders", "-p", f"{port}:80",
             "--no-forward"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: ask_cluster(sandbox, ip) == "local:bench", 30)
            intercept = time.monotonic() - started
            failbacks = []
            for _ in range(args.trials):
                local.kill()
                local.wait()
                killed = time.monotonic()
                wait_until(lambda: ask_cluster(sandbox, ip).startswith("orders-"), 10)
                failbacks.append(time.monotonic() - killed)
                local = start_local(port)
                wait_until(lambda: ask_cluster(sandbox, ip) == "local:bench", 10)
            through = rps(lambda: ask_cluster(sandbox, ip), args.requests)
            bypass = rps(lambda: ask("127.0.0.1", port), args.requests)
        finally:
            connect.send_signal(signal.SIGINT)
            connect.wait(30)
            local.kill()
            local.wait()
    failbacks.sort()
    p95 = failbacks[min(len(failbacks) - 1, round(0.95 * (len(failbacks) - 1)))]
    rows = [
        ("intercept (connect -> first local answer)", f"{intercept:.2f} s", "< 3 s"),
        (f"failback p50 / p95 ({args.trials} trials)",
         f"{statistics.median(failbacks):.3f} / {p95:.3f} s", "p95 < 1 s"),
        ("requests/s through the tunnel", f"{through:.0f}", ""),
        ("requests/s bypassing it (local server directly)", f"{bypass:.0f}", ""),
        ("ratio", f"{through / bypass:.2f}x", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'result':>18}  target")
    for name, value, target in rows:
        print(f"{name.ljust(width)}  {value:>18}  {target}")
    print(f"RESULT intercept_s={intercept:.2f} failback_p95_s={p95:.3f} "
          f"rps_vs_bypass={through / bypass:.2f}")


if __name__ == "__main__":
    main()
