"""--env-file and --mount on disk: formats, mode 0600, and removal of exactly what was written."""

from __future__ import annotations

import json
import shlex
import stat
import subprocess
from pathlib import Path, PurePosixPath

from modes.cli.localfiles import MountTree, render, write_private
from modes.cli.volumes import MountFile

ENV = {"PLAIN": "abc", "QUOTE": "it's", "MULTI": "a\nb", "DOLLAR": "$(X) $HOME", "EMPTY": ""}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_formats_round_trip_through_their_readers() -> None:
    assert json.loads(render(ENV, "json")) == ENV
    shell = render(ENV, "shell")
    out = subprocess.run(["sh", "-c", shell + 'printf "%s|%s|%s|%s" "$PLAIN" "$QUOTE" "$MULTI"'
                          ' "$DOLLAR"'], capture_output=True, text=True, check=True, env={})
    assert out.stdout == "abc|it's|a\nb|$(X) $HOME"
    assert render(ENV, "dotenv").splitlines()[:2] == ["PLAIN='abc'", 'QUOTE="it\'s"']
    assert "MULTI=\"a\\nb\"" in render(ENV, "dotenv")
    assert shlex.split(render({"A": "x y"}, "shell")) == ["export", "A=x y"]


def test_private_files_are_0600_even_over_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, b"A=1\n")
    assert mode(path) == 0o600
    assert path.read_bytes() == b"A=1\n"


def test_mount_tree_writes_0600_and_removes_only_its_own(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    mine = root / "etc" / "user-file"
    mine.write_text("keep")
    tree = MountTree(root)
    tree.write([MountFile(PurePosixPath("etc/app/config.yaml"), b"a: 1", False),
                MountFile(PurePosixPath("var/run/creds/password"), b"pw", True)],
               [PurePosixPath("etc/app"), PurePosixPath("etc/empty")])
    assert (root / "etc/app/config.yaml").read_bytes() == b"a: 1"
    assert mode(root / "etc/app/config.yaml") == 0o600
    assert mode(root / "var/run/creds/password") == 0o600
    assert mode(root / "var/run/creds") == 0o700
    assert (root / "etc/empty").is_dir()
    tree.remove()
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "root", "root/etc", "root/etc/user-file"]
    assert mine.read_text() == "keep"


def test_mount_tree_removes_a_root_it_created(tmp_path: Path) -> None:
    tree = MountTree(tmp_path / "new" / "root")
    tree.write([MountFile(PurePosixPath("a"), b"x", False)])
    tree.remove()
    assert list(tmp_path.iterdir()) == []
