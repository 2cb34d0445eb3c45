"""Containers as local processes: start, capture output, wait, and kill without survivors.

Each container runs in its own session (process group), the nearest thing to a PID namespace
without a container engine: termination signals the whole group, and when the main process
exits the rest of the group is killed, as the kernel does when a container's init dies. That is
what guarantees that no pod process outlives its pod or the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import os
import signal
import sys

from kubetunnel.logging import get_logger
from modes.sandbox.node import network
from modes.sandbox.node.logbuffer import ContainerLog, capture

log = get_logger(__name__)

# Execs the container's program with PR_SET_PDEATHSIG=SIGKILL set first, so that even a
# sandbox killed outright (no chance to terminate its pods) takes its pods' main processes
# with it; with a network namespace file as third argument it joins that namespace first (the
# real control plane's pod network). A wrapper rather than preexec_fn, which is unsafe in a
# process with threads.
_ORPHAN_GUARD = """
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(1, signal.SIGKILL)
if os.getppid() != int(sys.argv[1]):
    os._exit(137)
if sys.argv[2]:
    fd = os.open(sys.argv[2], os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:
        sys.stderr.write("cannot join network namespace " + sys.argv[2] + "\\n")
        os._exit(128)
    os.close(fd)
os.execvp(sys.argv[3], sys.argv[3:])
"""


def guarded(argv: list[str], netns: str | None = None) -> list[str]:
    """``argv`` behind the orphan guard where the platform has one (Linux), in ``netns``."""
    if not sys.platform.startswith("linux"):
        return argv
    return [sys.executable, "-S", "-I", "-c", _ORPHAN_GUARD, str(os.getpid()), netns or "",
            *argv]


def rfc3339(moment: datetime.datetime | None = None) -> str:
    moment = moment or datetime.datetime.now(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class Exit:
    """How a run ended, in the terms of a containerStatus ``terminated`` state."""

    exit_code: int
    signal: int | None
    started_at: str
    finished_at: str
    reason: str  # Completed, Error (as the kubelet reports for a plain process)

    def as_state(self) -> dict[str, object]:
        state: dict[str, object] = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        }
        if self.signal is not None:
            state["signal"] = self.signal
        return state


class ContainerProcess:
    """One run of one container. Not restartable: the kubelet makes a new one per restart."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        output: ContainerLog,
        cwd: str | None = None,
        name: str = "",
        host_network: bool = False,
    ) -> None:
        self.host_network = host_network  # hostNetwork pods stay in this machine's network
        self.argv = argv
        self.env = env
        self.output = output
        self.cwd = cwd
        self.name = name
        self.started_at = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._exit: Exit | None = None
        self._done = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and not self._done.is_set()

    async def start(self) -> None:
        """Start the process; raises OSError when it cannot be executed."""
        self._proc = await asyncio.create_subprocess_exec(
            *guarded(self.argv, None if self.host_network else network.active().netns),
            env=self.env,
            cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        self.started_at = rfc3339()
        assert self._proc.stdout is not None
        assert self._proc.stderr is not None
        self._readers = [
            asyncio.create_task(
                capture(self._proc.stdout, "stdout", self.output), name=f"log-{self.name}-stdout"
            ),
            asyncio.create_task(
                capture(self._proc.stderr, "stderr", self.output), name=f"log-{self.name}-stderr"
            ),
        ]
        log.debug("container.started", container=self.name, pid=self._proc.pid, argv=self.argv)

    async def wait(self) -> Exit:
        """Wait for the main process; then no process of its group may remain."""
        if self._exit is not None:
            return self._exit
        assert self._proc is not None, "not started"
        # asyncio's wait() returns only once the pipes close, and a child that inherited them
        # keeps them open; so learn of the main process's exit from a pidfd instead.
        await self._main_exited()
        # The main process is gone: kill what it left behind, so the pipes close and no child
        # outlives the container.
        self._signal_group(signal.SIGKILL)
        code = await self._proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
        self.output.close()
        if self._exit is None:
            sig = -code if code < 0 else None
            self._exit = Exit(
                exit_code=128 + sig if sig is not None else code,
                signal=sig,
                started_at=self.started_at,
                finished_at=rfc3339(),
                reason="Completed" if code == 0 else "Error",
            )
            self._done.set()
        return self._exit

    async def stop(self, grace: float) -> Exit | None:
        """SIGTERM to the group, SIGKILL after ``grace`` seconds; the Exit, or None if never run."""
        if self._proc is None:
            return None
        if not self._done.is_set():
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._main_exited(), max(grace, 0))
            except TimeoutError:
                log.info(
                    "container.killed", container=self.name, pid=self._proc.pid, grace_seconds=grace
                )
                self._signal_group(signal.SIGKILL)
        return await self.wait()

    async def _main_exited(self) -> None:
        assert self._proc is not None
        if self._proc.returncode is not None:
            return
        try:
            fd = os.pidfd_open(self._proc.pid)
        except ProcessLookupError:
            return  # already reaped
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await exited
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    def _signal_group(self, sig: int) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)
