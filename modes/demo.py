"""``kubetunnel demo``: the whole idea, end to end, on a local sandbox, in well under a minute.

It uses the same code paths as a user: the operator is installed by ``cli install``'s code,
``cli connect`` runs as its own process, and the requests go to the Service's ClusterIP as a
pod's would. Exit code 0 only if every expectation held.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from kubetunnel.console import common_options, run_async
from kubetunnel.errors import KubetunnelError

NAMESPACE = "default"
SERVICE = "orders"


@dataclass
class Timeline:
    """Who answered each request, printed as it happens with repeats collapsed."""

    started: float = field(default_factory=time.monotonic)
    last: str = ""
    repeats: int = 0
    local: int = 0
    cluster: int = 0
    errors: int = 0
    answers: list[tuple[float, str]] = field(default_factory=list)
    tty: bool = field(default_factory=lambda: sys.stdout.isatty())

    def record(self, who: str, detail: str) -> None:
        now = time.monotonic() - self.started
        self.answers.append((now, who))
        if who == "local":
            self.local += 1
        elif who == "cluster":
            self.cluster += 1
        else:
            self.errors += 1
        label = f"{who:<7} {detail}"
        if label == self.last:
            self.repeats += 1
            if self.tty:  # a live count on a terminal; logs get the total when it changes
                click.echo(f"\r{now:6.1f}s  {label}  (x{self.repeats + 1})", nl=False)
            return
        self._end_run()
        click.echo(f"{now:6.1f}s  {label}", nl=not self.tty)
        self.last, self.repeats = label, 0

    def _end_run(self) -> None:
        if self.tty and self.last:
            click.echo()
        elif self.repeats:
            click.echo(f"         ... and {self.repeats} more the same")

    def note(self, text: str) -> None:
        now = time.monotonic() - self.started
        self._end_run()
        click.echo(f"{now:6.1f}s  ── {text}")
        self.last, self.repeats = "", 0

    def first(self, who: str, after: float) -> float | None:
        return next((t for t, w in self.answers if w == who and t >= after), None)


class LocalServer:
    """The 'process on your laptop': a tiny HTTP server that can be stopped and started."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # The CLI's probe connects and closes without a request: not an error.
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await reader.readuntil(b"\r\n\r\n")
                body = f"hello from your laptop (pid {os.getpid()})".encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                             % len(body) + body)
                await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", self.port)
        if self.port == 0:
            self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


async def ask(address: str) -> str:
    """One GET to the Service's ClusterIP, as a pod would send it; the body or ``error:...``."""
    try:
        async with asyncio.timeout(2):
            reader, writer = await asyncio.open_connection(address, 80)
            writer.write(b"GET / HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n")
            await writer.drain()
            response = await reader.read()
            writer.close()
    except (OSError, TimeoutError) as exc:
        return f"error:{type(exc).__name__}"
    head, _, body = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return f"error:{head[:40].decode(errors='replace')}"
    return body.decode(errors="replace")


@click.command()
@click.option("--local-port", type=click.IntRange(1, 65535), default=None,
              help="Use your own process on this port instead of the demo's local server "
                   "(the failback steps are skipped: the demo cannot stop your process).")
@click.option("--keep", is_flag=True,
              help="Leave the sandbox running afterwards and print its kubeconfig.")
@common_options
def demo(local_port: int | None, keep: bool) -> None:
    """Show KubeTunnel working: intercept, fail back, come back, disconnect."""
    ok = run_async(Demo(local_port, keep).run())
    sys.exit(0 if ok else 1)


class Demo:
    def __init__(self, local_port: int | None, keep: bool) -> None:
        self.own_process = local_port is not None
        self.local = LocalServer(local_port or 0)
        self.keep = keep
        self.timeline = Timeline()
        self.failures: list[str] = []
        self.measured: dict[str, float] = {}

    def expect(self, condition: bool, what: str) -> None:
        if not condition:
            self.failures.append(what)

    async def run(self) -> bool:
        from modes.sandbox.testing import running_sandbox

        with tempfile.TemporaryDirectory(prefix="kubetunnel-demo-") as tmp:
            click.echo("Starting a local sandbox cluster ...")
            with running_sandbox(Path(tmp)) as sandbox:
                os.environ["KUBECONFIG"] = str(sandbox.kubeconfig)
                await self._scenario(sandbox.kubeconfig)
                self._summary()
                if self.keep:
                    click.echo(f"\nThe sandbox is still running. In another terminal:\n"
                               f"  export KUBECONFIG={sandbox.kubeconfig}\n"
                               f"  kubectl get pods -A\nPress Ctrl-C to stop it.")
                    await _wait_for_signal()
        return not self.failures

    async def _scenario(self, kubeconfig: Path) -> None:
        from kubetunnel.kube import KubeAccess, KubeClient

        access = await asyncio.to_thread(KubeAccess.load, str(kubeconfig))
        async with KubeClient(access) as client:
            await self._install(kubeconfig)
            address = await _deploy_orders(client)
            click.echo(f"Service {NAMESPACE}/{SERVICE} at {address}:80, answered by 2 echo pods")
            before = await _service_state(client)
            if not self.own_process:
                await self.local.start()
            click.echo(f"Your local process: 127.0.0.1:{self.local.port}\n")
            self.timeline = Timeline()
            poller = asyncio.create_task(self._poll(address))
            try:
                await self._connect_and_switch(kubeconfig)
            finally:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
                await self.local.stop()
            self.timeline.note("done")
            after = await _service_state(client)
            self.expect(after == before, "the Service is exactly as before")
            left = await _tunnel_objects(client)
            self.expect(not left, f"no tunnel objects are left ({', '.join(left) or 'none'})")
            click.echo("Cluster checked: Service selector and annotations as before, "
                       f"tunnel objects left: {len(left)}")

    async def _install(self, kubeconfig: Path) -> None:
        from modes.cli import manifests
        from modes.cli.install import install_operator
        from modes.cli.options import KubeOptions

        click.echo("Installing the operator (kubetunnel cli install) ...")
        await install_operator(KubeOptions(str(kubeconfig), None, None),
                               manifests.DEFAULT_NAMESPACE, manifests.customized(), wait=True,
                               timeout=60)

    async def _poll(self, address: str) -> None:
        while True:
            answer = await ask(address)
            for _ in range(4):  # retries over 0.4 s, as an HTTP client with retries would
                if not answer.startswith("error:"):
                    break
                await asyncio.sleep(0.1)
                answer = await ask(address)
            if answer.startswith("hello from your laptop"):
                self.timeline.record("local", answer)
            elif answer.startswith(f"{SERVICE}-"):
                self.timeline.record("cluster", f"pod {answer}")
            else:
                self.timeline.record("error", answer)
            await asyncio.sleep(0.2)

    async def _wait_answer(self, who: str, after: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.timeline.first(who, after)
            if seen is not None:
                return seen
            await asyncio.sleep(0.02)
        return None

    async def _connect_and_switch(self, kubeconfig: Path) -> None:
        await asyncio.sleep(1.0)
        self.timeline.note(f"kubetunnel cli connect {SERVICE} -p {self.local.port}:80")
        connect = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "modes", "cli", "connect", SERVICE, "-p",
            f"{self.local.port}:80", "--no-forward", "--lease-ttl", "15",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        )
        stderr = asyncio.create_task(_collect(connect))
        try:
            started = self.timeline_now()
            seen = await self._wait_answer("local", started, 20)
            self.expect(seen is not None, "requests reach the local process within 20 s")
            if seen is None:
                return
            self.measured["intercept"] = seen - started
            await asyncio.sleep(2.0)
            if not self.own_process:
                await self._failback_and_return()
            self.timeline.note("Ctrl-C on kubetunnel cli connect")
            connect.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(connect.wait(), 30)
            self.expect(code == 0, f"connect exits 0 after Ctrl-C (it exited {code})")
            await asyncio.sleep(1.0)
            self.expect(self.timeline.answers[-1][1] == "cluster",
                        "after disconnecting the cluster answers again")
        finally:
            if connect.returncode is None:
                connect.kill()
                await connect.wait()
            output = await stderr
            if self.failures:
                click.echo("\nkubetunnel cli connect said:\n" + output, err=True)

    async def _failback_and_return(self) -> None:
        self.timeline.note("your local process stops")
        await self.local.stop()
        stopped = self.timeline_now()
        back = await self._wait_answer("cluster", stopped, 10)
        self.expect(back is not None, "the cluster answers again after the local process stops")
        if back is not None:
            self.measured["failback"] = back - stopped
            self.expect(back - stopped < 1.5, "failback within a second (plus one poll)")
        await asyncio.sleep(2.0)
        self.timeline.note("your local process starts again")
        await self.local.start()
        started = self.timeline_now()
        returned = await self._wait_answer("local", started, 10)
        self.expect(returned is not None, "traffic comes back to the local process")
        if returned is not None:
            self.measured["return"] = returned - started
        await asyncio.sleep(2.0)

    def timeline_now(self) -> float:
        return time.monotonic() - self.timeline.started

    def _summary(self) -> None:
        t = self.timeline
        self.expect(t.errors == 0, "no request failed")
        self.expect(t.local > 0 and t.cluster > 0, "both the cluster and the laptop answered")
        lines = [
            ("time to intercept", _seconds(self.measured.get("intercept"))),
            ("failback time", _seconds(self.measured.get("failback"))),
            ("time to come back", _seconds(self.measured.get("return"))),
            ("answered locally", str(t.local)),
            ("answered by the cluster", str(t.cluster)),
            ("errors", str(t.errors)),
        ]
        click.echo("\nSummary")
        for name, value in lines:
            click.echo(f"  {name:<24} {value}")
        if self.failures:
            click.echo("FAILED: " + "; ".join(self.failures))
        else:
            click.echo("OK: every expectation held")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


async def _collect(process: asyncio.subprocess.Process) -> str:
    assert process.stderr is not None
    return (await process.stderr.read()).decode(errors="replace")


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _deploy_orders(client: Any) -> str:
    labels = {"app": SERVICE}
    await client.apply({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                     "name": "echo", "image": "kubetunnel/sandbox-echo",
                     "ports": [{"name": "http", "containerPort": 8080}],
                     "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                 }]}}},
    }, field_manager="kubetunnel-demo")
    service = await client.apply({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80,
                                                "targetPort": "http"}]},
    }, field_manager="kubetunnel-demo")
    deadline = time.monotonic() + 30
    path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{SERVICE}"
    while (await client.get(path)).get("status", {}).get("readyReplicas", 0) < 2:
        if time.monotonic() > deadline:
            raise KubetunnelError("the echo pods did not become Ready within 30s")
        await asyncio.sleep(0.1)
    return str(service["spec"]["clusterIP"])


async def _service_state(client: Any) -> str:
    service = await client.get(f"/api/v1/namespaces/{NAMESPACE}/services/{SERVICE}")
    return json.dumps({"selector": service["spec"].get("selector"),
                       "annotations": service["metadata"].get("annotations", {})},
                      sort_keys=True)


async def _tunnel_objects(client: Any) -> list[str]:
    found = []
    records = await client.get(
        f"/apis/application.dcode.tech/v1/namespaces/{NAMESPACE}/kubetunnels")
    found += [f"kubetunnel/{r['metadata']['name']}" for r in records.get("items", [])]
    for kind, path in (("deployment", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"),
                       ("secret", f"/api/v1/namespaces/{NAMESPACE}/secrets"),
                       ("serviceaccount", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts")):
        listing = await client.get(path)
        found += [f"{kind}/{i['metadata']['name']}" for i in listing.get("items", [])
                  if i["metadata"]["name"].startswith("kubetunnel-")]
    return found
