"""Suite-wide guards (CONVENTIONS item 8): warnings are errors (pyproject), leaked asyncio tasks
fail the test that leaked them, blocking calls inside the event loop fail, and every test starts
with a fresh plugin registry.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from kubetunnel.registry import set_registry
from kubetunnel.transports import loopback


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    previous = set_registry(None)
    yield
    set_registry(previous)


@pytest.fixture(autouse=True)
def no_blocking_calls(request: pytest.FixtureRequest) -> Iterator[BlockBuster | None]:
    # Only coroutine tests run an event loop for the code under test; sync tests may block.
    if not asyncio.iscoroutinefunction(getattr(request.node, "function", None)):
        yield None
        return
    with blockbuster_ctx() as bb:
        # pytest's own bookkeeping and the import system may touch files; our code may not.
        for name in ("os.stat", "os.lstat", "io.BufferedReader.read", "os.path.exists"):
            if name in bb.functions:
                bb.functions[name].deactivate()
        yield bb


@pytest.fixture(autouse=True)
async def no_leaked_tasks(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    before = set(asyncio.all_tasks())
    yield
    # Tasks cancelled during teardown (a server's handlers, a client's connector) may need a few
    # loop turns to unwind; only what still runs after a short grace has leaked.
    pending = {t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()}
    if pending:
        await asyncio.wait(pending, timeout=0.5)
    leaked = [t for t in pending if not t.done()]
    for task in leaked:
        task.cancel()
    if leaked:
        await asyncio.gather(*leaked, return_exceptions=True)
        names = ", ".join(sorted(t.get_name() for t in leaked))
        pytest.fail(f"test leaked {len(leaked)} asyncio task(s): {names}")


@pytest.fixture(autouse=True)
async def fresh_loopback_hub() -> AsyncIterator[loopback.LoopbackHub]:
    hub = loopback.LoopbackHub()
    previous, loopback.default_hub = loopback.default_hub, hub
    yield hub
    await hub.aclose()
    loopback.default_hub = previous
