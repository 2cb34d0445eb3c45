"""The reconcile engine: one run per key at a time, no change missed, capped back-off, timers."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

import pytest

from modes.operator.engine import Engine


@contextlib.asynccontextmanager
async def running(engine: Engine[str]) -> AsyncIterator[None]:
    task = asyncio.create_task(engine.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_one_run_per_key_and_changes_during_a_run_are_not_missed() -> None:
    active: set[str] = set()
    overlaps = 0
    runs: list[str] = []
    gate = asyncio.Event()

    async def reconcile(key: str) -> None:
        nonlocal overlaps
        if key in active:
            overlaps += 1
        active.add(key)
        runs.append(key)
        if key == "a" and runs.count("a") == 1:
            await gate.wait()
        await asyncio.sleep(0)
        active.discard(key)

    engine: Engine[str] = Engine(reconcile, workers=4)
    async with running(engine):
        engine.enqueue("a")
        await asyncio.sleep(0.01)
        for _ in range(5):  # while "a" runs: merged into exactly one more run
            engine.enqueue("a")
        engine.enqueue("b")
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.wait_for(engine.wait_idle(), 2)
    assert overlaps == 0
    assert runs.count("a") == 2
    assert runs.count("b") == 1


async def test_failures_back_off_exponentially_up_to_the_cap() -> None:
    times: list[float] = []
    loop = asyncio.get_running_loop()

    async def reconcile(key: str) -> None:
        times.append(loop.time())
        if len(times) < 6:
            raise RuntimeError("API said 500")

    errors: list[str] = []
    engine: Engine[str] = Engine(reconcile, workers=1, backoff_start=0.01, backoff_cap=0.04,
                                 on_error=lambda key, exc: errors.append(str(exc)))
    async with running(engine):
        engine.enqueue("k")
        for _ in range(200):
            if len(times) >= 6:
                break
            await asyncio.sleep(0.01)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 6
    assert gaps[0] == pytest.approx(0.01, abs=0.01)
    assert gaps[1] >= 0.019
    assert all(g < 0.04 + 0.03 for g in gaps)  # capped
    assert errors == ["API said 500"] * 5
    assert engine.failures("k") == 0  # reset by the success


async def test_requested_timers_run_the_key_again() -> None:
    runs: list[float] = []
    loop = asyncio.get_running_loop()

    async def reconcile(key: str) -> float | None:
        runs.append(loop.time())
        return 0.05 if len(runs) == 1 else None

    engine: Engine[str] = Engine(reconcile, workers=2)
    async with running(engine):
        engine.enqueue("k")
        for _ in range(100):
            if len(runs) == 2:
                break
            await asyncio.sleep(0.01)
    assert len(runs) == 2
    assert runs[1] - runs[0] >= 0.045
