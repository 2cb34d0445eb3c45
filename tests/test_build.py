"""build.py makes a zipapp that runs, lists its plugins, and is byte-for-byte reproducible."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("zipapps")
    paths = (out / "first" / "kubetunnel", out / "second" / "kubetunnel")
    for path in paths:
        subprocess.run(
            [sys.executable, str(ROOT / "build.py"), "--output", str(path)],
            check=True, capture_output=True, timeout=300,
        )
    return paths


@pytest.mark.timeout(600)
def test_build_is_reproducible(two_builds: tuple[Path, Path]) -> None:
    first, second = (hashlib.sha256(p.read_bytes()).hexdigest() for p in two_builds)
    assert first == second


@pytest.mark.timeout(600)
def test_zipapp_runs_every_mode_entry(two_builds: tuple[Path, Path], tmp_path: Path) -> None:
    app = two_builds[0]
    env = {"SHIV_ROOT": str(tmp_path / "shiv"), "PATH": "/usr/bin:/bin"}
    help_out = subprocess.run([str(app), "--help"], capture_output=True, text=True, env=env)
    assert help_out.returncode == 0, help_out.stderr
    assert "cli" in help_out.stdout
    version = subprocess.run([str(app), "version", "-o", "json"], capture_output=True,
                             text=True, env=env, check=True)
    from importlib import metadata

    assert json.loads(version.stdout)["version"] == metadata.version("kubetunnel")
    plugins = subprocess.run([str(app), "plugins", "-o", "json"], capture_output=True,
                             text=True, env=env, check=True)
    names = {(p["kind"], p["name"]) for p in json.loads(plugins.stdout)}
    assert {("transport", "loopback"), ("store", "memory")} <= names
    # Every listed plugin must import inside the zipapp: no placeholder entry points.
    for kind, name in sorted(names):
        shown = subprocess.run([str(app), "plugins", "show", kind, name],
                               capture_output=True, text=True, env=env)
        assert shown.returncode == 0, shown.stderr


def test_zipapp_ships_the_repository_manifests(two_builds: tuple[Path, Path]) -> None:
    import zipfile

    with zipfile.ZipFile(two_builds[0]) as archive:
        shipped = {
            Path(name).name: archive.read(name)
            for name in archive.namelist()
            if "/kubetunnel/manifests/" in name and name.endswith(".yaml")
        }
    on_disk = {p.name: p.read_bytes() for p in (ROOT / "manifests").glob("*.yaml")}
    assert shipped == on_disk
