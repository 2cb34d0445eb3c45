"""Running the sandbox as a process: bind, write the kubeconfig, announce, stop on a signal."""

from __future__ import annotations

import asyncio
import base64
import os
import pathlib
import signal
import sys
from typing import Any

import yaml
from aiohttp import web

from kubetunnel.errors import KubetunnelError
from kubetunnel.logging import get_logger
from modes.sandbox import certificates
from modes.sandbox.server import Sandbox

log = get_logger("kubetunnel.sandbox")


def kubeconfig_text(server: str, token: str, ca_pem: bytes) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kubetunnel-sandbox",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": "kubetunnel-sandbox", "user": {"token": token}}],
        "contexts": [
            {
                "name": "kubetunnel-sandbox",
                "context": {
                    "cluster": "kubetunnel-sandbox",
                    "user": "kubetunnel-sandbox",
                    "namespace": "default",
                },
            }
        ],
        "current-context": "kubetunnel-sandbox",
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


def write_kubeconfig(path: pathlib.Path, text: str) -> None:
    """Written atomically and readable only by the user: it holds the admin token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    tmp.replace(path)


async def serve(
    *, kubeconfig: pathlib.Path, host: str, port: int, history: int,
    kubetunnel_images: tuple[str, ...] = (),
    node: bool = True,
    service_cidr: str | None = None,
    pod_cidr: str | None = None,
    faults: pathlib.Path | None = None,
) -> None:
    from modes.sandbox.node.proxy import privileged_ports_note
    from modes.sandbox.node.wiring import start_node

    sandbox = Sandbox(history=history, service_cidr=service_cidr)
    if faults is not None:
        from modes.sandbox.faults import FaultInjector

        sandbox.faults = FaultInjector(faults)
    runner = web.AppRunner(
        sandbox.app(), access_log=None, handle_signals=False, shutdown_timeout=2.0
    )
    await runner.setup()
    credentials = certificates.issue(host)
    site = web.TCPSite(runner, host, port, ssl_context=credentials.server_context())
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise KubetunnelError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = runner.addresses[0]
    url = f"https://{bound[0]}:{bound[1]}"
    sandbox.address = f"{bound[0]}:{bound[1]}"
    # The node (kubelet, kube-proxy, controllers) runs pods as processes of this sandbox.
    running_node = None
    if node:
        options: dict[str, Any] = {}
        if kubetunnel_images:
            options["kubetunnel_images"] = kubetunnel_images
        if pod_cidr:
            options["pod_cidr"] = pod_cidr
        running_node = await start_node(sandbox, server=url, ca_pem=credentials.ca_pem,
                                        **options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await asyncio.to_thread(
                write_kubeconfig,
                kubeconfig,
                kubeconfig_text(url, sandbox.token, credentials.ca_pem),
            )
        except OSError as exc:
            raise KubetunnelError(
                f"cannot write kubeconfig {kubeconfig}: {exc.strerror or exc}"
            ) from None
        if running_node is not None and (note := privileged_ports_note()):
            print(note, file=sys.stderr, flush=True)
        log.info("sandbox.serving", server=url, kubeconfig=str(kubeconfig))
        print(f"sandbox ready: server={url} kubeconfig={kubeconfig}", flush=True)
        await stop.wait()
        log.info("sandbox.stopping")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        # Pods and port-forward sessions first, so no process outlives the sandbox.
        if running_node is not None:
            await running_node.stop()
        await runner.cleanup()
    sys.stdout.flush()
