"""The hosts file: one marked block per running session, written atomically, removed on exit.

Several sessions (a `connect` per Service, a `forward`) may run at once, so each owns a block
tagged with its id and pid. A block whose pid is gone was left by a killed run: the next
session that touches the file removes it. Everything outside the blocks is kept byte for byte,
so a clean exit leaves the file exactly as it was. Writes go to a temporary file beside the
file (beside a symlink's target: the link stays a link) that gets its mode and owner and is
renamed over it; where that cannot be done (a bind-mounted hosts file in a container, an owner
only root could give), the content is written in place instead.
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
_BEGIN_RE = re.compile(
    r"^# BEGIN kubetunnel (?P<session>\S+) pid=(?P<pid>\d+)(?P<eol_added> eol-added)?\s*$")


@dataclass(frozen=True)
class _Block:
    pid: int
    lines: list[str]  # with their line ends


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
        """The file's lines with their line ends, so writing them back gives the same bytes."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except PermissionError as exc:
            raise _needs_root(self.path) from exc
        # surrogateescape: a hosts file need not be UTF-8, and every byte must come back as it was.
        parts = data.decode("utf-8", "surrogateescape").split("\n")
        return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])

    def _write(self, text: str) -> None:
        data = text.encode("utf-8", "surrogateescape")
        # Write through a symlink (/etc/hosts is one on NixOS and in some images): replacing the
        # link with a regular file would leave its target without our entries.
        target = Path(os.path.realpath(self.path))
        try:
            st: os.stat_result | None = target.stat()
        except FileNotFoundError:
            st = None
        try:
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".hosts-kubetunnel-")
        except PermissionError as exc:
            raise _needs_root(self.path) from exc
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            Path(tmp).chmod(st.st_mode & 0o7777 if st is not None else 0o644)
            try:
                if st is not None and (st.st_uid, st.st_gid) != _owner(tmp):
                    os.chown(tmp, st.st_uid, st.st_gid)
                Path(tmp).replace(target)
            except OSError as exc:
                # A bind-mounted hosts file cannot be replaced, and only root may give the new
                # file the old one's owner: write in place, which keeps inode, mode and owner.
                if exc.errno not in (errno.EBUSY, errno.EXDEV, errno.EPERM):
                    raise
                target.write_bytes(data)
        finally:
            with contextlib.suppress(FileNotFoundError):
                Path(tmp).unlink()

    @staticmethod
    def _split(lines: list[str]) -> tuple[list[str], dict[str, _Block]]:
        """(lines outside any block, {session: its block}), line ends kept.

        A BEGIN line without its END is not ours to drop (a person's edit, a cut-off write):
        it stays with the lines outside. The newline a block once added after a last line that
        had none is taken off again, so removing every block gives back the file's exact bytes.
        """
        outside: list[str] = []
        blocks: dict[str, _Block] = {}
        first_block_at: int | None = None
        eol_added = False
        index = 0
        while index < len(lines):
            match = _BEGIN_RE.match(lines[index].rstrip("\n"))
            end = None
            if match:
                closing = f"{END} {match['session']}"
                end = next((j for j in range(index + 1, len(lines))
                            if lines[j].strip() == closing), None)
            if match is None or end is None:
                outside.append(lines[index])
                index += 1
                continue
            if first_block_at is None:
                first_block_at, eol_added = len(outside), bool(match["eol_added"])
            blocks[match["session"]] = _Block(int(match["pid"]), lines[index + 1:end])
            index = end + 1
        if eol_added and first_block_at == len(outside) and outside:
            outside[-1] = outside[-1].removesuffix("\n")
        return outside, blocks

    @staticmethod
    def _render(session: str, pid: int, body: Sequence[str], eol_added: bool) -> str:
        flag = " eol-added" if eol_added else ""
        lines = [line if line.endswith("\n") else line + "\n" for line in body]
        return f"{BEGIN} {session} pid={pid}{flag}\n{''.join(lines)}{END} {session}\n"

    def write(self, entries: Sequence[HostEntry]) -> list[str]:
        """Replace this session's block; drop blocks of dead sessions. Returns their ids."""
        with self._locked():
            outside, blocks = self._split(self._read())
            stale = [
                s for s, block in blocks.items() if s != self.session and not pid_alive(block.pid)
            ]
            kept = [(s, b.pid, b.lines) for s, b in blocks.items()
                    if s != self.session and s not in stale]
            if entries:
                kept.append((self.session, self.pid,
                             [f"{e.address}\t{' '.join(e.names)}\n" for e in entries]))
            text = "".join(outside)
            # The file's last line may lack a newline; ours follow on their own line, and the
            # first block says it added that newline so that removing it restores the bytes.
            eol_added = bool(kept) and text != "" and not text.endswith("\n")
            for number, (session, pid, body) in enumerate(kept):
                text += ("\n" if number == 0 and eol_added else "") + self._render(
                    session, pid, body, eol_added and number == 0)
            self._write(text)
            return stale

    def remove(self) -> None:
        self.write([])

    def used_addresses(self) -> set[str]:
        """Addresses claimed by other live sessions, so a new session does not reuse them."""
        _, blocks = self._split(self._read())
        used: set[str] = set()
        for session, block in blocks.items():
            if session != self.session and pid_alive(block.pid):
                used.update(line.split()[0] for line in block.lines if line.strip())
        return used


def _owner(path: str) -> tuple[int, int]:
    st = Path(path).stat()
    return st.st_uid, st.st_gid


def _needs_root(path: Path) -> KubetunnelError:
    return KubetunnelError(
        f"cannot write {path}: changing the hosts file needs root; run with sudo, or pass "
        "--hosts-file PATH (your own file) or --no-hosts (the address table is printed)"
    )
