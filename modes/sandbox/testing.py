"""Start a sandbox in a subprocess for tests: ``with running_sandbox(tmp) as sb: ...``.

A subprocess rather than an in-process server, so that tests exercise exactly what users run
and the test's event loop (and its blocking-call guard) stays out of the server's way.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import NamedTuple

import yaml

from modes.sandbox.claims import claim_ranges

READY_PREFIX = "sandbox ready: "


class RunningSandbox(NamedTuple):
    url: str
    kubeconfig: pathlib.Path
    token: str
    pid: int  # of the ``sandbox up`` process (benchmarks read its CPU time)


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
    timeout: float = 20.0,
    own_ranges: bool = False,
) -> Iterator[RunningSandbox]:
    """Run ``python -m modes sandbox up`` until the block ends; the process never outlives it.

    ``own_ranges``: let the sandbox pick its loopback ranges as `sandbox up` does for a person,
    instead of a block this process claims for it. Failing to start raises
    :class:`SandboxStartError` with the subprocess's stderr.
    """
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
        if not own_ranges:
            claimed = stack.enter_context(claim_ranges(defaults_first=False))
            ranges = ("--service-cidr", claimed.service_cidr, "--pod-cidr", claimed.pod_cidr)
        stderr = stack.enter_context(tempfile.TemporaryFile(mode="w+", prefix="sandbox-stderr-"))
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
            yield RunningSandbox(fields["server"], kubeconfig, token, proc.pid)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
