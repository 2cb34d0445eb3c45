"""`kubetunnel demo` runs the whole idea on a sandbox, exits 0, and leaves nothing running."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def zipapp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built artifact, as users get it: the demo runs through it, not through the sources."""
    path = tmp_path_factory.mktemp("zipapp") / "kubetunnel"
    subprocess.run([sys.executable, str(ROOT / "build.py"), "--output", str(path)],
                   check=True, capture_output=True, timeout=300)
    return path


def _processes_of(marker: str) -> list[str]:
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return [line for line in listing.stdout.splitlines() if marker in line]


@pytest.mark.timeout(400)
def test_demo_holds_every_expectation_and_cleans_up(zipapp: Path, tmp_path: Path) -> None:
    # A bare environment: no virtualenv on PATH, the zipapp's own unpack directory.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SHIV_ROOT": str(tmp_path / "shiv")}
    result = subprocess.run([str(zipapp), "demo"], capture_output=True,
                            text=True, timeout=150, check=False, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = dict(re.findall(r"^  (\w[\w ]+?)\s{2,}(\S+)$", result.stdout, re.MULTILINE))
    assert float(summary["time to intercept"].rstrip("s")) < 3
    assert float(summary["failback time"].rstrip("s")) < 1
    assert int(summary["answered locally"]) > 0
    assert int(summary["answered by the cluster"]) > 0
    assert summary["errors"] == "0"
    assert "OK: every expectation held" in result.stdout
    assert "Cluster checked: Service selector and annotations as before" in result.stdout
    # The demo's sandbox lived in a kubetunnel-demo-* directory: nothing of it may survive.
    assert _processes_of("kubetunnel-demo-") == []


def test_demo_help_and_bad_option() -> None:
    helped = subprocess.run([sys.executable, "-m", "modes", "demo", "--help"],
                            capture_output=True, text=True, check=False)
    assert helped.returncode == 0
    assert "--local-port" in helped.stdout
    bad = subprocess.run([sys.executable, "-m", "modes", "demo", "--local-port", "0"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1
