"""``kubetunnel demo``: the whole idea, end to end, on a local sandbox, in well under a minute.

It takes the same code paths as a user: the sandbox runs as ``kubetunnel sandbox up``, the
operator is installed by ``cli install``'s own function, ``cli connect`` runs as its own process
and is ended with Ctrl-C (SIGINT), and the requests go to the Service's ClusterIP as a pod's
would. Whatever ends the demo (success, a failed expectation, an error, Ctrl-C, SIGTERM), every
process it started is stopped before it exits. Exit code 0 only if every expectation held.
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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from kubetunnel.console import common_options, run_async
from kubetunnel.errors import KubetunnelError

NAMESPACE = "default"
SERVICE = "orders"
POLL_INTERVAL = 0.2
# A failed request is retried a few times over 0.4 s, as any HTTP client with retries would;
# retries are counted and shown, a request that still fails is an error.
RETRIES = 4
FAILBACK_LIMIT = 1.0  # issue 7: answers come from the cluster again within 1 s
INTERCEPT_TIMEOUT = 20.0


def clock(seconds: float) -> str:
    """``mm:ss.d`` since the timeline started: short, and sorts as text."""
    minutes, rest = divmod(max(seconds, 0.0), 60)
    return f"{int(minutes):02d}:{rest:04.1f}"


@dataclass
class _Run:
    started: float
    who: str
    details: list[str]
    count: int = 1
    remark: str = ""


@dataclass
class Timeline:
    """Who answered, as it happens. Requests go out every 200 ms, so a run of answers from the
    same side is one line with a count (the cluster's pods take turns; each turn is not news).
    On a terminal the line updates in place; in a log it is written when the run ends, so the
    lines stay in time order with the notes between them.
    """

    started: float = field(default_factory=time.monotonic)
    tty: bool = field(default_factory=lambda: sys.stdout.isatty())
    counts: Counter[str] = field(default_factory=Counter)
    answers: list[tuple[float, str]] = field(default_factory=list)
    _run: _Run | None = None

    def now(self) -> float:
        return time.monotonic() - self.started

    def record(self, who: str, detail: str) -> None:
        """One answer: ``who`` is ``cluster``, ``local`` or ``error``."""
        at = self.now()
        self.answers.append((at, who))
        self.counts[who] += 1
        run = self._run
        if run is None or run.who != who or (who == "error" and detail not in run.details):
            self.flush()
            self._run = _Run(at, who, [detail])
        else:
            run.count += 1
            if detail not in run.details:
                run.details.append(detail)
        self._redraw()

    def annotate(self, remark: str) -> None:
        """A measurement about the current run (how long it took to start), on its line."""
        if self._run is None:
            self.note(remark)
            return
        self._run.remark = remark
        self._redraw()

    def note(self, text: str) -> None:
        """What the demo does next, between the answers."""
        self.flush()
        click.echo(f"  {clock(self.now())}  -- {text}")

    def flush(self) -> None:
        if self._run is not None:
            click.echo() if self.tty else click.echo(self._line())
            self._run = None

    def first(self, who: str, after: float) -> float | None:
        return next((at for at, w in self.answers if w == who and at >= after), None)

    def last(self) -> str | None:
        return self.answers[-1][1] if self.answers else None

    def _redraw(self) -> None:
        if self.tty and self._run is not None:
            click.echo("\r" + self._line() + "\x1b[K", nl=False)

    def _line(self) -> str:
        assert self._run is not None
        run = self._run
        shown = ", ".join(run.details[:3]) + (", ..." if len(run.details) > 3 else "")
        count = f"  (x{run.count})" if run.count > 1 else ""
        remark = f"   <- {run.remark}" if run.remark else ""
        return f"  {clock(run.started)}  {run.who:<7}  {shown}{count}{remark}"


class LocalServer:
    """The 'process on your laptop': a tiny HTTP server the demo stops and starts again."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # The CLI's liveness probe connects and closes without a request: not an error.
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await reader.readuntil(b"\r\n\r\n")
                body = f"hello from your laptop (pid {os.getpid()})".encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                             + body)
                await writer.drain()
            writer.close()

        # The same port every time: coming back means the tunnel finds it where it was.
        self._server = await asyncio.start_server(handle, "127.0.0.1", self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


@dataclass(frozen=True)
class Answer:
    status: int | None
    body: str
    error: str | None = None


async def ask(address: str, port: int = 80, timeout: float = 2.0) -> Answer:
    """One plain HTTP/1.1 GET to the ClusterIP, as a pod in the cluster would send it."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, port)
            try:
                writer.write(b"GET / HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n")
                await writer.drain()
                response = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        return Answer(None, "", type(exc).__name__)
    head, _, body = response.partition(b"\r\n\r\n")
    parts = head.split(b"\r\n", 1)[0].decode(errors="replace").split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return Answer(None, "", f"not HTTP: {head[:40]!r}")
    return Answer(int(parts[1]), body.decode(errors="replace").strip())


@click.command()
@click.option("--local-port", type=click.IntRange(1, 65535), default=None,
              help="Use your own process on this port instead of the demo's local server "
                   "(the failback steps are skipped: the demo cannot stop your process).")
@click.option("--keep", is_flag=True,
              help="Leave the sandbox running afterwards, print its kubeconfig, stop on Ctrl-C.")
@common_options
def demo(local_port: int | None, keep: bool) -> None:
    """Show KubeTunnel working on a local sandbox cluster: intercept, fail back, come back,
    disconnect. About 15 seconds; needs no cluster. Exit code 0 only if every expectation held.
    """
    sys.exit(run_async(Demo(local_port, keep).main()))


class Demo:
    def __init__(self, local_port: int | None, keep: bool) -> None:
        self.own_process = local_port is not None
        self.local = LocalServer(local_port or 0)
        self.keep = keep
        self.timeline = Timeline()
        self.failures: list[str] = []
        self.measured: dict[str, float] = {}
        self.retries = 0
        self.pods: set[str] = set()
        self.interrupted: str | None = None

    def expect(self, condition: bool, what: str) -> None:
        if not condition:
            self.failures.append(what)

    async def main(self) -> int:
        """Ctrl-C and SIGTERM cancel the scenario: every ``finally`` stops what it started."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()

        def interrupt(name: str) -> None:
            if self.interrupted is None:  # a second Ctrl-C must not cut the cleanup short
                self.interrupted = name
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, interrupt, sig.name)
        try:
            ok = await self.run()
        except asyncio.CancelledError:
            if self.interrupted is None:
                raise
            task.uncancel()
            self.timeline.flush()
            click.echo(f"\nkubetunnel demo: interrupted ({self.interrupted}); everything it "
                       "started is stopped.", err=True)
            return 130
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        return 0 if ok else 1

    async def run(self) -> bool:
        from modes.sandbox.testing import running_sandbox

        with tempfile.TemporaryDirectory(prefix="kubetunnel-demo-") as tmp:
            click.echo("Starting a local sandbox cluster (kubetunnel sandbox up) ...")
            with running_sandbox(Path(tmp)) as sandbox:
                address = await self._scenario(sandbox.kubeconfig)
                self._summary()
                if self.keep:
                    await self._keep_running(sandbox.kubeconfig, address)
        return not self.failures

    async def _scenario(self, kubeconfig: Path) -> str:
        from kubetunnel.kube import KubeAccess, KubeClient
        from modes.cli import manifests
        from modes.cli.install import install_operator
        from modes.cli.options import KubeOptions

        click.echo("Installing the operator (kubetunnel cli install) ...")
        await install_operator(KubeOptions(str(kubeconfig), None, None),
                               manifests.DEFAULT_NAMESPACE, manifests.customized(), wait=True,
                               timeout=60)
        access = await asyncio.to_thread(KubeAccess.load, str(kubeconfig))
        async with KubeClient(access) as client:
            address = await _deploy_orders(client)
            self.pods = await _echo_pods(client)
            click.echo(f"Service {NAMESPACE}/{SERVICE}: ClusterIP {address}, port 80, served by "
                       f"{len(self.pods)} echo pods that answer with their name")
            before = await _service_snapshot(client)
            if not self.own_process:
                await self.local.start()
            whose = "yours" if self.own_process else "the demo's small HTTP server"
            click.echo(f"Your local process: 127.0.0.1:{self.local.port} ({whose})\n")
            click.echo(f"Every {POLL_INTERVAL * 1000:.0f} ms a request goes to "
                       f"http://{address}/ as a pod would send it. Who answered:")
            self.timeline = Timeline()
            poller = asyncio.create_task(self._poll(address))
            try:
                await self._connect_and_switch(kubeconfig)
            finally:
                await _cancel(poller)
                await self.local.stop()
                self.timeline.flush()
            after = await _service_snapshot(client)
            self.expect(after == before, "the Service's selector and annotations are as before")
            left = await _tunnel_leftovers(client)
            self.expect(not left, f"no tunnel objects are left (found: {', '.join(left)})")
        click.echo(f"\nCluster checked: Service selector and annotations "
                   f"{'as before' if after == before else 'CHANGED'}, "
                   f"tunnel objects left: {len(left)}")
        return address

    async def _poll(self, address: str) -> None:
        while True:
            answer = await ask(address)
            for _ in range(RETRIES):
                if answer.error is None:
                    break
                self.retries += 1
                await asyncio.sleep(0.1)
                answer = await ask(address)
            self.timeline.record(*self._classify(answer))
            await asyncio.sleep(POLL_INTERVAL)

    def _classify(self, answer: Answer) -> tuple[str, str]:
        """The echo pods answer with their own name; anything else that speaks HTTP is you."""
        if answer.error is not None:
            return "error", answer.error
        if answer.body in self.pods:
            return "cluster", answer.body
        first = answer.body.splitlines()[0][:60] if answer.body else ""
        status = "" if answer.status == 200 else f" (HTTP {answer.status})"
        return "local", (first or "(empty body)") + status

    async def _wait_answer(self, who: str, after: float, timeout: float,
                           process: asyncio.subprocess.Process | None = None) -> float | None:
        """When ``who`` first answered since ``after``; None on timeout or if connect died."""
        deadline = self.timeline.now() + timeout
        while self.timeline.now() < deadline and (process is None or process.returncode is None):
            seen = self.timeline.first(who, after)
            if seen is not None:
                return seen
            await asyncio.sleep(0.02)
        return None

    async def _connect_and_switch(self, kubeconfig: Path) -> None:
        await asyncio.sleep(1.0)  # a second of the cluster answering, for contrast
        port = self.local.port
        self.timeline.note(f"kubetunnel cli connect {SERVICE} -p {port}:80 --no-forward")
        connect = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "modes", "cli", "connect", SERVICE, "-p", f"{port}:80",
            "--no-forward", "--lease-ttl", "15",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        )
        output = asyncio.create_task(_read_all(connect))
        try:
            started = self.timeline.now()
            seen = await self._wait_answer("local", started, INTERCEPT_TIMEOUT, connect)
            if seen is None:
                self.expect(False, f"requests reach the local process within "
                                   f"{INTERCEPT_TIMEOUT:.0f} s{_exited(connect)}")
                return
            self.measured["intercept"] = seen - started
            self.timeline.annotate(f"intercepted {seen - started:.2f} s after connect started")
            await asyncio.sleep(2.0)
            if not self.own_process:
                await self._failback_and_return(connect)
            await self._disconnect(connect)
        finally:
            await _stop(connect)
            text = await output
            if self.failures and self.interrupted is None:
                lines = [line for line in text.splitlines() if "traffic ->" not in line]
                click.echo("\nkubetunnel cli connect said:\n" + "\n".join(lines[-20:]), err=True)

    async def _failback_and_return(self, connect: asyncio.subprocess.Process) -> None:
        self.timeline.note("your local process stops")
        await self.local.stop()
        stopped = self.timeline.now()
        back = await self._wait_answer("cluster", stopped, 10, connect)
        self.expect(back is not None, f"the cluster answers again after the local process "
                                      f"stops{_exited(connect)}")
        if back is not None:
            self.measured["failback"] = back - stopped
            self.timeline.annotate(f"failback {back - stopped:.2f} s after your process stopped")
            self.expect(back - stopped <= FAILBACK_LIMIT,
                        f"failback within {FAILBACK_LIMIT:.0f} s (took {back - stopped:.2f} s)")
        await asyncio.sleep(2.0)
        self.timeline.note("your local process starts again")
        await self.local.start()
        started = self.timeline.now()
        returned = await self._wait_answer("local", started, 10, connect)
        self.expect(returned is not None,
                    f"traffic comes back to the local process{_exited(connect)}")
        if returned is not None:
            self.measured["return"] = returned - started
            self.timeline.annotate(f"back {returned - started:.2f} s after your process started")
        await asyncio.sleep(2.0)

    async def _disconnect(self, connect: asyncio.subprocess.Process) -> None:
        if connect.returncode is not None:
            self.expect(False, f"connect keeps running until Ctrl-C{_exited(connect)}")
            return
        self.timeline.note("Ctrl-C on kubetunnel cli connect")
        sent = self.timeline.now()
        with contextlib.suppress(ProcessLookupError):  # it may have ended this very moment
            connect.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(connect.wait(), 30)
        self.measured["disconnect"] = self.timeline.now() - sent
        self.expect(code == 0, f"connect exits 0 after Ctrl-C (it exited {code})")
        back = await self._wait_answer("cluster", sent, 5)
        self.expect(back is not None, "after disconnecting the cluster answers again")
        self.timeline.annotate(f"connect exited {code} {self.measured['disconnect']:.2f} s "
                               "after Ctrl-C, Service restored")
        await asyncio.sleep(1.0)
        self.expect(self.timeline.last() == "cluster",
                    "after disconnecting the cluster keeps answering")

    async def _keep_running(self, kubeconfig: Path, address: str) -> None:
        click.echo(f"\nThe sandbox keeps running. In another terminal:\n"
                   f"  export KUBECONFIG={kubeconfig}\n"
                   f"  kubectl get pods,services -A\n"
                   f"  curl http://{address}/\n"
                   f"Press Ctrl-C to stop it.")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if self.interrupted is None:
                raise
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()  # Ctrl-C is how --keep ends: not a failure
            click.echo("Stopping the sandbox ...")

    def _summary(self) -> None:
        counts = self.timeline.counts
        self.expect(counts["error"] == 0, "no request failed")
        self.expect(counts["local"] > 0 and counts["cluster"] > 0,
                    "both the cluster and the local process answered")
        rows = [
            ("time to intercept", _seconds(self.measured.get("intercept"))),
            ("failback time", _seconds(self.measured.get("failback"))),
            ("time to come back", _seconds(self.measured.get("return"))),
            ("time to disconnect", _seconds(self.measured.get("disconnect"))),
            ("answered locally", str(counts["local"])),
            ("answered by the cluster", str(counts["cluster"])),
            ("retried requests", str(self.retries)),
            ("errors", str(counts["error"])),
        ]
        click.echo("\nSummary")
        for name, value in rows:
            click.echo(f"  {name:<24} {value}")
        if self.failures:
            click.echo("FAILED: " + "; ".join(self.failures))
        else:
            click.echo("OK: every expectation held")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _exited(process: asyncio.subprocess.Process) -> str:
    code = process.returncode
    return "" if code is None else f" (kubetunnel cli connect exited {code})"


async def _read_all(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    return (await process.stdout.read()).decode(errors="replace")


async def _stop(process: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    """SIGINT as Ctrl-C would (so it restores the Service), then SIGKILL: it never survives us."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel and wait, without swallowing a cancellation aimed at the caller."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and (failure := task.exception()) is not None:
        raise failure


async def _deploy_orders(client: Any, timeout: float = 30) -> str:
    """Deployment + Service ``orders`` (port 80 -> named port http); the ClusterIP once Ready."""
    labels = {"app": SERVICE}
    await client.apply({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                     "name": "echo", "image": "kubetunnel/sandbox-echo",
                     "env": [{"name": "PORT", "value": "8080"}],
                     "ports": [{"name": "http", "containerPort": 8080}],
                     "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                 }]}}},
    }, field_manager="kubetunnel-demo")
    service = await client.apply({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE},
        "spec": {"selector": labels,
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }, field_manager="kubetunnel-demo")
    deadline = time.monotonic() + timeout
    path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{SERVICE}"
    while (await client.get(path)).get("status", {}).get("readyReplicas", 0) < 2:
        if time.monotonic() > deadline:
            raise KubetunnelError(f"the echo pods did not become Ready within {timeout:.0f}s")
        await asyncio.sleep(0.1)
    return str(service["spec"]["clusterIP"])


async def _echo_pods(client: Any) -> set[str]:
    """The names the cluster's answers carry: how an answer is told apart from the laptop's."""
    pods = await client.get(f"/api/v1/namespaces/{NAMESPACE}/pods",
                            labelSelector=f"app={SERVICE}")
    return {pod["metadata"]["name"] for pod in pods.get("items", [])}


async def _service_snapshot(client: Any) -> str:
    """What the operator may touch on the Service: its selector and its annotations."""
    service = await client.get(f"/api/v1/namespaces/{NAMESPACE}/services/{SERVICE}")
    return json.dumps({"selector": service["spec"].get("selector"),
                       "annotations": service["metadata"].get("annotations", {})},
                      sort_keys=True)


async def _tunnel_leftovers(client: Any) -> list[str]:
    """Kubetunnel records and ``kubetunnel-*`` objects in the namespace: none after disconnect."""
    found = []
    records = await client.get(
        f"/apis/application.dcode.tech/v1/namespaces/{NAMESPACE}/kubetunnels")
    found += [f"kubetunnel/{r['metadata']['name']}" for r in records.get("items", [])]
    for kind, path in (("deployment", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"),
                       ("secret", f"/api/v1/namespaces/{NAMESPACE}/secrets"),
                       ("serviceaccount", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts")):
        listing = await client.get(path)
        found += [f"{kind}/{item['metadata']['name']}" for item in listing.get("items", [])
                  if item["metadata"]["name"].startswith("kubetunnel-")]
    return found
