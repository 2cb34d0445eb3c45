"""What ``--env-file`` and ``--mount`` leave on this machine: only the user may read it.

Files are created with mode 0600 (directories 0700) from the start, never chmod-ed after being
written, so a Secret's value is never readable by others even for a moment. A mount tree
removes exactly what it wrote (and the directories it created), never a user's own files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from kubetunnel.errors import KubetunnelError, UsageError
from kubetunnel.logging import get_logger
from modes.cli.volumes import MountFile

log = get_logger(__name__)

FORMATS = ("dotenv", "json", "shell")


def render(env: Mapping[str, str], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(dict(env), indent=2, ensure_ascii=False) + "\n"
    if fmt == "shell":
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    return "".join(f"{k}={_dotenv_value(v)}\n" for k, v in env.items())


def _dotenv_value(value: str) -> str:
    # Single quotes are literal in every dotenv reader (no escapes, no ${} interpolation);
    # values that hold one, or a newline, get double quotes with backslash escapes.
    if "'" not in value and "\n" not in value:
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only (replacing what was there)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise KubetunnelError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)  # an existing file keeps its mode on O_CREAT
        handle.write(data)


class MountTree:
    """The volume files under one root directory, and their removal."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        self.files: list[Path] = []
        self.created: list[Path] = []  # directories, in creation order

    def write(self, files: Sequence[MountFile], directories: Sequence[object] = ()) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"--mount {self.root}: not a directory")
        self._mkdir(self.root)
        for directory in directories:
            self._mkdir(self._inside(str(directory)))
        for item in files:
            target = self._inside(str(item.path))
            self._mkdir(target.parent)
            if target.is_dir():
                raise KubetunnelError(f"--mount: {target} is a directory; cannot write a file "
                                      "there")
            write_private(target, item.data)
            self.files.append(target)
        log.info("mount.written", root=str(self.root), files=len(self.files),
                 secret_files=sum(1 for f in files if f.secret))

    def _inside(self, relative: str) -> Path:
        target = (self.root / relative).absolute()
        if target != self.root and self.root not in target.parents:
            raise KubetunnelError(f"--mount: {relative!r} would be outside {self.root}")
        return target

    def _mkdir(self, directory: Path) -> None:
        missing = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for path in reversed(missing):
            path.mkdir(mode=0o700)
            self.created.append(path)

    def remove(self) -> None:
        for path in self.files:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for directory in reversed(self.created):
            try:
                directory.rmdir()
            except OSError as exc:  # something of the user's is in it now: leave it
                log.warning("mount.kept_directory", path=str(directory), error=exc.strerror)
        self.files.clear()
        self.created.clear()
