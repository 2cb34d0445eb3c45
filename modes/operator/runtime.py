"""The running operator: API server always, reconciling only while leader.

While leading, every source of "look at this record again" feeds one engine: the store's watch
(record changes), a watch of the agent pods (readiness), agent reports (the API), timers the
reconcile asks for (lease expiry, grace periods) and a periodic resync that also re-checks every
Service carrying our annotation. On taking the lead, the state is rebuilt from the cluster
before anything acts: nothing depends on what a previous leader or process had in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from typing import Any

from aiohttp import web

from kubetunnel.errors import KubetunnelError
from kubetunnel.kube import KubeClient
from kubetunnel.logging import get_logger
from kubetunnel.plugins import Store
from kubetunnel.stores.kubernetes import Backoff, follow
from modes.operator import selectors
from modes.operator.api import Api, start_site
from modes.operator.engine import Engine
from modes.operator.events import Recorder
from modes.operator.leader import LeaderElector
from modes.operator.metrics import Metrics
from modes.operator.objects import APP_LABEL, APP_VALUE, TUNNEL_LABEL
from modes.operator.policies import PolicyManager
from modes.operator.reconciler import Reconciler
from modes.operator.settings import OperatorSettings
from modes.operator.state import Key, State, record_key

log = get_logger(__name__)


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Operator:
    def __init__(self, settings: OperatorSettings, client: KubeClient, store: Store) -> None:
        self.settings, self.client, self.store = settings, client, store
        self.identity = settings.identity or default_identity()
        self.state = State()
        self.metrics = Metrics(self.state.all_records)
        self.recorder = Recorder(client, store, self.identity)
        self.reconciler = Reconciler(client, store, settings, self.state, self.recorder,
                                     self.metrics)
        self.engine: Engine[Key] = Engine(
            self.reconciler, workers=settings.workers, backoff_cap=settings.backoff_cap,
            on_error=lambda key, exc: self.metrics.reconcile_errors.inc(),
            on_done=lambda key, seconds: self.metrics.reconcile_seconds.observe(seconds),
        )
        self.reconciler.sharing.enqueue = self.engine.enqueue
        self.elector = (
            LeaderElector(client, settings.namespace, settings.leader_lease, self.identity,
                          settings.leader_lease_seconds)
            if settings.leader_election else None
        )
        self.policies = (
            PolicyManager(client, settings.namespace, self.state.all_records, settings.resync)
            if settings.manage_network_policies else None
        )
        self.synced = asyncio.Event()
        self._leading_without_election = False
        self._runners: list[web.AppRunner] = []
        self._task: asyncio.Task[None] | None = None
        self.api_port = 0
        self.health_port = 0

    @property
    def leading(self) -> bool:
        if self.elector is not None:
            return self.elector.leading
        return self._leading_without_election

    async def start(self, host: str, api_port: int, health_port: int) -> None:
        api = Api(self)
        runner, self.api_port = await start_site(api.application(), host, api_port)
        self._runners.append(runner)
        health = web.Application()
        api.add_health(health)
        runner, self.health_port = await start_site(health, host, health_port)
        self._runners.append(runner)
        log.info("operator.serving", host=host, api_port=self.api_port,
                 health_port=self.health_port, identity=self.identity)
        self._task = asyncio.create_task(self._run(), name="kubetunnel:operator")

    async def wait(self) -> None:
        """Until the operator stops by itself (only on an unexpected error)."""
        assert self._task is not None
        await self._task

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    async def _run(self) -> None:
        if self.elector is not None:
            await self.elector.lead(self._act)
            return
        self._leading_without_election = True
        try:
            await self._act()
        finally:
            self._leading_without_election = False

    # -- while leading -------------------------------------------------------------------------
    def _namespaces(self) -> list[str | None]:
        return list(self.settings.watch_namespaces or [None])

    async def _act(self) -> None:
        self.synced.clear()
        self.state.pods.clear()  # the pod watch re-lists; a previous term's pods may be gone
        pods_synced = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._follow_pods(pods_synced), name="kubetunnel:pods")
                await self._initial_records()
                await pods_synced.wait()
                group.create_task(self.engine.run(), name="kubetunnel:engine")
                for namespace in self._namespaces():
                    group.create_task(self._follow_records(namespace), name="kubetunnel:records")
                await self._first_resync()
                group.create_task(self._resync_forever(), name="kubetunnel:resync")
                if self.policies is not None:
                    group.create_task(self.policies.run(), name="kubetunnel:policies")
                self.synced.set()
                log.info("operator.synced", records=len(self.state.records))
        finally:
            self.synced.clear()

    async def _initial_records(self) -> None:
        backoff = Backoff()
        while True:
            try:
                for namespace in self._namespaces():
                    for record in await self.store.list(namespace):
                        self.state.put_record(record)
                return
            except KubetunnelError as exc:
                log.warning("operator.list_failed", error=str(exc))
                await backoff.sleep()

    async def _follow_records(self, namespace: str | None) -> None:
        backoff = Backoff()
        while True:
            try:
                async for event in self.store.watch(namespace):
                    backoff.reset()
                    record = event.record
                    key = record_key(record)
                    if event.type == "DELETED":
                        self.state.drop_record(key)
                    else:
                        self.state.put_record(record)
                    self.engine.enqueue(key)
                    if record.shared:  # the shared agent follows its intercepts
                        self.engine.enqueue((record.namespace, record.agent_tunnel))
                    if self.policies is not None:
                        self.policies.notify()
                    if event.type == "DELETED" or record.deleting:
                        # The Service may now be free for a record that was refused.
                        for other in self.state.same_service(record):
                            self.engine.enqueue(record_key(other))
            except KubetunnelError as exc:
                log.warning("operator.records_watch_failed", error=str(exc))
            await backoff.sleep()

    async def _follow_pods(self, synced: asyncio.Event) -> None:
        namespaces = self.settings.watch_namespaces
        paths = ([f"/api/v1/namespaces/{ns}/pods" for ns in namespaces] if namespaces
                 else ["/api/v1/pods"])
        listed: set[str] = set()

        async def one(path: str) -> None:
            def relisted() -> None:
                listed.add(path)
                if len(listed) == len(paths):
                    synced.set()

            async for kind, pod in follow(self.client, path, on_relist=relisted,
                                          label_selector=f"{APP_LABEL}={APP_VALUE}"):
                if kind == "DELETED":
                    self.state.drop_pod(pod)
                else:
                    self.state.put_pod(pod)
                meta: dict[str, Any] = pod.get("metadata") or {}
                tunnel = (meta.get("labels") or {}).get(TUNNEL_LABEL)
                if tunnel and synced.is_set():
                    self.engine.enqueue((meta.get("namespace", ""), tunnel))

        async with asyncio.TaskGroup() as group:
            for path in paths:
                group.create_task(one(path), name="kubetunnel:pods-watch")

    async def _resync(self) -> None:
        """Look at every record, and at every Service that says it is tunneled."""
        for key in list(self.state.records):
            self.engine.enqueue(key)
        for service in await selectors.annotated(self.client, self.settings.watch_namespaces):
            if service.tunnel:
                # A key without a record is reconciled as "gone": its Services are restored.
                self.engine.enqueue((service.namespace, service.tunnel))

    async def _first_resync(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self._resync()
                return
            except KubetunnelError as exc:
                log.warning("operator.resync_failed", error=str(exc))
                await backoff.sleep()

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync)
            try:
                for namespace in self._namespaces():
                    for record in await self.store.list(namespace):
                        self.state.put_record(record)
                await self._resync()
            except KubetunnelError as exc:
                log.warning("operator.resync_failed", error=str(exc))
