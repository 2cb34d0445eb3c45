"""The control plane's processes: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

Each runs as a child of the sandbox from the one multi-call binary, with its own flags and its
own log file under the state directory, behind the same orphan guard as pod processes (so a
sandbox killed outright takes its control plane with it). Flags are the ones kubeadm would set
for a one-node cluster, less what a cluster on one machine has no use for (cloud providers,
aggregation, leader election).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml

from kubetunnel.errors import KubetunnelError
from kubetunnel.logging import get_logger
from modes.sandbox.controlplane.pki import Pair
from modes.sandbox.node.runtime import guarded

log = get_logger(__name__)
STOP_GRACE = 5.0


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free right now (all held open together while choosing, so that
    the kernel cannot hand the same one out twice). Another process may still take one before
    the component binds it: a start that fails with EADDRINUSE is retried with new ports."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def client_kubeconfig(path: Path, server: str, ca: Path, pair: Pair) -> Path:
    """A kubeconfig that authenticates with a client certificate (a component's identity)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": {
            "server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "component", "user": {
            "client-certificate": str(pair.cert), "client-key": str(pair.key)}}],
        "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": "component"}}],
        "current-context": "sandbox",
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return path


class PortTaken(Exception):
    """A component could not bind a port picked for it; start again with other ports."""


@dataclasses.dataclass
class Component:
    """One child process; ``log_path`` has everything it printed."""

    name: str
    argv: list[str]
    log_path: Path
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                *guarded(self.argv), stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=out, start_new_session=True)
        log.info("controlplane.started", component=self.name, pid=self.process.pid,
                 log=str(self.log_path))

    def exited(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def port_taken(self) -> bool:
        """Whether it exited because a port it was given was taken meanwhile."""
        return "address already in use" in self.tail(20)

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        log.info("controlplane.stopped", component=self.name, code=process.returncode)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Everything the flags point at."""

    binary: Path
    state: Path  # logs, kubeconfigs, etcd data
    pki: Path
    ca: Path
    apiserver_serving: Pair
    kubelet_client: Pair
    service_account: Pair
    controller_manager: Path  # kubeconfig
    scheduler: Path  # kubeconfig
    token_file: Path
    bind_host: str
    secure_port: int
    advertise_address: str
    service_cidr: str


def etcd(layout: Layout) -> tuple[Component, str]:
    client, peer = free_ports(2)
    client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    argv = [
        str(layout.binary), "etcd",
        "--name=sandbox",
        f"--data-dir={layout.state / 'etcd'}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=sandbox={peer_url}",
        "--listen-metrics-urls=",
        # A throwaway cluster: durability is not worth an fsync per write.
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]
    return Component("etcd", argv, layout.state / "etcd.log"), client_url


def apiserver(layout: Layout, etcd_url: str) -> Component:
    argv = [
        str(layout.binary), "apiserver",
        f"--etcd-servers={etcd_url}",
        f"--bind-address={layout.bind_host}",
        f"--secure-port={layout.secure_port}",
        f"--advertise-address={layout.advertise_address}",
        f"--tls-cert-file={layout.apiserver_serving.cert}",
        f"--tls-private-key-file={layout.apiserver_serving.key}",
        f"--client-ca-file={layout.ca}",
        f"--token-auth-file={layout.token_file}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        f"--service-cluster-ip-range={layout.service_cidr}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={layout.service_account.cert}",
        f"--service-account-signing-key-file={layout.service_account.key}",
        f"--kubelet-client-certificate={layout.kubelet_client.cert}",
        f"--kubelet-client-key={layout.kubelet_client.key}",
        f"--kubelet-certificate-authority={layout.ca}",
        "--kubelet-preferred-address-types=InternalIP",
        "--allow-privileged=true",
        "--profiling=false",
        "--v=1",
    ]
    return Component("kube-apiserver", argv, layout.state / "kube-apiserver.log")


def controller_manager(layout: Layout) -> Component:
    argv = [
        str(layout.binary), "controller-manager",
        f"--kubeconfig={layout.controller_manager}",
        f"--authentication-kubeconfig={layout.controller_manager}",
        f"--authorization-kubeconfig={layout.controller_manager}",
        "--bind-address=127.0.0.1",
        "--secure-port=0",
        "--leader-elect=false",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={layout.service_account.key}",
        f"--root-ca-file={layout.ca}",
        f"--service-cluster-ip-range={layout.service_cidr}",
        "--profiling=false",
        "--v=1",
    ]
    return Component("kube-controller-manager", argv,
                     layout.state / "kube-controller-manager.log")


def scheduler(layout: Layout) -> Component:
    argv = [
        str(layout.binary), "scheduler",
        f"--kubeconfig={layout.scheduler}",
        f"--authentication-kubeconfig={layout.scheduler}",
        f"--authorization-kubeconfig={layout.scheduler}",
        "--bind-address=127.0.0.1",
        "--secure-port=0",
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
    ]
    return Component("kube-scheduler", argv, layout.state / "kube-scheduler.log")


async def wait_for(what: str, probe: Callable[[], Awaitable[bool]],
                   components: list[Component], timeout: float) -> None:
    """Poll ``probe()`` until true; a component that exits meanwhile fails fast, with its log."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for component in components:
            code = component.exited()
            if code is not None:
                if component.port_taken():
                    raise PortTaken(component.name)
                raise KubetunnelError(
                    f"{component.name} exited with code {code} while waiting for {what}: "
                    f"{component.tail()} (log: {component.log_path})")
        if await probe():
            return
        if loop.time() > deadline:
            raise KubetunnelError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)
