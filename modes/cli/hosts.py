"""The hosts file: one marked block per running session, written atomically, removed on exit.

Several sessions (a `connect` per Service, a `forward`) may run at once, so each owns a block
tagged with its id and pid. A block whose pid is gone was left by a killed run: the next
session that touches the file removes it. Writes go to a temporary file in the same directory
and are renamed over the original; where the hosts file is a bind mount (containers) and
rename fails, the content is written in place instead.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubetunnel.errors import KubetunnelError

BEGIN = "# BEGIN kubetunnel"
END = "# END kubetunnel"
_BEGIN_RE = re.compile(r"^# BEGIN kubetunnel (?P<session>\S+) pid=(?P<pid>\d+)\s*$")


@dataclass(frozen=True)
class HostEntry:
    address: str
    names: tuple[str, ...]


def service_names(service: str, namespace: str) -> tuple[str, ...]:
    """The names a pod in the cluster could use for a Service, shortest first."""
    return (
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


class HostsFile:
    """Blocks of one session in one hosts file (``/etc/hosts`` or a path the user gives)."""

    def __init__(self, path: Path, session: str, pid: int | None = None) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", session):
            raise KubetunnelError(f"invalid hosts-file session id {session!r}")
        self.path = path
        self.session = session
        self.pid = pid if pid is not None else os.getpid()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Lock beside, not in, the hosts file: a rename replaces the file and would drop a lock
        # taken on it, and /etc should not collect lock files.
        digest = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:16]
        lock_path = Path(tempfile.gettempdir()) / f"kubetunnel-hosts-{digest}.lock"
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> list[str]:
        try:
            return self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        except PermissionError as exc:
            raise _needs_root(self.path) from exc

    def _write(self, lines: Sequence[str]) -> None:
        text = "\n".join(lines) + ("\n" if lines else "")
        mode = self.path.stat().st_mode & 0o777 if self.path.exists() else 0o644
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".hosts-kubetunnel-")
        except PermissionError as exc:
            raise _needs_root(self.path) from exc
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            Path(tmp).chmod(mode)
            try:
                Path(tmp).replace(self.path)
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.EXDEV, errno.EPERM):
                    raise
                self.path.write_text(text)  # a bind-mounted hosts file cannot be replaced
        finally:
            with contextlib.suppress(FileNotFoundError):
                Path(tmp).unlink()

    @staticmethod
    def _split(lines: list[str]) -> tuple[list[str], dict[str, tuple[int, list[str]]]]:
        """(lines outside any block, {session: (pid, lines inside its block)})."""
        outside: list[str] = []
        blocks: dict[str, tuple[int, list[str]]] = {}
        current: str | None = None
        for line in lines:
            match = _BEGIN_RE.match(line)
            if match and current is None:
                current = match["session"]
                blocks[current] = (int(match["pid"]), [])
            elif current is not None and line.strip() == f"{END} {current}":
                current = None
            elif current is not None:
                blocks[current][1].append(line)
            else:
                outside.append(line)
        return outside, blocks

    def _render(self, entries: Sequence[HostEntry]) -> list[str]:
        body = [f"{e.address}\t{' '.join(e.names)}" for e in entries]
        return [f"{BEGIN} {self.session} pid={self.pid}", *body, f"{END} {self.session}"]

    def write(self, entries: Sequence[HostEntry]) -> list[str]:
        """Replace this session's block; drop blocks of dead sessions. Returns their ids."""
        with self._locked():
            outside, blocks = self._split(self._read())
            stale = [
                s for s, (pid, _) in blocks.items() if s != self.session and not pid_alive(pid)
            ]
            while outside and not outside[-1].strip():
                outside.pop()
            lines = list(outside)
            for session, (pid, body) in blocks.items():
                if session == self.session or session in stale:
                    continue
                lines += [f"{BEGIN} {session} pid={pid}", *body, f"{END} {session}"]
            if entries:
                lines += self._render(entries)
            self._write(lines)
            return stale

    def remove(self) -> None:
        self.write([])

    def used_addresses(self) -> set[str]:
        """Addresses claimed by other live sessions, so a new session does not reuse them."""
        _, blocks = self._split(self._read())
        used: set[str] = set()
        for session, (pid, body) in blocks.items():
            if session != self.session and pid_alive(pid):
                used.update(line.split()[0] for line in body if line.strip())
        return used


def _needs_root(path: Path) -> KubetunnelError:
    return KubetunnelError(
        f"cannot write {path}: changing the hosts file needs root; run with sudo, or pass "
        "--hosts-file PATH (your own file) or --no-hosts (the address table is printed)"
    )
