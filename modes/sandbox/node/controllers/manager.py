"""All controllers as one unit with ``start(store)`` / ``stop()``, as the sandbox runs them."""

from __future__ import annotations

import asyncio
import contextlib

from kubetunnel.logging import get_logger
from modes.sandbox.node.controllers.deployments import DeploymentController
from modes.sandbox.node.controllers.endpoints import EndpointsController
from modes.sandbox.node.controllers.replicasets import ReplicaSetController
from modes.sandbox.node.controllers.serviceaccounts import ServiceAccountController
from modes.sandbox.node.store import ControllerStore

log = get_logger(__name__)


class ControllerManager:
    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, store: ControllerStore) -> None:
        controllers = {
            "deployment": DeploymentController(store).run,
            "replicaset": ReplicaSetController(store).run,
            "endpoints": EndpointsController(store).run,
            "serviceaccount": ServiceAccountController(store).run,
        }
        self._tasks = [asyncio.create_task(run(), name=f"controller-{name}")
                       for name, run in controllers.items()]
        log.info("controllers.started", controllers=sorted(controllers))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
