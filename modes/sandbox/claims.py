"""What one running sandbox holds alone on this machine: its loopback ranges and its kubeconfig.

Both are advisory ``flock`` locks held by the sandbox process, so they go with it however it
ends: a crashed sandbox strands nothing, and a second sandbox sees exactly the live ones.
Pod processes do not inherit them (Python opens files close-on-exec).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import pathlib
import tempfile
from collections.abc import Iterator
from typing import NamedTuple

import yaml

from kubetunnel.errors import KubetunnelError


class Ranges(NamedTuple):
    service_cidr: str
    pod_cidr: str


# What `sandbox up` used before it picked ranges itself, and still prefers while free.
DEFAULT_RANGES = Ranges("127.10.0.0/16", "127.1.0.0/16")
# Further blocks: 127.N.0.0/17 for Services, 127.N.128.0/17 for pods. 127.1 and 127.10 are the
# defaults above, 127.77 is `cli forward`'s.
_BLOCKS = [b for b in range(20, 250) if b != 77]


def _block_ranges(block: int) -> Ranges:
    return Ranges(f"127.{block}.0.0/17", f"127.{block}.128.0/17")


def _lock(path: pathlib.Path) -> int | None:
    """An open descriptor holding ``path``'s exclusive lock, or None if another process has it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def claim_ranges(*, defaults_first: bool = True, avoid: str | None = None) -> Iterator[Ranges]:
    """Loopback ranges no other running sandbox of this machine holds, for as long as the block
    runs, overlapping none of ``avoid`` (a range given on the command line).

    Test sandboxes pass ``defaults_first=False`` to leave the defaults to people.
    """
    candidates = [("default", DEFAULT_RANGES)] if defaults_first else []
    candidates += [(str(b), _block_ranges(b)) for b in _BLOCKS]
    taken = ipaddress.ip_network(avoid) if avoid else None
    for name, ranges in candidates:
        if taken is not None and any(ipaddress.ip_network(r).overlaps(taken) for r in ranges):
            continue
        fd = _lock(pathlib.Path(tempfile.gettempdir()) / f"kubetunnel-sandbox-block-{name}.lock")
        if fd is None:
            continue
        try:
            yield ranges
        finally:
            os.close(fd)
        return
    raise KubetunnelError("every loopback range for sandboxes is in use by another sandbox")


class KubeconfigClaim:
    """The kubeconfig a sandbox writes, held from before it starts until it exits.

    The lock is on the file itself (its inode), taken before anything else starts, so a second
    sandbox pointed at the same path refuses at once instead of overwriting the first one's
    server and token, which would leave the first running but unreachable by that kubeconfig.
    """

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> KubeconfigClaim:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._created = not self.path.exists()
            self._fd = _lock(self.path)
        except OSError as exc:
            raise KubetunnelError(
                f"cannot write kubeconfig {self.path}: {exc.strerror or exc}") from None
        if self._fd is None:
            raise KubetunnelError(
                f"kubeconfig {self.path} belongs to {_describe_holder(self.path)}; stop that "
                "sandbox first or give this one another --kubeconfig")
        return self

    def write(self, text: str) -> None:
        """Replace the file atomically (readable only by the user: it holds the admin token),
        keeping the lock on the new file."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a new inode: nobody else can hold it
            data = memoryview(text.encode())
            while data:
                data = data[os.write(fd, data):]
            tmp.replace(self.path)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        self._release()
        self._fd, self._created = fd, False

    def __exit__(self, *exc: object) -> None:
        if self._created:  # the empty placeholder of a sandbox that never became ready
            with contextlib.suppress(OSError):
                if self.path.stat().st_size == 0:
                    self.path.unlink()
        self._release()

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _describe_holder(path: pathlib.Path) -> str:
    """"the sandbox at https://127.0.0.1:41237 (pid 1234)", as far as can be told."""
    server = pid = None
    with contextlib.suppress(OSError, yaml.YAMLError, LookupError, TypeError, AttributeError):
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        server = config["clusters"][0]["cluster"]["server"]
    with contextlib.suppress(OSError, ValueError):
        pid = _flock_holder(path)
    where = f" at {server}" if server else ""
    who = f" (pid {pid})" if pid else ""
    return f"the running sandbox{where}{who}"


def _flock_holder(path: pathlib.Path) -> int | None:
    """The process holding ``path``'s flock, from Linux's /proc/locks; None elsewhere."""
    st = path.stat()
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in pathlib.Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == inode:
            return int(fields[4])
    return None
