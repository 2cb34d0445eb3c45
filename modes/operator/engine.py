"""The reconcile machinery: a keyed work queue with per-record serialization, capped exponential
back-off and delayed re-runs.

Why our own and not kopf: kopf is a fine framework, but it is built around talking to the
Kubernetes API itself: its handlers are keyed to one resource kind, it watches that kind
directly and keeps its progress in annotations on the object. The operator must work on records
through the store protocol only (``crd``, ``configmap``, ``memory`` behave the same), where the
record may be a ConfigMap, or no Kubernetes object at all. Wrapping a store as a fake resource
kind for kopf would cost more than the ~150 lines below, which meet the same bar:

- level-triggered: a key is only a *reason to look*; the reconcile function reads the current
  record and the cluster and converges them, so lost, merged or repeated events are harmless;
- per-record serialization: a key is never reconciled by two workers at once; a key that is
  enqueued while it runs is run once more afterwards (changes during a run are never missed);
- capped exponential back-off per key on failure (conflicts, 5xx, 429, unreachable server),
  reset by a success;
- periodic resync and restart safety come from the operator feeding every key in again (on
  start, after a watch re-list and on every resync tick); nothing lives only in memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from kubetunnel.logging import get_logger

log = get_logger(__name__)

K = TypeVar("K", bound=Hashable)
Reconcile = Callable[[K], Awaitable[float | None]]
"""Reconcile one key; return seconds after which to look again (timers), or None."""


class Engine(Generic[K]):
    """Runs ``reconcile(key)`` on ``workers`` concurrent workers, one run per key at a time."""

    def __init__(
        self,
        reconcile: Reconcile[K],
        *,
        workers: int = 16,
        backoff_start: float = 0.05,
        backoff_cap: float = 30.0,
        on_error: Callable[[K, BaseException], None] | None = None,
        on_done: Callable[[K, float], None] | None = None,
    ) -> None:
        self._reconcile = reconcile
        self._workers = workers
        self._backoff = (backoff_start, backoff_cap)
        self._on_error = on_error
        self._on_done = on_done
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._dirty: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def enqueue(self, key: K) -> None:
        """Look at ``key`` as soon as a worker is free (and after its current run, if any)."""
        if key in self._active:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._idle.clear()
        self._queue.put_nowait(key)

    def enqueue_after(self, key: K, delay: float) -> None:
        """Look at ``key`` in ``delay`` seconds; an earlier pending timer wins."""
        loop = asyncio.get_running_loop()
        when = loop.time() + max(delay, 0.0)
        current = self._timers.get(key)
        if current is not None:
            if current.when() <= when:
                return
            current.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.enqueue(key)

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)

    async def wait_idle(self) -> None:
        """Until nothing is queued or running (tests, benchmarks)."""
        while not (self._idle.is_set() and not self._queued and not self._active):
            await self._idle.wait()
            await asyncio.sleep(0)

    async def run(self) -> None:
        """Run the workers until cancelled; pending timers are dropped then."""
        try:
            async with asyncio.TaskGroup() as group:
                for index in range(self._workers):
                    group.create_task(self._work(), name=f"kubetunnel:reconcile-{index}")
        finally:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            started = time.perf_counter()
            try:
                again = await self._reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure is retried; none may kill a worker
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = min(self._backoff[0] * 2 ** (failures - 1), self._backoff[1])
                log.warning("reconcile.failed", key=str(key), failures=failures,
                            retry_in=round(delay, 3), error=f"{type(exc).__name__}: {exc}")
                if self._on_error is not None:
                    self._on_error(key, exc)
                self.enqueue_after(key, delay)
            else:
                self._failures.pop(key, None)
                if again is not None:
                    self.enqueue_after(key, again)
            finally:
                self._active.discard(key)
                if self._on_done is not None:
                    self._on_done(key, time.perf_counter() - started)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.enqueue(key)
                if not self._queued and not self._active:
                    self._idle.set()

    def forget(self, key: K) -> None:
        """Drop timers and failure counts of a key whose record is gone."""
        self._failures.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

