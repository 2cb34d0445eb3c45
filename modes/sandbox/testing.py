"""Start a sandbox in a subprocess for tests: ``with running_sandbox(tmp) as sb: ...``.

A subprocess rather than an in-process server, so that tests exercise exactly what users run
and the test's event loop (and its blocking-call guard) stays out of the server's way.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import http.client
import os
import pathlib
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import IO, NamedTuple

import yaml

from modes.sandbox.claims import claim_ranges

READY_PREFIX = "sandbox ready: "


class RunningSandbox(NamedTuple):
    url: str
    kubeconfig: pathlib.Path
    token: str
    pid: int  # of the ``sandbox up`` process (benchmarks read its CPU time)
    # The real control plane keeps pods and ClusterIPs in this network namespace (a path under
    # /run/netns); None for the builtin one, whose pods are on this machine's loopback.
    netns: str | None = None

    @property
    def control_plane(self) -> str:
        return "builtin" if self.netns is None else "real"


CONTROL_PLANES = ("builtin", "real")


def cluster_socket(sandbox: RunningSandbox, host: str, port: int,
                   timeout: float = 5.0) -> socket.socket:
    """A TCP connection to a pod or ClusterIP address, made from inside the cluster's network.

    For the builtin control plane that is this machine's loopback; for the real one the socket
    is created inside the sandbox's network namespace (on a thread that has joined it), so that
    a test never sends a packet for a pod address out of this machine's own network.
    """
    def make() -> socket.socket:
        return socket.create_connection((host, port), timeout=timeout)

    if sandbox.netns is None:
        return make()
    return _namespace_thread(sandbox.netns).submit(make).result()


def cluster_listener(sandbox: RunningSandbox, host: str, port: int = 0) -> socket.socket:
    """A listening TCP socket on a pod's address, as a second server in that pod would have.

    Made inside the sandbox's network namespace on the real control plane (a socket keeps the
    namespace it was made in, so any thread may accept on it); on this machine's loopback for
    the builtin one.
    """
    def make() -> socket.socket:
        return socket.create_server((host, port))

    if sandbox.netns is None:
        return make()
    return _namespace_thread(sandbox.netns).submit(make).result()


_threads: dict[str, concurrent.futures.ThreadPoolExecutor] = {}


def _namespace_thread(netns: str) -> concurrent.futures.ThreadPoolExecutor:
    """One thread per namespace that joined it for good (setns affects the calling thread)."""
    def join() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(netns, os.O_RDONLY)
        try:
            if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                raise OSError(ctypes.get_errno(), f"cannot join {netns}")
        finally:
            os.close(fd)

    if netns not in _threads:
        _threads[netns] = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="cluster-socket", initializer=join)
    return _threads[netns]


def cluster_get(sandbox: RunningSandbox, host: str, port: int = 80, path: str = "/",
                timeout: float = 1.0) -> tuple[int, str]:
    """One HTTP GET as a pod would send it: (status, body)."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    connection.sock = cluster_socket(sandbox, host, port, timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


class SandboxStartError(RuntimeError):
    pass


def _read_ready_line(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, min(0.2, deadline - time.monotonic()))):
                if proc.poll() is not None:
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith(READY_PREFIX):
                return line.strip()
    return ""


@contextlib.contextmanager
def running_sandbox(
    directory: pathlib.Path | None = None,
    *,
    extra_args: tuple[str, ...] = (),
    timeout: float | None = None,
    control_plane: str = "builtin",
    own_ranges: bool = False,
) -> Iterator[RunningSandbox]:
    """Run ``python -m modes sandbox up`` until the block ends; the process never outlives it.

    ``own_ranges``: let the sandbox pick its loopback ranges as `sandbox up` does for a person,
    instead of a block this process claims for it. Failing to start raises
    :class:`SandboxStartError` with the subprocess's stderr.
    ``control_plane="real"`` needs the binary of ``python3 build.py --control-plane`` and root.
    """
    real = control_plane == "real"
    if timeout is None:
        timeout = 120.0 if real else 20.0
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = pathlib.Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="sandbox-"))
            )
        kubeconfig = directory / "kubeconfig"
        # Sandboxes running at once (one per test module) must not share loopback addresses:
        # each claims its own block for as long as it runs, leaving `sandbox up`'s defaults to
        # people (this process holds the claim, the sandbox is told the ranges).
        ranges: tuple[str, ...] = ()
        if real:  # its pods live in a network namespace of their own
            ranges = ("--control-plane", "real")
        elif not own_ranges:
            claimed = stack.enter_context(claim_ranges(defaults_first=False))
            ranges = ("--service-cidr", claimed.service_cidr, "--pod-cidr", claimed.pod_cidr)
        keep = os.environ.get("KUBETUNNEL_SANDBOX_LOGS")  # a directory: keep every log there
        stderr: IO[str]
        if keep:
            pathlib.Path(keep).mkdir(parents=True, exist_ok=True)
            stderr = stack.enter_context(tempfile.NamedTemporaryFile(
                mode="w+", prefix=f"sandbox-{control_plane}-", suffix=".log", dir=keep,
                delete=False))
        else:
            stderr = stack.enter_context(tempfile.TemporaryFile(mode="w+",
                                                                prefix="sandbox-stderr-"))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modes",
                "sandbox",
                "up",
                "--kubeconfig",
                str(kubeconfig),
                "--port",
                "0",
                "--host",
                "127.0.0.1",
                "--log-format",
                "json",
                *ranges,
                *extra_args,
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
        try:
            line = _read_ready_line(proc, time.monotonic() + timeout)
            if not line:
                stderr.seek(0)
                raise SandboxStartError(
                    f"sandbox did not become ready within {timeout:.0f}s "
                    f"(exit code {proc.poll()}); its stderr:\n{stderr.read()[-4000:]}"
                )
            fields = dict(part.split("=", 1) for part in line[len(READY_PREFIX) :].split())
            config = yaml.safe_load(kubeconfig.read_text(encoding="utf-8"))
            token = config["users"][0]["user"]["token"]
            netns = f"/run/netns/kubetunnel-{proc.pid}" if real else None
            yield RunningSandbox(fields["server"], kubeconfig, token, proc.pid, netns)
        finally:
            thread = _threads.pop(f"/run/netns/kubetunnel-{proc.pid}", None)
            if thread is not None:
                thread.shutdown(wait=True)
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30 if real else 10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
