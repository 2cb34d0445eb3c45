"""Child processes and tasks of the demo: read, stop and cancel them without leaking any."""

from __future__ import annotations

import asyncio
import contextlib
import signal


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def exited(process: asyncio.subprocess.Process) -> str:
    code = process.returncode
    return "" if code is None else f" (kubetunnel cli connect exited {code})"


async def read_all(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    return (await process.stdout.read()).decode(errors="replace")


async def stop(process: asyncio.subprocess.Process, grace: float = 5.0) -> None:
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


async def cancel(task: asyncio.Task[None]) -> None:
    """Cancel and wait, without swallowing a cancellation aimed at the caller."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and (failure := task.exception()) is not None:
        raise failure
