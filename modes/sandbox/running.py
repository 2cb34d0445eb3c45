"""Running the sandbox as a process: bind, write the kubeconfig, announce, stop on a signal."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import pathlib
import signal
import sys
from typing import Any

import yaml
from aiohttp import web

from kubetunnel.errors import KubetunnelError
from kubetunnel.logging import get_logger
from modes.sandbox import certificates
from modes.sandbox.claims import KubeconfigClaim
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


async def serve(
    *, kubeconfig: KubeconfigClaim, host: str, port: int, history: int,
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
                kubeconfig.write, kubeconfig_text(url, sandbox.token, credentials.ca_pem)
            )
        except OSError as exc:
            raise KubetunnelError(
                f"cannot write kubeconfig {kubeconfig.path}: {exc.strerror or exc}"
            ) from None
        if running_node is not None and (note := privileged_ports_note()):
            print(note, file=sys.stderr, flush=True)
        log.info("sandbox.serving", server=url, kubeconfig=str(kubeconfig.path),
                 service_cidr=sandbox.store.alloc.cidr.with_prefixlen,
                 pod_cidr=pod_cidr if node else None)
        print(f"sandbox ready: server={url} kubeconfig={kubeconfig.path}", flush=True)
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


async def serve_real(*, kubeconfig: KubeconfigClaim, host: str, port: int,
                     kubetunnel_images: tuple[str, ...] = ()) -> None:
    """The real control plane (modes.sandbox.controlplane) with this process as its node."""
    from modes.sandbox.controlplane.running import start_real

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def progress(step: str) -> None:
        print(f"sandbox: {step}", file=sys.stderr, flush=True)

    options: dict[str, Any] = {"kubetunnel_images": kubetunnel_images} if kubetunnel_images else {}
    cluster = None
    try:
        starting = asyncio.ensure_future(start_real(host=host, port=port, progress=progress,
                                                    **options))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # a signal during start-up: undo what was started
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return
        stopping.cancel()
        cluster = starting.result()
        try:
            await asyncio.to_thread(kubeconfig.write,
                                    kubeconfig_text(cluster.url, cluster.token, cluster.ca_pem))
        except OSError as exc:
            raise KubetunnelError(
                f"cannot write kubeconfig {kubeconfig.path}: {exc.strerror or exc}") from None
        log.info("sandbox.serving", server=cluster.url, kubeconfig=str(kubeconfig.path),
                 control_plane="real")
        print(f"sandbox ready: server={cluster.url} kubeconfig={kubeconfig.path}", flush=True)
        await stop.wait()
        log.info("sandbox.stopping")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if cluster is not None:
            await cluster.stop()
    sys.stdout.flush()
