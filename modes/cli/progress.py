"""Progress for long waits: steps with their times, and one live status line on a terminal.

Off a terminal (CI logs, pipes) the live line is printed only when its text changes, so logs
stay readable instead of filling with carriage returns.

Progress is the command's human output, so it goes to stdout; log events and errors go to
stderr, as kubectl keeps its output apart from klog's. ``2>/dev/null`` or ``--log-format json``
then never mixes JSON lines into what a person reads.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._step_started = self.started
        self._live = ""

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def step(self, text: str) -> float:
        """Print a finished step with the time it took since the previous one."""
        now = time.monotonic()
        took = now - self._step_started
        self._step_started = now
        self._clear()
        self.stream.write(f"✓ {text} ({took:.1f}s)\n")
        self.stream.flush()
        return took

    def note(self, text: str) -> None:
        self._clear()
        self.stream.write(f"  {text}\n")
        self.stream.flush()

    def live(self, text: str) -> None:
        if text == self._live:
            return
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._live = text

    def _clear(self) -> None:
        if self.tty and self._live:
            self.stream.write("\r\x1b[2K")
        self._live = ""

    def done(self) -> None:
        if self.tty and self._live:
            self.stream.write("\n")
            self.stream.flush()
        self._live = ""
