"""Finding the control-plane binary that ``python3 build.py --control-plane`` builds.

It is Kubernetes' own kube-apiserver, kube-controller-manager and kube-scheduler (and etcd and
kubectl) as one multi-call Go binary, built from the published modules by ``controlplane/`` in
the source tree, into a cache directory per Kubernetes version, outside the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubetunnel.errors import KubetunnelError

# Kept equal to the k8s.io/kubernetes requirement in controlplane/go.mod (a test checks).
KUBERNETES_VERSION = "v1.37.2"
ENV = "KUBETUNNEL_CONTROL_PLANE"


def cache_dir(version: str = KUBERNETES_VERSION) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubetunnel" / "control-plane" / version


def default_path() -> Path:
    return cache_dir() / "controlplane"


def locate() -> Path:
    """The binary: $KUBETUNNEL_CONTROL_PLANE, else the build cache; a one-line error if none."""
    configured = os.environ.get(ENV)
    path = Path(configured) if configured else default_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        where = f"${ENV} ({path})" if configured else str(path)
        raise KubetunnelError(
            f"no control-plane binary at {where}: build it with 'python3 build.py "
            "--control-plane' (needs Go, see README), or use --control-plane builtin")
    return path
