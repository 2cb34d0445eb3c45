"""Container output, kept in memory with a byte bound, read by ``pods/{name}/log``.

The kubelet keeps each container's current log and the previous run's (``--previous``), and
rotates by size so a chatty pod cannot fill the machine; a bounded buffer per run gives the same
two guarantees without files. Lines carry their arrival time, for ``timestamps`` and
``sinceSeconds``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
from collections.abc import AsyncIterator

DEFAULT_LIMIT = 4 * 1024 * 1024
# The CRI splits longer lines into partial ones; so does this buffer.
MAX_LINE = 16 * 1024


@dataclasses.dataclass(frozen=True)
class LogLine:
    time: datetime.datetime
    stream: str  # stdout or stderr
    data: bytes  # with its trailing newline, if it had one

    def rfc3339(self) -> str:
        return self.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ContainerLog:
    """The output of one run of one container; ``close()`` when the process has exited."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._lines: collections.deque[LogLine] = collections.deque()
        self._size = 0
        self._dropped = 0  # lines evicted from the front, so sequence numbers stay stable
        self._changed = asyncio.Event()
        self.closed = False

    def append(self, stream: str, data: bytes) -> None:
        line = LogLine(datetime.datetime.now(datetime.UTC), stream, data)
        self._lines.append(line)
        self._size += len(data)
        while self._size > self.limit and len(self._lines) > 1:
            self._size -= len(self._lines.popleft().data)
            self._dropped += 1
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def end(self) -> int:
        """The sequence number the next line will get."""
        return self._dropped + len(self._lines)

    def lines(
        self, tail: int | None = None, since: datetime.datetime | None = None
    ) -> tuple[list[LogLine], int]:
        """The kept lines (the last ``tail``, none older than ``since``) and the next sequence."""
        lines = list(self._lines)
        if since is not None:
            lines = [line for line in lines if line.time >= since]
        if tail is not None:
            lines = lines[len(lines) - tail :] if tail > 0 else []
        return lines, self.end

    async def follow(self, start: int) -> AsyncIterator[LogLine]:
        """Lines from sequence ``start`` on, waiting for new ones until the run is closed."""
        seq = start
        while True:
            if seq < self._dropped:
                seq = self._dropped  # the reader fell behind the bound; skip, as rotation would
            index = seq - self._dropped
            if index < len(self._lines):
                line = self._lines[index]
                seq += 1
                yield line
                continue
            if self.closed:
                return
            await self._changed.wait()


async def capture(reader: asyncio.StreamReader, stream: str, log: ContainerLog) -> None:
    """Copy a process's pipe into ``log`` line by line until EOF."""
    pending = b""
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            break
        pending += chunk
        while pending:
            cut = pending.find(b"\n")
            if cut < 0 or cut >= MAX_LINE:
                if len(pending) < MAX_LINE:
                    break
                cut = MAX_LINE - 1
            log.append(stream, pending[: cut + 1])
            pending = pending[cut + 1 :]
    if pending:
        log.append(stream, pending)
