"""Switching the node on inside the sandbox API server: one call at start, one at stop.

``start_node`` starts the controllers and the node (kubelet and proxy) on the in-process
store, mints a bearer token per ServiceAccount (registered with the server, so a pod's
kubeconfig is accepted), and registers the ``log`` and ``portforward`` pod subresources with
the server's routing.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from modes.sandbox.node.adapter import SandboxStore
from modes.sandbox.node.agent import NodeAgent
from modes.sandbox.node.controllers.manager import ControllerManager
from modes.sandbox.node.images import DEFAULT_KUBETUNNEL_IMAGES, ImagePolicy
from modes.sandbox.node.ipam import POD_CIDR, PodIPAllocator
from modes.sandbox.node.kubeconfigs import ApiAccess
from modes.sandbox.node.kubelet import KubeletConfig
from modes.sandbox.node.routes import subresource_handlers

if TYPE_CHECKING:
    from modes.sandbox.server import Sandbox


class ServiceAccountTokens:
    """One token per ServiceAccount, accepted by the server as that account's identity."""

    def __init__(self, accepted: dict[str, str]) -> None:
        self.accepted = accepted  # the server's token -> user table
        self._minted: dict[tuple[str, str], str] = {}

    def __call__(self, namespace: str, account: str) -> str:
        key = (namespace, account)
        if key not in self._minted:
            token = secrets.token_urlsafe(32)
            self._minted[key] = token
            self.accepted[token] = f"system:serviceaccount:{namespace}:{account}"
        return self._minted[key]


class SandboxNode:
    """The controllers and the node of a running sandbox; ``stop()`` leaves no pod process."""

    def __init__(self, agent: NodeAgent, controllers: ControllerManager,
                 scratch: Path | None = None) -> None:
        self.agent = agent
        self.controllers = controllers
        self.scratch = scratch  # a state directory this node created, removed on stop

    async def stop(self) -> None:
        await self.controllers.stop()
        await self.agent.stop()
        if self.scratch is not None:
            await asyncio.to_thread(shutil.rmtree, self.scratch, True)


async def start_node(sandbox: Sandbox, *, server: str, state_dir: Path | None = None,
                     ca_pem: bytes | None = None,
                     kubetunnel_images: tuple[str, ...] = DEFAULT_KUBETUNNEL_IMAGES,
                     pod_cidr: str = str(POD_CIDR)) -> SandboxNode:
    """Start controllers, kubelet and proxy on ``sandbox``'s store; ``node.stop()`` at exit."""
    scratch = None
    if state_dir is None:  # pods' working directories and kubeconfigs
        state_dir = scratch = Path(await asyncio.to_thread(
            tempfile.mkdtemp, prefix="kubetunnel-sandbox-"))
    store = SandboxStore(sandbox.store)
    api = ApiAccess(server, ServiceAccountTokens(sandbox.tokens), ca_pem)
    config = KubeletConfig(state_dir=state_dir, api=api, ipam=PodIPAllocator(pod_cidr),
                           images=ImagePolicy(kubetunnel_images))
    agent = NodeAgent(config)
    sandbox.endpoints.subresources.update(subresource_handlers(store, agent))
    controllers = ControllerManager()
    await controllers.start(store)
    await agent.start(store)
    return SandboxNode(agent, controllers, scratch)
