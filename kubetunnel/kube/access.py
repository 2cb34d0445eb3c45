"""How to reach the cluster: the official client's configuration, read the way kubectl reads it.

Only this package imports ``kubernetes``. We take the official client's *configuration*
(kubeconfig merging, contexts, exec credential plugins with refresh, in-cluster service account
with token rotation, client certificates, CA bundles, proxies, insecure-skip-tls-verify) and speak
HTTP ourselves with aiohttp, so every mode is asynchronous and nothing blocks the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetunnel.errors import KubetunnelError
from kubetunnel.kube.kubeconfig import check_kubeconfig

_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass
class KubeAccess:
    """One cluster identity: server URL, credentials and the default namespace."""

    configuration: Any  # kubernetes.client.Configuration
    namespace: str = "default"
    context: str | None = None
    in_cluster: bool = False
    _ssl: ssl.SSLContext | bool | None = field(default=None, repr=False)

    @classmethod
    def load(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        namespace: str | None = None,
    ) -> KubeAccess:
        """In-cluster first (unless a kubeconfig or context was asked for), then kubeconfig.

        Raises KubetunnelError with one line when neither gives a usable configuration.
        """
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        cfg = client.Configuration()
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            try:
                config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            except ConfigException:
                pass  # a process that only looks in-cluster (no token file): try kubeconfig
            else:
                ns = namespace or _read_sa_namespace() or "default"
                return cls(cfg, ns, None, in_cluster=True)
        check_kubeconfig(kubeconfig, context)
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=cfg,
                persist_config=False,
            )
            contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=kubeconfig
            )
        except (ConfigException, OSError, ValueError, TypeError) as exc:
            where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise KubetunnelError(f"cannot load kubeconfig {where}: {_one_line(exc)}") from exc
        chosen = active
        if context:
            chosen = next((c for c in contexts if c.get("name") == context), None)
        default_ns = ((chosen or {}).get("context") or {}).get("namespace") or "default"
        return cls(cfg, namespace or default_ns, (chosen or {}).get("name"))

    @property
    def server(self) -> str:
        return str(self.configuration.host).rstrip("/")

    @property
    def proxy(self) -> str | None:
        proxy = self.configuration.proxy
        return str(proxy) if proxy else None

    async def auth_headers(self) -> dict[str, str]:
        """Authorization headers, refreshed when the credential source says so.

        Exec plugins and token files are read by the official client's refresh hook, which
        may run a subprocess or read a file: off the event loop.
        """
        settings = await asyncio.to_thread(self.configuration.auth_settings)
        headers = {
            str(entry["key"]).title(): str(entry["value"])
            for entry in settings.values()
            if entry.get("in") == "header" and entry.get("value")
        }
        cfg = self.configuration
        if not headers and (cfg.username or cfg.password):
            raw = f"{cfg.username or ''}:{cfg.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        return headers

    async def ssl_context(self) -> ssl.SSLContext | bool:
        """TLS settings for aiohttp: False for plain HTTP, else a context (built once, off-loop)."""
        if self._ssl is None:
            self._ssl = await asyncio.to_thread(self._build_ssl)
        return self._ssl

    def _build_ssl(self) -> ssl.SSLContext | bool:
        cfg = self.configuration
        if not self.server.startswith("https://"):
            return False
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
        if not cfg.verify_ssl:  # insecure-skip-tls-verify: the user asked for it explicitly
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None)
        return ctx

    @property
    def tls_server_name(self) -> str | None:
        name = getattr(self.configuration, "tls_server_name", None)
        return str(name) if name else None


def _read_sa_namespace() -> str | None:
    try:
        return _SA_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
