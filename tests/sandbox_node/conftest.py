"""Node tests start real processes: none may outlive the test that started it.

Every pod of these tests gets an address from TEST_POD_CIDR and so carries
``KUBETUNNEL_BIND_ADDRESS=127.77.…`` in its environment, which is how a survivor is recognised
(other engineers' sandboxes on the same machine use other ranges; these same tests run from
another checkout are told apart by their working directory).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

TEST_POD_CIDR = "127.77.0.0/16"
MARKER = b"KUBETUNNEL_BIND_ADDRESS=127.77."


def _ours(entry: Path, basetemp: Path) -> bool:
    """Whether a process belongs to this pytest run: a pod works in a directory under our
    temporary directory, a bare child inherits our working directory. The same tests run from
    another checkout on this machine use the same address range; their processes are neither
    ours to judge nor to kill."""
    try:
        cwd = (entry / "cwd").readlink()
    except OSError:
        return True
    return cwd.is_relative_to(basetemp) or cwd == Path.cwd()


def survivors(basetemp: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            environ = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
            if (MARKER in environ and stat.rsplit(")", 1)[1].split()[0] != "Z"
                    and _ours(entry, basetemp)):
                found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def no_surviving_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    basetemp = tmp_path_factory.getbasetemp().resolve()
    yield
    deadline = time.monotonic() + 1.0
    left = survivors(basetemp)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = survivors(basetemp)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes survived the test: {left}"
