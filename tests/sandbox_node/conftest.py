"""Node tests start real processes: none may outlive the test that started it.

Every pod of these tests gets an address from TEST_POD_CIDR and so carries
``KUBETUNNEL_BIND_ADDRESS=127.77.…`` in its environment, which is how a survivor is recognised
(other engineers' sandboxes on the same machine use other ranges).
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


def survivors() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            environ = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
            if MARKER in environ and stat.rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def no_surviving_processes() -> Iterator[None]:
    yield
    deadline = time.monotonic() + 1.0
    left = survivors()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = survivors()
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes survived the test: {left}"
