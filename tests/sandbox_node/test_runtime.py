"""Container processes: output capture, SIGTERM then SIGKILL, and no surviving children."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from modes.sandbox.node.logbuffer import ContainerLog
from modes.sandbox.node.runtime import ContainerProcess

ENV = {"KUBETUNNEL_BIND_ADDRESS": "127.77.0.1", "PYTHONUNBUFFERED": "1"}

IGNORES_TERM = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
# A child that also ignores SIGTERM: it must die with its container all the same.
CHILD = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
subprocess.Popen([sys.executable, "-c", CHILD])
print("ready", flush=True)
time.sleep(60)
"""

LEAVES_CHILD = """
import subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("bye", flush=True)
"""


async def _started(code: str) -> tuple[ContainerProcess, ContainerLog]:
    output = ContainerLog()
    process = ContainerProcess([sys.executable, "-c", code], dict(ENV), output, name="t")
    await process.start()
    async for line in output.follow(0):
        assert line.data in (b"ready\n", b"bye\n")
        break
    return process, output


async def test_output_is_captured_per_stream() -> None:
    output = ContainerLog()
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    process = ContainerProcess([sys.executable, "-c", code], dict(ENV), output, name="t")
    await process.start()
    exit_ = await process.wait()
    assert exit_.exit_code == 3
    assert exit_.reason == "Error"
    lines, _ = output.lines()
    assert sorted((line.stream, line.data) for line in lines) == [
        ("stderr", b"err\n"), ("stdout", b"out\n")]
    assert output.closed


async def test_sigterm_then_sigkill_after_the_grace_period() -> None:
    process, _ = await _started(IGNORES_TERM)
    began = time.monotonic()
    exit_ = await process.stop(0.5)
    elapsed = time.monotonic() - began
    assert exit_ is not None
    assert exit_.signal == 9
    assert exit_.exit_code == 137
    assert 0.5 <= elapsed < 10  # waited the grace, then did not wait any longer for the process
    # the grandchild ignoring SIGTERM is checked by the no-survivors fixture


async def test_a_process_that_honours_sigterm_stops_at_once() -> None:
    process, _ = await _started("import time; print('ready', flush=True); time.sleep(60)")
    began = time.monotonic()
    exit_ = await process.stop(30)
    assert time.monotonic() - began < 20  # did not wait out the 30 s grace
    assert exit_ is not None
    assert exit_.signal == 15
    assert exit_.exit_code == 143


async def test_children_die_with_the_main_process() -> None:
    process, _ = await _started(LEAVES_CHILD)
    exit_ = await process.wait()
    assert exit_.exit_code == 0
    assert exit_.reason == "Completed"
    # the orphaned sleeper is checked by the no-survivors fixture


SANDBOX_STAND_IN = """
import asyncio, sys
from modes.sandbox.node.logbuffer import ContainerLog
from modes.sandbox.node.runtime import ContainerProcess

async def main():
    env = {"KUBETUNNEL_BIND_ADDRESS": "127.77.0.9"}
    process = ContainerProcess([sys.executable, "-c", "import time; time.sleep(60)"], env,
                               ContainerLog())
    await process.start()
    print(f"\\n{process.pid}", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_pod_process_dies_with_a_killed_sandbox() -> None:
    sandbox = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SANDBOX_STAND_IN, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert sandbox.stdout is not None
    line = b""
    while not line.strip().isdigit():  # unconfigured structlog also writes to stdout
        line = await asyncio.wait_for(sandbox.stdout.readline(), 10)
        assert line, "the stand-in sandbox ended early"
    pid = int(line)
    sandbox.kill()  # no shutdown at all: only the kernel can clean up now
    await sandbox.wait()
    # the no-survivors fixture fails the test if the pod process outlived its sandbox
    assert pid > 0
