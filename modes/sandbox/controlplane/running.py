"""``sandbox up --control-plane real``: Kubernetes' own control plane with the process node.

Start order: the pod network (a network namespace), certificates, etcd, kube-apiserver (ready
once /readyz says so), kube-controller-manager and kube-scheduler, then the node: the kubelet's
HTTPS API, the Node and its Lease, the gateway that lets pods reach the API server, and the
kubelet and kube-proxy loops. The sandbox is ready when the Node is Ready and the ``default``
ServiceAccount of ``default`` exists (pods cannot be created before it). Stop runs the same list
backwards, so nothing is left running, listening or mounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import pathlib
import secrets
import shutil
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from kubetunnel.errors import KubetunnelError
from kubetunnel.logging import get_logger
from modes.sandbox.controlplane import components, pki
from modes.sandbox.controlplane.binary import locate
from modes.sandbox.controlplane.gateway import Gateway
from modes.sandbox.controlplane.httpstore import HttpStore
from modes.sandbox.controlplane.kubeletapi import kubelet_app, server_context
from modes.sandbox.controlplane.netns import PodNamespace
from modes.sandbox.controlplane.nodeobject import NodeRegistration
from modes.sandbox.controlplane.routedstore import RoutedStore
from modes.sandbox.node import network
from modes.sandbox.node.agent import NodeAgent
from modes.sandbox.node.images import DEFAULT_KUBETUNNEL_IMAGES, ImagePolicy
from modes.sandbox.node.ipam import PodIPAllocator
from modes.sandbox.node.kubeconfigs import ApiAccess
from modes.sandbox.node.kubelet import TOKEN_SECONDS, KubeletConfig

log = get_logger(__name__)
# Private ranges that exist only inside the sandbox's network namespace (RFC 2544's
# benchmarking block, which no real network a laptop joins uses).
POD_CIDR = "198.18.0.0/16"
SERVICE_CIDR = "198.19.0.0/16"
NODE_NAME = "sandbox"
START_TIMEOUT = 120.0
PORT_ATTEMPTS = 3


@dataclasses.dataclass
class RealCluster:
    """A running real control plane and node; ``await stop()`` undoes everything."""

    url: str
    token: str
    ca_pem: bytes
    undo: list[Callable[[], Awaitable[None]]] = dataclasses.field(default_factory=list)

    async def stop(self) -> None:
        while self.undo:
            step = self.undo.pop()
            try:
                await step()
            except Exception:
                log.exception("controlplane.stop_failed")


def _client_context(ca: pathlib.Path, pair: pki.Pair | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if pair is not None:
        context.load_cert_chain(str(pair.cert), str(pair.key))
    return context


async def start_real(*, host: str, port: int,
                     kubetunnel_images: tuple[str, ...] = DEFAULT_KUBETUNNEL_IMAGES,
                     progress: Callable[[str], None] = lambda _: None) -> RealCluster:
    binary = locate()
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            return await _attempt(binary, host, port, kubetunnel_images, progress)
        except components.PortTaken as exc:
            if port or attempt == PORT_ATTEMPTS:
                raise KubetunnelError(f"{exc}: a port it was given is in use") from None
            progress(f"{exc}: a port was taken meanwhile, starting again with others")
    raise AssertionError("unreachable")


async def _attempt(binary: pathlib.Path, host: str, port: int,
                   kubetunnel_images: tuple[str, ...],
                   progress: Callable[[str], None]) -> RealCluster:
    state = pathlib.Path(await asyncio.to_thread(
        tempfile.mkdtemp, prefix="kubetunnel-controlplane-"))
    pod_net = ipaddress.ip_network(POD_CIDR)
    advertise = str(pod_net.broadcast_address - 1)
    first_service_ip = str(ipaddress.ip_network(SERVICE_CIDR).network_address + 1)
    secure_port = port or components.free_port(host)
    url = f"https://{host}:{secure_port}"
    token = secrets.token_urlsafe(32)
    cluster = RealCluster(url, token, b"")
    cluster.undo.append(lambda: asyncio.to_thread(shutil.rmtree, state, True))
    try:
        await _start(cluster, binary, state, host, secure_port, advertise, first_service_ip,
                     kubetunnel_images, progress)
    except BaseException:
        await cluster.stop()
        raise
    return cluster


async def _start(cluster: RealCluster, binary: pathlib.Path, state: pathlib.Path, host: str,
                 secure_port: int, advertise: str, first_service_ip: str,
                 kubetunnel_images: tuple[str, ...], progress: Callable[[str], None]) -> None:
    namespace = PodNamespace((POD_CIDR, SERVICE_CIDR))
    await namespace.create()
    cluster.undo.append(namespace.remove)

    (state / "pki").mkdir(mode=0o700)
    ca = pki.Authority(state / "pki")
    cluster.ca_pem = ca.ca_pem
    hosts = (host, "localhost", advertise, first_service_ip, "kubernetes", "kubernetes.default",
             "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
    token_file = state / "tokens.csv"
    token_file.write_text(f'{cluster.token},{pki.ADMIN[0]},{pki.ADMIN[0]},"system:masters"\n')
    token_file.chmod(0o600)
    layout = components.Layout(
        binary=binary, state=state, pki=state / "pki", ca=ca.ca_file,
        apiserver_serving=ca.serving("apiserver", "kube-apiserver", hosts),
        kubelet_client=ca.client("apiserver-kubelet-client", pki.APISERVER_KUBELET_CLIENT),
        service_account=ca.signing_keys("sa"),
        controller_manager=components.client_kubeconfig(
            state / "controller-manager.conf", cluster.url, ca.ca_file,
            ca.client("controller-manager", pki.CONTROLLER_MANAGER)),
        scheduler=components.client_kubeconfig(
            state / "scheduler.conf", cluster.url, ca.ca_file,
            ca.client("scheduler", pki.SCHEDULER)),
        token_file=token_file, bind_host=host, secure_port=secure_port,
        advertise_address=advertise, service_cidr=SERVICE_CIDR,
    )
    started: list[components.Component] = []

    async def launch(component: components.Component) -> None:
        await component.start()
        started.append(component)
        cluster.undo.append(component.stop)

    admin = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=_client_context(ca.ca_file)),
        headers={"Authorization": f"Bearer {cluster.token}"},
        timeout=aiohttp.ClientTimeout(total=5))
    cluster.undo.append(admin.close)

    async def ok(path: str) -> bool:
        try:
            async with admin.get(cluster.url + path) as response:
                return response.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    etcd, etcd_url = components.etcd(layout)
    await launch(etcd)
    progress("etcd started")
    await launch(components.apiserver(layout, etcd_url))
    await components.wait_for("kube-apiserver /readyz", lambda: ok("/readyz"), started,
                              START_TIMEOUT)
    progress("kube-apiserver ready")
    await launch(components.controller_manager(layout))
    await launch(components.scheduler(layout))

    # The node: its API first (the Node object names its port), then the Node, then pods.
    node_pair = ca.client("kubelet", pki.node_identity(NODE_NAME))
    proxy_pair = ca.client("kube-proxy", pki.KUBE_PROXY)
    kubelet_store = HttpStore(cluster.url, _client_context(ca.ca_file, node_pair), NODE_NAME)
    cluster.undo.append(kubelet_store.close)
    proxy_store = HttpStore(cluster.url, _client_context(ca.ca_file, proxy_pair), NODE_NAME)
    cluster.undo.append(proxy_store.close)
    store = RoutedStore(kubelet_store, proxy_store)

    pod_network = network.NamespaceNetwork(namespace.path, host_ip=host)
    network.use(pod_network)

    async def forget_network() -> None:
        network.use(network.LoopbackNetwork())
        pod_network.close()

    cluster.undo.append(forget_network)

    async def bound_token(pod: dict[str, Any], account: str) -> str:
        meta = pod["metadata"]
        answer = await kubelet_store.request(
            "POST", f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                  "spec": {"expirationSeconds": TOKEN_SECONDS, "boundObjectRef": {
                      "apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                      "uid": meta["uid"]}}})
        return str(((answer or {}).get("status") or {}).get("token", ""))

    config = KubeletConfig(
        state_dir=state / "node", node_name=NODE_NAME,
        api=ApiAccess(f"https://{first_service_ip}:443", lambda ns, sa: "", ca.ca_pem,
                      bound_token=bound_token),
        ipam=PodIPAllocator(POD_CIDR), images=ImagePolicy(kubetunnel_images))
    (state / "node").mkdir()
    agent = NodeAgent(config)

    serving = ca.serving("kubelet", "kubelet", (host, "localhost", NODE_NAME))
    runner = web.AppRunner(kubelet_app(store, agent), access_log=None, handle_signals=False,
                           shutdown_timeout=1.0)
    await runner.setup()
    cluster.undo.append(runner.cleanup)
    site = web.TCPSite(runner, host, 0, ssl_context=server_context(
        str(ca.ca_file), str(serving.cert), str(serving.key)))
    await site.start()
    kubelet_port = int(runner.addresses[0][1])

    registration = NodeRegistration(kubelet_store, NODE_NAME, host, kubelet_port)
    await registration.register()
    heartbeat = asyncio.create_task(registration.run(), name="node-heartbeat")

    async def stop_heartbeat() -> None:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat

    cluster.undo.append(stop_heartbeat)

    gateway = Gateway(pod_network, (advertise, secure_port), (host, secure_port))
    await gateway.start()
    cluster.undo.append(gateway.stop)

    await agent.start(store)
    cluster.undo.append(agent.stop)
    progress("node registered")
    await components.wait_for(
        "the default ServiceAccount",
        lambda: ok("/api/v1/namespaces/default/serviceaccounts/default"), started, START_TIMEOUT)
