#!/usr/bin/env python3
"""Build ``./kubetunnel``: one shiv zipapp that runs as cli, agent, operator or sandbox.

Reproducible: the same sources and dependency versions give the same bytes. To that end we
install without byte-code (pyc files embed timestamps), drop the files pip writes that name the
build machine (direct_url.json, INSTALLER), keep one Kubernetes schema version of
kubernetes-validate, and let shiv stamp every zip entry with SOURCE_DATE_EPOCH.

    python3 build.py [--output PATH] [--python INTERPRETER]   (default output: dist/kubetunnel)
    python3 build.py --control-plane [--output PATH]

``--control-plane`` builds instead the real Kubernetes control plane the sandbox can run
(``sandbox up --control-plane real``): kube-apiserver, kube-controller-manager, kube-scheduler,
etcd and kubectl as one multi-call binary, from the published Go modules that
``controlplane/go.mod`` names, into ``~/.cache/kubetunnel/control-plane/<version>/``. It needs
Go; the Go module and build caches make a second build take seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# 2024-01-01T00:00:00Z: a fixed stamp, so the date of the build does not change the bytes.
DEFAULT_EPOCH = "1704067200"


def _version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def _install(target: Path) -> None:
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-compile", "--no-warn-script-location", "--target", str(target), str(ROOT),
        ],
        check=True,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )


def _prune(site: Path) -> None:
    """Remove what differs from build to build or what the zipapp never uses."""
    for path in list(site.rglob("*")):
        if path.name in ("direct_url.json", "INSTALLER", "REQUESTED") and path.is_file():
            path.unlink()
        elif path.name == "__pycache__" and path.is_dir():
            shutil.rmtree(path)
    bin_dir = site / "bin"
    if bin_dir.is_dir():  # console scripts carry this machine's interpreter path
        shutil.rmtree(bin_dir)
    schemas = site / "kubernetes_validate" / "kubernetes-json-schema"
    if schemas.is_dir():
        # ~100 MB for a dozen releases; the sandbox validates against the newest only.
        keep = _newest_schema_versions(schemas)
        for child in schemas.iterdir():
            if child.is_dir() and child.name not in keep:
                shutil.rmtree(child)


def _newest_schema_versions(schemas: Path) -> set[str]:
    def key(name: str) -> tuple[int, ...]:
        numbers = name.lstrip("v").split("-")[0].split(".")
        return tuple(int(n) for n in numbers if n.isdigit())

    names = [p.name for p in schemas.iterdir() if p.is_dir() and p.name.startswith("v")]
    if not names:
        return set()
    newest = max(key(n) for n in names)
    return {n for n in names if key(n) == newest}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(output: Path, python: str) -> Path:
    from shiv.cli import main as shiv_main  # the build extra; imported late for a clear error

    with tempfile.TemporaryDirectory(prefix="kubetunnel-build-") as tmp:
        site = Path(tmp) / "site-packages"
        _install(site)
        _prune(site)
        output.parent.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("SOURCE_DATE_EPOCH", DEFAULT_EPOCH)
        args = [
            "--site-packages", str(site),
            "--console-script", "kubetunnel",
            "--output-file", str(output),
            "--python", python,
            "--compressed",
            "--reproducible",
            # Child processes (the sandbox's pods, `demo`'s connect) run `python -m modes` and
            # must find the same code: shiv puts the unpacked site-packages on PYTHONPATH.
            "--extend-pythonpath",
        ]
        try:
            shiv_main.main(args=args, prog_name="shiv", standalone_mode=False)
        except SystemExit as exc:  # shiv exits 0 on success in some versions
            if exc.code not in (0, None):
                raise
    return output


def _go_module() -> tuple[str, str]:
    """(the Go version go.mod needs, the Kubernetes version it builds)."""
    text = (ROOT / "controlplane" / "go.mod").read_text()
    go = re.search(r"^go (\S+)$", text, re.M)
    kubernetes = re.search(r"^\s*k8s.io/kubernetes (v\S+)$", text, re.M)
    if go is None or kubernetes is None:
        sys.exit("build.py: error: controlplane/go.mod names no go version or k8s.io/kubernetes")
    return go.group(1), kubernetes.group(1)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def build_control_plane(output: Path | None) -> Path:
    """``go build`` of controlplane/ with the version stamps kube's own release builds set."""
    go_needed, kubernetes = _go_module()
    go = shutil.which("go")
    if go is None:
        sys.exit(f"build.py: error: --control-plane needs Go >= {go_needed} on PATH")
    found = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True,
                           check=True).stdout.strip()
    if _version_tuple(found) < _version_tuple(go_needed):
        sys.exit(f"build.py: error: --control-plane needs Go >= {go_needed}; found {found}")
    if output is None:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        output = cache / "kubetunnel" / "control-plane" / kubernetes / "controlplane"
    output.parent.mkdir(parents=True, exist_ok=True)
    major, minor = kubernetes.lstrip("v").split(".")[:2]
    stamps = {
        "gitVersion": kubernetes, "gitMajor": major, "gitMinor": minor,
        "gitTreeState": "clean", "buildDate": "2024-01-01T00:00:00Z",
    }
    ldflags = ["-s", "-w"] + [
        f"-X {package}.{name}={value}"
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for name, value in stamps.items()
    ]
    subprocess.run(
        [go, "build", "-trimpath", "-ldflags", " ".join(ldflags), "-o", str(output), "."],
        cwd=ROOT / "controlplane", check=True,
        env={**os.environ, "GOFLAGS": os.environ.get("GOFLAGS", "-mod=readonly")},
    )
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Not ./kubetunnel: that name is the package directory of the source tree.
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--python", default="/usr/bin/env python3")
    parser.add_argument("--control-plane", action="store_true",
                        help="build the real Kubernetes control plane for the sandbox instead")
    args = parser.parse_args()
    if args.control_plane:
        started = time.monotonic()
        try:
            binary = build_control_plane(args.output.resolve() if args.output else None)
        except subprocess.CalledProcessError as exc:
            sys.exit(f"build.py: error: go build failed (exit code {exc.returncode})")
        print(f"built {binary} ({binary.stat().st_size / 2**20:.0f} MiB) in "
              f"{time.monotonic() - started:.0f} s")
        return
    if args.output is None:
        args.output = ROOT / "dist" / "kubetunnel"
    try:
        import shiv  # noqa: F401
    except ImportError:
        sys.exit("build.py: error: shiv is not installed; run: pip install -e '.[build]'")
    path = build(args.output.resolve(), args.python)
    size = path.stat().st_size / 2**20
    print(f"built {path} (kubetunnel {_version()}, {size:.1f} MiB, sha256 {_digest(path)[:16]})")


if __name__ == "__main__":
    main()
