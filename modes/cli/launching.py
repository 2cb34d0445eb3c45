"""``cli connect ... -- COMMAND``: the local process, started with the pod's configuration.

The process runs in a session of its own, so that it is signalled by us and only by us: a
terminal's Ctrl-C reaches this CLI, which relays it to the process's group (then a second time,
if the process is still up; a third Ctrl-C ends the tunnel and the process regardless). When the
process exits, by itself or after a relayed signal, the tunnel ends, the Service is restored and
the CLI exits with the process's exit code (128+N for a signal N, as a shell reports it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from kubetunnel.errors import KubetunnelError, UsageError
from kubetunnel.logging import get_logger
from modes.cli.localenv import LocalOptions, Prepared, child_environment, prepare, write_mount
from modes.cli.localfiles import MountTree, render, write_private

log = get_logger(__name__)

COMMAND_KEY = "kubetunnel.command"
RELAYED_BEFORE_FORCE = 2  # signals passed on before one more ends everything regardless
STOP_GRACE = 10.0  # seconds a process we end ourselves gets between SIGTERM and SIGKILL


class CommandAfterDashes(click.Command):
    """A command that takes ``-- COMMAND [ARGS]...`` after its own arguments, untouched."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            at = args.index("--")
            ctx.meta[COMMAND_KEY] = tuple(args[at + 1:])
            args = args[:at]
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [*super().collect_usage_pieces(ctx), "[-- COMMAND [ARGS]...]"]


def command_after_dashes() -> tuple[str, ...]:
    command: tuple[str, ...] = click.get_current_context().meta.get(COMMAND_KEY, ())
    if COMMAND_KEY in click.get_current_context().meta and not command:
        raise click.UsageError("nothing after '--': give the command to run")
    return command


def exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class LocalSession:
    """The local side of ``connect``: the environment, the files and the process, if any."""

    def __init__(self, options: LocalOptions, command: Sequence[str], *, start_timeout: float,
                 note: Callable[[str], None]) -> None:
        self.options = options
        self.command = tuple(command)
        self.start_timeout = start_timeout
        self.note = note
        self.prepared: Prepared | None = None
        self.tree: MountTree | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.exit_code: int | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._relayed = 0

    @property
    def shown(self) -> str:
        return shlex.join(self.command)

    async def prepare(self, client: Any, service: Mapping[str, Any]) -> None:
        self.prepared = await prepare(client, service, self.options)
        self.note(f"environment of {self.prepared.choice.describe()}")

    async def start(self, addresses: Mapping[str, str] | None, host: str, ports: Sequence[int],
                    on_exit: Callable[[str], None], stopping: asyncio.Event) -> None:
        """Write the files, start the process and wait until it listens on every port."""
        assert self.prepared is not None
        resolved = self.prepared.environment(addresses)
        for warning in resolved.warnings:
            self.note(f"warning: {warning}")
        if self.options.env_file is not None:
            write_private(self.options.env_file, render(resolved.env, "dotenv").encode())
            self.note(f"environment written to {self.options.env_file}")
        if self.options.mount is not None:
            tree, warnings = await asyncio.to_thread(write_mount, self.prepared, resolved.env)
            self.tree = tree
            for warning in warnings:
                self.note(f"warning: {warning}")
            self.note(f"{len(tree.files)} volume files under {tree.root}")
        if not self.command or stopping.is_set():
            return
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.command, env=child_environment(resolved.env), start_new_session=True)
        except OSError as exc:
            raise UsageError(f"cannot start {self.shown}: {exc.strerror}") from None
        log.info("local.started", command=self.command[0], pid=self.process.pid,
                 variables=len(resolved.env))
        self.note(f"started {self.shown} (pid {self.process.pid})")
        self._watcher = asyncio.create_task(self._watch(on_exit), name="connect:local-process")
        await self._wait_listening(host, ports, stopping)

    async def _watch(self, on_exit: Callable[[str], None]) -> None:
        assert self.process is not None
        code = exit_status(await self.process.wait())
        self.exit_code = code
        log.info("local.exited", pid=self.process.pid, exit_code=code)
        on_exit(f"{self.shown} exited with code {code}")

    async def _wait_listening(self, host: str, ports: Sequence[int],
                              stopping: asyncio.Event) -> None:
        deadline = time.monotonic() + self.start_timeout
        waiting = list(ports)
        while waiting:
            if stopping.is_set() or self.exit_code is not None:
                return  # the caller's stop reason says why
            if await _listens(host, waiting[0]):
                waiting.pop(0)
                continue
            if time.monotonic() > deadline:
                where = ", ".join(f"{host}:{p}" for p in waiting)
                raise KubetunnelError(
                    f"{self.shown} did not listen on {where} within {self.start_timeout:.0f}s; "
                    "the Service was not switched (does it listen on that port? more time: "
                    "--start-timeout)")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 0.1)

    def relay(self, sig: signal.Signals) -> bool:
        """Pass a signal to the running process; False when it is not ours to handle."""
        if self.process is None or self.exit_code is not None:
            return False
        if self._relayed >= RELAYED_BEFORE_FORCE:
            return False
        self._relayed += 1
        self.note(f"{sig.name} passed to {self.shown}")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        return True

    async def aclose(self) -> None:
        """End the process (if it still runs) and remove the --mount files."""
        try:
            if self.process is not None and self.process.returncode is None:
                await self._terminate(self.process)
            if self._watcher is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._watcher
        finally:
            if self.tree is not None and not self.options.keep_mount:
                await asyncio.to_thread(self.tree.remove)
                self.note(f"removed the volume files under {self.tree.root}")

    async def _terminate(self, process: asyncio.subprocess.Process) -> None:
        for sig, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                await asyncio.wait_for(process.wait(), wait)
                return
            except TimeoutError:
                self.note(f"{self.shown} did not stop within {STOP_GRACE:.0f}s: killing it")


async def _listens(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
