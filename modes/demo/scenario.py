"""The demo's scenario: connect, fail back, come back, disconnect, with what each step expects.

It takes the same code paths as a user: the sandbox runs as ``kubetunnel sandbox up``, the
operator is installed by ``cli install``'s own function, ``cli connect`` runs as its own process
and is ended with Ctrl-C (SIGINT), and the requests go to the Service's ClusterIP as a pod's
would. Whatever ends the demo (success, a failed expectation, an error, Ctrl-C, SIGTERM), every
process it started is stopped before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from pathlib import Path

import click

from modes.demo.cluster import (
    NAMESPACE,
    SERVICE,
    deploy_orders,
    echo_pods,
    service_snapshot,
    tunnel_leftovers,
)
from modes.demo.local import Answer, LocalServer, ask
from modes.demo.processes import cancel, exited, read_all, seconds, stop
from modes.demo.timeline import Timeline

POLL_INTERVAL = 0.2
# A failed request is retried a few times over 0.4 s, as any HTTP client with retries would;
# retries are counted and shown, a request that still fails is an error.
RETRIES = 4
FAILBACK_LIMIT = 1.0  # issue 7: answers come from the cluster again within 1 s
INTERCEPT_TIMEOUT = 20.0


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
            address = await deploy_orders(client)
            self.pods = await echo_pods(client)
            click.echo(f"Service {NAMESPACE}/{SERVICE}: ClusterIP {address}, port 80, served by "
                       f"{len(self.pods)} echo pods that answer with their name")
            before = await service_snapshot(client)
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
                await cancel(poller)
                await self.local.stop()
                self.timeline.flush()
            after = await service_snapshot(client)
            self.expect(after == before, "the Service's selector and annotations are as before")
            left = await tunnel_leftovers(client)
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
        output = asyncio.create_task(read_all(connect))
        try:
            started = self.timeline.now()
            seen = await self._wait_answer("local", started, INTERCEPT_TIMEOUT, connect)
            if seen is None:
                self.expect(False, f"requests reach the local process within "
                                   f"{INTERCEPT_TIMEOUT:.0f} s{exited(connect)}")
                return
            self.measured["intercept"] = seen - started
            self.timeline.annotate(f"intercepted {seen - started:.2f} s after connect started")
            await asyncio.sleep(2.0)
            if not self.own_process:
                await self._failback_and_return(connect)
            await self._disconnect(connect)
        finally:
            await stop(connect)
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
                                      f"stops{exited(connect)}")
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
                    f"traffic comes back to the local process{exited(connect)}")
        if returned is not None:
            self.measured["return"] = returned - started
            self.timeline.annotate(f"back {returned - started:.2f} s after your process started")
        await asyncio.sleep(2.0)

    async def _disconnect(self, connect: asyncio.subprocess.Process) -> None:
        if connect.returncode is not None:
            self.expect(False, f"connect keeps running until Ctrl-C{exited(connect)}")
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
            ("time to intercept", seconds(self.measured.get("intercept"))),
            ("failback time", seconds(self.measured.get("failback"))),
            ("time to come back", seconds(self.measured.get("return"))),
            ("time to disconnect", seconds(self.measured.get("disconnect"))),
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
