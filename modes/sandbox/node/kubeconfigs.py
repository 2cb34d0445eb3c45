"""API access from inside a pod: a kubeconfig per pod, for its ServiceAccount.

In a cluster a pod finds the API through KUBERNETES_SERVICE_HOST/PORT and a token at a fixed
path. Every sandbox pod shares one filesystem, so a fixed path cannot hold a different token
per pod; a per-pod kubeconfig in ``KUBECONFIG`` can. The product loads in-cluster config first
(which fails here for want of the token file) and then kubeconfig, so it needs no special case.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml


@dataclasses.dataclass(frozen=True)
class ApiAccess:
    """Where the API server listens and which bearer token a ServiceAccount gets."""

    server: str  # e.g. https://127.0.0.1:6443
    token_for: Callable[[str, str], str]  # (namespace, serviceaccount) -> token
    ca_pem: bytes | None = None  # the CA that signed the server's certificate, if https
    # A real API server: (pod, serviceaccount) -> a token bound to that pod (TokenRequest),
    # as a kubelet gets one; token_for is then not used.
    bound_token: Callable[[dict[str, Any], str], Awaitable[str]] | None = None

    @property
    def host(self) -> str:
        return urlsplit(self.server).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.server)
        return parts.port or (443 if parts.scheme == "https" else 80)


def kubeconfig(api: ApiAccess, namespace: str, account: str,
               token: str | None = None) -> dict[str, object]:
    user = f"system:serviceaccount:{namespace}:{account}"
    cluster: dict[str, str] = {"server": api.server}
    if api.ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(api.ca_pem).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token or api.token_for(namespace, account)}}],
        "contexts": [
            {
                "name": "sandbox",
                "context": {"cluster": "sandbox", "user": user, "namespace": namespace},
            }
        ],
        "current-context": "sandbox",
    }


async def write_kubeconfig(path: Path, api: ApiAccess, namespace: str, account: str,
                           token: str | None = None) -> Path:
    text = yaml.safe_dump(kubeconfig(api, namespace, account, token), sort_keys=False)

    def write() -> None:
        # Owner-only: it holds a token.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)

    await asyncio.to_thread(write)
    return path
