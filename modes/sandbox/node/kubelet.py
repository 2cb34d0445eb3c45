"""The process kubelet: turns Pod objects into supervised local processes and reports status.

The :class:`Kubelet` keeps one :class:`PodWorker` per pod uid. A worker owns the pod's address,
its containers and a single status writer, so that status writes are coalesced and ordered.
Deleting a pod (or stopping the sandbox) terminates its processes with the pod's grace period;
for a graceful API deletion the kubelet then removes the object, as the real one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubetunnel.logging import get_logger
from modes.sandbox.node import network, podstatus
from modes.sandbox.node.containers import ContainerWorker, Timing
from modes.sandbox.node.environment import EnvResolver, base_env, python_path
from modes.sandbox.node.images import ImagePolicy
from modes.sandbox.node.ipam import PodIPAllocator
from modes.sandbox.node.kubeconfigs import ApiAccess, write_kubeconfig
from modes.sandbox.node.logbuffer import ContainerLog
from modes.sandbox.node.runtime import rfc3339
from modes.sandbox.node.store import CONFIGMAPS, PODS, SECRETS, SERVICEACCOUNTS, NodeStore

Obj = dict[str, Any]
log = get_logger(__name__)
# What a kubelet asks for a projected ServiceAccount token (kube-apiserver may extend it).
TOKEN_SECONDS = 3607
STATUS_RETRY_SECONDS = 0.5
START_RETRY_SECONDS = 0.5


@dataclasses.dataclass
class KubeletConfig:
    state_dir: Path
    node_name: str = "sandbox"
    images: ImagePolicy = dataclasses.field(default_factory=ImagePolicy)
    ipam: PodIPAllocator = dataclasses.field(default_factory=PodIPAllocator)
    api: ApiAccess | None = None
    timing: Timing = dataclasses.field(default_factory=Timing)
    # On sandbox shutdown no pod gets longer than this, so that `sandbox up` stops promptly.
    shutdown_grace: float = 5.0


def _grace_of(pod: Obj) -> float:
    meta_grace = pod["metadata"].get("deletionGracePeriodSeconds")
    if meta_grace is not None:
        return float(meta_grace)
    return float(pod.get("spec", {}).get("terminationGracePeriodSeconds", 30))


class PodWorker:
    def __init__(self, pod: Obj, store: NodeStore, config: KubeletConfig) -> None:
        self.pod = pod
        self.store = store
        self.config = config
        meta = pod["metadata"]
        self.uid = str(meta.get("uid") or f"{meta.get('namespace')}/{meta['name']}")
        self.namespace = str(meta.get("namespace") or "default")
        self.name = str(meta["name"])
        self.pod_ip = ""
        self.started_at = rfc3339()
        self.workers: dict[str, ContainerWorker] = {}
        self.init_workers: list[ContainerWorker] = []
        self._since: dict[str, tuple[bool, str]] = {}
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._terminating = False
        self._gone = False

    async def start(self) -> None:
        spec = self.pod.get("spec", {})
        wanted = (self.pod.get("status") or {}).get("podIP")
        host_ip = network.active().host_ip
        self.pod_ip = (
            host_ip if spec.get("hostNetwork") else self.config.ipam.allocate(self.uid, wanted)
        )
        self.pod.setdefault("status", {}).update(podIP=self.pod_ip, hostIP=host_ip)
        workdir = self.config.state_dir / "pods" / self.uid
        kubeconfig = await self._kubeconfig(workdir)
        resolver = EnvResolver(
            self._getter(SECRETS), self._getter(CONFIGMAPS), self.config.node_name
        )

        async def env_for(container: Obj) -> dict[str, str]:
            image = base_env(python_path() if self.config.images.launch(container).python else None)
            image["HOSTNAME"] = spec.get("hostname") or self.name
            image["KUBETUNNEL_BIND_ADDRESS"] = self.pod_ip
            if self.config.api is not None:
                image["KUBERNETES_SERVICE_HOST"] = self.config.api.host
                image["KUBERNETES_SERVICE_PORT"] = str(self.config.api.port)
            if kubeconfig is not None:
                image["KUBECONFIG"] = str(kubeconfig)
            return {**image, **await resolver.container_env(self.pod, container)}

        def make(container: Obj, init: bool) -> ContainerWorker:
            return ContainerWorker(
                self.pod,
                container,
                init=init,
                pod_ip=self.pod_ip,
                images=self.config.images,
                env_for=env_for,
                cwd=str(workdir),
                grace=lambda: _grace_of(self.pod),
                timing=self.config.timing,
                on_change=self._dirty.set,
            )

        self.init_workers = [make(c, True) for c in spec.get("initContainers") or []]
        self.workers = {c["name"]: make(c, False) for c in spec.get("containers") or []}
        self._tasks.append(asyncio.create_task(self._write_status(), name=f"status-{self.uid}"))
        self._tasks.append(asyncio.create_task(self._run(), name=f"pod-{self.uid}"))
        self._dirty.set()
        log.info("pod.started", namespace=self.namespace, pod=self.name, ip=self.pod_ip)

    async def _kubeconfig(self, workdir: Path) -> Path | None:
        await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
        spec = self.pod.get("spec", {})
        account = spec.get("serviceAccountName") or "default"
        if self.config.api is None:
            return None
        if self.config.api.bound_token is not None:
            # A real API server's ServiceAccount admission has already decided: the pod has a
            # projected token volume exactly when a token is to be mounted (a kubelet never
            # reads the ServiceAccount, and the Node authorizer would not let it).
            mount: bool | None = any(
                "serviceAccountToken" in source
                for volume in spec.get("volumes") or []
                for source in (volume.get("projected") or {}).get("sources") or []
            )
        else:
            mount = spec.get("automountServiceAccountToken")
            if mount is None:
                sa = await self.store.get(SERVICEACCOUNTS, self.namespace, account)
                mount = (sa or {}).get("automountServiceAccountToken")
        if mount is False:
            return None
        api, path = self.config.api, workdir / "kubeconfig"
        if api.bound_token is None:
            return await write_kubeconfig(path, api, self.namespace, account)
        bound = api.bound_token

        async def refresh() -> None:
            # As the kubelet's token manager: a new token once 80% of its lifetime has passed.
            while True:
                await asyncio.sleep(0.8 * TOKEN_SECONDS)
                try:
                    token = await bound(self.pod, account)
                except Exception as exc:  # the old token is still good for a while
                    log.warning("pod.token_refresh_failed", namespace=self.namespace,
                                pod=self.name, error=str(exc))
                    continue
                await write_kubeconfig(path, api, self.namespace, account, token)

        written = await write_kubeconfig(
            path, api, self.namespace, account, await bound(self.pod, account))
        self._tasks.append(asyncio.create_task(refresh(), name=f"token-{self.uid}"))
        return written

    def _getter(self, key: tuple[str, str]) -> Callable[[str, str], Any]:
        async def get(namespace: str, name: str) -> Obj | None:
            return await self.store.get(key, namespace, name)

        return get

    async def _run(self) -> None:
        for worker in self.init_workers:
            await worker.run()
            if not worker.succeeded:
                return  # the pod failed (restartPolicy Never) or is being deleted
            self._dirty.set()
        await asyncio.gather(*(w.run() for w in self.workers.values()))

    def status(self) -> Obj:
        init = [w.status() for w in self.init_workers]
        containers = [w.status() for w in self.workers.values()]
        init_done = all(w.succeeded for w in self.init_workers)
        init_failed = any(w.finished.is_set() and not w.succeeded for w in self.init_workers)
        policy = self.pod.get("spec", {}).get("restartPolicy", "Always")
        status: Obj = {
            "phase": podstatus.phase(init, containers, policy, init_done, init_failed),
            "conditions": podstatus.conditions(init_done, containers, self._since, rfc3339()),
            "hostIP": network.active().host_ip,
            "hostIPs": [{"ip": network.active().host_ip}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.started_at,
            # The API server computes the class at creation and refuses to see it changed.
            "qosClass": (self.pod.get("status") or {}).get("qosClass") or "BestEffort",
            "containerStatuses": containers,
        }
        if init:
            status["initContainerStatuses"] = init
        return status

    async def _write_status(self) -> None:
        written: Obj | None = None
        while not self._gone:
            await self._dirty.wait()
            self._dirty.clear()
            status = self.status()
            if status == written:
                continue
            try:
                result = await self.store.update_status(PODS, self.namespace, self.name, status)
            except Exception as exc:  # a refused or failed write: log it, try again soon
                log.warning("pod.status_failed", namespace=self.namespace, pod=self.name,
                            error=str(exc))
                await asyncio.sleep(STATUS_RETRY_SECONDS)
                self._dirty.set()
                continue
            if result is None:
                return
            written = status

    def update(self, pod: Obj) -> None:
        """A newer version of the pod object (labels, deletionTimestamp, ...)."""
        pod.setdefault("status", {}).update(podIP=self.pod_ip, hostIP=network.active().host_ip)
        self.pod.clear()
        self.pod.update(pod)  # the container workers hold the same dict

    async def terminate(self, grace: float, *, gone: bool, force: bool = False) -> None:
        """Stop every container (SIGTERM, grace, SIGKILL) and the status writer.

        ``force`` runs again even if a termination was started (and perhaps cancelled) before:
        the sandbox's shutdown uses it so that no process is left behind.
        """
        if self._terminating and not force:
            return
        self._terminating = True
        if gone:
            self._gone = True
        log.info("pod.terminating", namespace=self.namespace, pod=self.name, grace_seconds=grace)
        every = [*self.init_workers, *self.workers.values()]
        await asyncio.gather(*(w.stop(grace) for w in every))
        self._dirty.set()
        self._gone = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.config.ipam.release(self.uid)

    def container_log(self, container: str, previous: bool) -> ContainerLog | None:
        worker = self.workers.get(container) or next(
            (w for w in self.init_workers if w.name == container), None
        )
        if worker is None:
            return None
        return worker.previous_log if previous else worker.log


class Kubelet:
    """Every pod of the node, driven by pod events; ``shutdown()`` leaves no process behind."""

    def __init__(self, store: NodeStore, config: KubeletConfig) -> None:
        self.store = store
        self.config = config
        self.pods: dict[str, PodWorker] = {}  # by uid
        self._finishing: set[asyncio.Task[None]] = set()
        self._finishing_uids: set[str] = set()
        self._retries: dict[str, asyncio.Task[None]] = {}  # pods whose start is tried again

    def find(self, namespace: str, name: str) -> PodWorker | None:
        for worker in self.pods.values():
            if worker.namespace == namespace and worker.name == name and not worker._terminating:
                return worker
        return None

    async def handle(self, kind: str, pod: Obj) -> None:
        """One watch event for a pod."""
        uid = str(
            pod["metadata"].get("uid")
            or f"{pod['metadata'].get('namespace')}/{pod['metadata']['name']}"
        )
        worker = self.pods.get(uid)
        retry = self._retries.pop(uid, None)
        if retry is not None:  # this newer event supersedes the pending retry
            retry.cancel()
        if kind == "DELETED":
            if worker is not None:
                self._finish(worker, _grace_of(pod), gone=True)
            return
        if worker is None:
            if pod["metadata"].get("deletionTimestamp"):
                await self.store.delete(
                    PODS, pod["metadata"].get("namespace", "default"), pod["metadata"]["name"]
                )
                return
            namespace, name = pod["metadata"].get("namespace", "default"), pod["metadata"]["name"]
            if not pod.get("spec", {}).get("nodeName"):
                await self.store.bind(namespace, name, self.config.node_name)
                pod.setdefault("spec", {})["nodeName"] = self.config.node_name
            worker = self.pods[uid] = PodWorker(pod, self.store, self.config)
            try:
                await worker.start()
            except Exception as exc:
                # As the kubelet's pod workers: a sync that fails (an API read refused while
                # the Node authorizer has not yet seen the pod bound here) is tried again.
                log.info("pod.start_failed", namespace=namespace, pod=name, error=str(exc))
                await worker.terminate(0, gone=True)
                self.pods.pop(uid, None)
                self._retry_later(uid, pod)
            return
        worker.update(pod)
        if pod["metadata"].get("deletionTimestamp"):
            self._finish(worker, _grace_of(pod), gone=False)

    def _retry_later(self, uid: str, pod: Obj) -> None:
        async def retry() -> None:
            await asyncio.sleep(START_RETRY_SECONDS)
            self._retries.pop(uid, None)
            await self.handle("MODIFIED", pod)

        task = asyncio.create_task(retry(), name=f"pod-retry-{uid}")
        self._retries[uid] = task

    def _finish(self, worker: PodWorker, grace: float, *, gone: bool) -> None:
        # Marked now, not when the task first runs: a DELETED event right behind the
        # deletionTimestamp must not start a second termination.
        if worker._terminating or worker.uid in self._finishing_uids:
            return
        self._finishing_uids.add(worker.uid)

        async def finish() -> None:
            await worker.terminate(grace, gone=gone)
            self.pods.pop(worker.uid, None)
            if not gone:  # a graceful deletion: confirm it once the processes are gone
                await self.store.delete(PODS, worker.namespace, worker.name)
            log.info("pod.terminated", namespace=worker.namespace, pod=worker.name)

        task = asyncio.create_task(finish(), name=f"terminate-{worker.uid}")
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        task.add_done_callback(lambda _: self._finishing_uids.discard(worker.uid))

    async def shutdown(self) -> None:
        """Terminate every pod, each with at most ``shutdown_grace``; no process survives."""
        for retry in self._retries.values():
            retry.cancel()
        self._retries.clear()
        for task in list(self._finishing):
            task.cancel()
        await asyncio.gather(*self._finishing, return_exceptions=True)
        await asyncio.gather(
            *(
                w.terminate(
                    min(_grace_of(w.pod), self.config.shutdown_grace), gone=True, force=True
                )
                for w in self.pods.values()
            )
        )
        self.pods.clear()
