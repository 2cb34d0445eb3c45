"""Leader election through a coordination.k8s.io/v1 Lease, so two operator replicas are safe.

The rules are client-go's: the Lease is taken or renewed only by an update carrying the
resourceVersion just read (two candidates can never both win); a Lease is expired when its
holder has not renewed for ``leaseDurationSeconds`` *as observed on our own clock* (comparing
the holder's timestamps with our clock would trust two clocks to agree); a leader that cannot
renew within two thirds of the duration stops acting before anyone else may start; and a
leader that shuts down releases the Lease so its successor need not wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

from kubetunnel.errors import KubetunnelError
from kubetunnel.kube import ApiError, KubeClient, resource_path
from kubetunnel.logging import get_logger
from kubetunnel.records import format_micro_time, now

log = get_logger(__name__)


class LeaderElector:
    def __init__(self, client: KubeClient, namespace: str, name: str, identity: str,
                 duration: float = 15.0) -> None:
        self.client, self.namespace, self.name, self.identity = client, namespace, name, identity
        self.duration = duration
        # A standby looks this often: a released Lease (a SIGTERMed leader) is taken within it.
        # client-go's 2 s is tuned for thousands of controllers; one GET a second is nothing.
        self.retry = min(max(duration / 5, 0.2), 1.0)
        self.leading = False
        self._observed: tuple[str, str] | None = None
        self._observed_at = 0.0

    @property
    def path(self) -> str:
        return resource_path("coordination.k8s.io/v1", "leases", self.namespace, self.name)

    async def lead(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work`` whenever we hold the Lease; cancel it as soon as we may not. Forever."""
        while True:
            await self._acquire()
            self.leading = True
            log.info("leader.elected", identity=self.identity, lease=self.name)
            task = asyncio.create_task(work(), name="kubetunnel:leading")
            try:
                await self._keep(task)
            finally:
                self.leading = False
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    await self._release()
            log.warning("leader.lost", identity=self.identity, lease=self.name)

    async def _acquire(self) -> None:
        # Polling is the protocol: a Lease has no "released" notification to wait for.
        while True:
            if await self._try():
                return
            await asyncio.sleep(self.retry)

    async def _keep(self, task: asyncio.Task[None]) -> None:
        deadline = time.monotonic() + self.duration * 2 / 3
        pause = self.duration / 3
        while not task.done():
            await asyncio.wait({task}, timeout=pause)
            if task.done():
                task.result()  # a crashed leader's error surfaces (the operator exits)
                return
            if await self._try():
                deadline = time.monotonic() + self.duration * 2 / 3
                pause = self.duration / 3
            elif time.monotonic() > deadline:
                return
            else:
                pause = self.retry  # a failed renewal is retried sooner, until the deadline

    async def _try(self) -> bool:
        try:
            return await self._acquire_or_renew()
        except KubetunnelError as exc:
            log.warning("leader.renew_failed", identity=self.identity, error=str(exc))
            return False

    async def _acquire_or_renew(self) -> bool:
        lease: dict[str, Any] | None = await self.client.get_or_none(self.path)
        if lease is None:
            return await self._create()
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        observed = (holder, str(spec.get("renewTime")))
        if observed != self._observed:
            self._observed, self._observed_at = observed, time.monotonic()
        duration = float(spec.get("leaseDurationSeconds") or self.duration)
        expired = time.monotonic() - self._observed_at > duration
        if holder and holder != self.identity and not expired:
            return False
        stamp = format_micro_time(now())
        if holder != self.identity:
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(holderIdentity=self.identity, renewTime=stamp,
                    leaseDurationSeconds=int(self.duration))
        lease["spec"] = spec
        try:
            await self.client.replace(self.path, lease)
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def _create(self) -> bool:
        stamp = format_micro_time(now())
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.duration),
                     "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0},
        }
        try:
            await self.client.create(
                resource_path("coordination.k8s.io/v1", "leases", self.namespace), lease)
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def _release(self) -> None:
        """Hand the Lease back at shutdown: the next replica takes over at once."""
        with contextlib.suppress(KubetunnelError):
            lease: dict[str, Any] = await self.client.get(self.path)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            spec.pop("holderIdentity", None)
            spec.update(leaseDurationSeconds=1, renewTime=format_micro_time(now()))
            await self.client.replace(self.path, lease)
            log.info("leader.released", identity=self.identity, lease=self.name)
