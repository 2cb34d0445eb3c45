"""One container of a pod over its whole life: start, probe, restart with back-off, stop.

The kubelet's per-container state machine, reduced to what the API shows: ``state`` (waiting,
running, terminated), ``lastState``, ``restartCount``, ``ready`` and ``started``. Every change
calls ``on_change`` so that the pod worker can write one coalesced status.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kubetunnel.logging import get_logger
from modes.sandbox.node.images import UNRUNNABLE_REASON, ImagePolicy, Unrunnable
from modes.sandbox.node.logbuffer import ContainerLog
from modes.sandbox.node.probes import Prober
from modes.sandbox.node.runtime import ContainerProcess, Exit, rfc3339

Obj = dict[str, Any]
log = get_logger(__name__)


@dataclasses.dataclass
class Timing:
    """The kubelet's back-off constants, shortened by tests."""

    backoff_base: float = 10.0
    backoff_max: float = 300.0
    # A container that ran this long without crashing starts its back-off from scratch.
    backoff_reset: float = 600.0
    config_retry: float = 1.0
    eager_probe_period: float = 0.1


class ContainerWorker:
    def __init__(
        self,
        pod: Obj,
        container: Obj,
        *,
        init: bool,
        pod_ip: str,
        images: ImagePolicy,
        env_for: Callable[[Obj], Awaitable[dict[str, str]]],
        cwd: str | None,
        grace: Callable[[], float],
        timing: Timing,
        on_change: Callable[[], None],
    ) -> None:
        self.pod = pod
        self.spec = container
        self.name = str(container["name"])
        self.init = init
        self.pod_ip = pod_ip
        self.images = images
        self.env_for = env_for
        self.cwd = cwd
        self.grace = grace
        self.timing = timing
        self.on_change = on_change
        self.state: Obj = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Obj = {}
        self.restart_count = 0
        self.ready = False
        self.started = False
        self.log: ContainerLog | None = None
        self.previous_log: ContainerLog | None = None
        self.finished = asyncio.Event()  # terminated for good (no further restart)
        self.succeeded = False
        self._process: ContainerProcess | None = None
        self._stopping = False
        self._kill = asyncio.Event()
        self._probers: list[asyncio.Task[None]] = []
        self._runs = 0
        self._last_exit: Exit | None = None

    @property
    def pod_label(self) -> str:
        meta = self.pod["metadata"]
        return f"{meta.get('namespace')}/{meta.get('name')}"

    def status(self) -> Obj:
        status: Obj = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self._runs:
            status["containerID"] = f"sandbox://{self.pod['metadata'].get('uid')}/{self.name}"
        return status

    def _set(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self, key, value)
        self.on_change()

    async def run(self) -> None:
        """The container's life; returns when it will not run again or when stopped."""
        try:
            await self._run()
        finally:
            await self._cancel_probers()
            self.finished.set()

    async def _run(self) -> None:
        backoff = 0.0
        while not self._stopping:
            try:
                launch = self.images.launch(self.spec)
            except Unrunnable as exc:
                self._set(state={"waiting": {"reason": UNRUNNABLE_REASON, "message": str(exc)}})
                await asyncio.Event().wait()  # stays Pending until deleted, as in kube
                return
            try:
                env = await self.env_for(self.spec)
            # Not only a missing key: an API read that failed or was refused (the Node
            # authorizer learns of a new pod's Secrets a moment after it is bound) is a
            # CreateContainerConfigError too, retried as the kubelet retries it.
            except Exception as exc:
                self._set(
                    state={"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
                )
                await asyncio.sleep(self.timing.config_retry)
                continue
            began = time.monotonic()
            exit_ = await self._run_once(launch.argv, env)
            if self._stopping:
                return
            if not self._should_restart(exit_):
                self.succeeded = exit_.exit_code == 0
                return
            if time.monotonic() - began >= self.timing.backoff_reset:
                backoff = 0.0
            if backoff:
                message = (
                    f"back-off {backoff:g}s restarting failed container={self.name} "
                    f"pod={self.pod['metadata'].get('name')}_"
                    f"{self.pod['metadata'].get('namespace')}"
                    f"({self.pod['metadata'].get('uid')})"
                )
                self._set(
                    state={"waiting": {"reason": "CrashLoopBackOff", "message": message}},
                    last_state={"terminated": exit_.as_state()},
                )
                log.info(
                    "container.backoff",
                    pod=self.pod_label,
                    container=self.name,
                    seconds=backoff,
                    exit_code=exit_.exit_code,
                )
                await asyncio.sleep(backoff)
            backoff = min(max(backoff * 2, self.timing.backoff_base), self.timing.backoff_max)

    async def _run_once(self, argv: list[str], env: dict[str, str]) -> Exit:
        self.previous_log, self.log = self.log, ContainerLog()
        process = ContainerProcess(
            argv, env, self.log, self.cwd, name=f"{self.pod_label}/{self.name}",
            host_network=bool(self.pod.get("spec", {}).get("hostNetwork")),
        )
        self._runs += 1
        self._process = process
        try:
            await process.start()
        except OSError as exc:
            self._process = None
            self.log.close()
            now = rfc3339()
            exit_ = Exit(128, None, now, now, "StartError")
            self._set(
                state={"terminated": {**exit_.as_state(), "message": str(exc)}},
                restart_count=self._runs - 1,
            )
            return exit_
        try:
            return await self._supervise(process)
        finally:
            self._process = None
            if process.running:  # cancelled, or stopped while starting: no process may remain
                await process.stop(0 if not self._stopping else self.grace())

    async def _supervise(self, process: ContainerProcess) -> Exit:
        has_startup = "startupProbe" in self.spec
        previous = {"terminated": self._last_exit.as_state()} if self._last_exit else {}
        self._set(
            state={"running": {"startedAt": process.started_at}},
            last_state=previous,
            restart_count=self._runs - 1,
            started=not has_startup,
            ready=not has_startup and "readinessProbe" not in self.spec and not self.init,
        )
        log.info("container.running", pod=self.pod_label, container=self.name, pid=process.pid)
        self._kill.clear()
        if self._stopping:
            self._kill.set()
        elif not self.init:
            self._start_probers(has_startup)
        waiter = asyncio.ensure_future(process.wait())
        killer = asyncio.ensure_future(self._kill.wait())
        try:
            await asyncio.wait({waiter, killer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            killer.cancel()
        # A pod being deleted keeps its readiness probe through the grace period (liveness and
        # startup stop), as the kubelet does: EndpointSlices publish it as serving/terminating
        # and kube-proxy may still send it traffic while no other endpoint is ready.
        await self._cancel_probers(keep_readiness=self._stopping)
        if not self._stopping and not waiter.done():
            log.info("container.unhealthy", pod=self.pod_label, container=self.name)
        await process.stop(self.grace())
        await self._cancel_probers()
        exit_ = await waiter
        self._last_exit = exit_
        self._set(state={"terminated": exit_.as_state()}, ready=False)
        log.info(
            "container.exited",
            pod=self.pod_label,
            container=self.name,
            exit_code=exit_.exit_code,
            signal=exit_.signal,
        )
        return exit_

    def _should_restart(self, exit_: Exit) -> bool:
        policy = self.pod.get("spec", {}).get("restartPolicy", "Always")
        if self.init:
            return exit_.exit_code != 0 and policy != "Never"
        return policy == "Always" or (policy == "OnFailure" and exit_.exit_code != 0)

    def _start_probers(self, has_startup: bool) -> None:
        def readiness(ok: bool) -> None:
            self._set(ready=ok and self.started)

        def liveness(ok: bool) -> None:
            if not ok:
                self._kill.set()

        def startup(ok: bool) -> None:
            if not ok:
                self._kill.set()
                return
            self._set(started=True, ready="readinessProbe" not in self.spec)
            self._launch_probers(readiness, liveness)

        if has_startup:
            self._spawn(
                Prober(
                    "startup",
                    self.spec["startupProbe"],
                    self.pod_ip,
                    self.spec,
                    startup,
                    self.timing.eager_probe_period,
                )
            )
        else:
            self._launch_probers(readiness, liveness)

    def _launch_probers(
        self, readiness: Callable[[bool], None], liveness: Callable[[bool], None]
    ) -> None:
        if "readinessProbe" in self.spec:
            self._spawn(
                Prober(
                    "readiness",
                    self.spec["readinessProbe"],
                    self.pod_ip,
                    self.spec,
                    readiness,
                    self.timing.eager_probe_period,
                )
            )
        if "livenessProbe" in self.spec:
            self._spawn(
                Prober(
                    "liveness",
                    self.spec["livenessProbe"],
                    self.pod_ip,
                    self.spec,
                    liveness,
                    self.timing.eager_probe_period,
                )
            )

    def _spawn(self, prober: Prober) -> None:
        self._probers.append(
            asyncio.create_task(
                prober.run(), name=f"probe-{prober.kind}-{self.pod_label}/{self.name}"
            )
        )

    async def _cancel_probers(self, *, keep_readiness: bool = False) -> None:
        probers = [t for t in self._probers
                   if not (keep_readiness and t.get_name().startswith("probe-readiness-"))]
        self._probers = [t for t in self._probers if t not in probers]
        for task in probers:
            task.cancel()
        for task in probers:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self, grace: float) -> None:
        """SIGTERM, ``grace`` seconds, SIGKILL; afterwards the container never runs again."""
        self._stopping = True
        process = self._process
        if process is not None:
            await process.stop(grace)
