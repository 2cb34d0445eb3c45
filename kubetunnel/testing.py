"""What a plugin author needs to test a plugin without a cluster: public and stable.

    from kubetunnel.testing import isolated_registry, pipe_pair, MemoryStore, capture_logs
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, MutableMapping
from typing import Any

from kubetunnel.registry import Registry, set_registry
from kubetunnel.stores.memory import MemoryStore
from kubetunnel.transports.loopback import LoopbackHub, LoopbackTransport, pipe_pair

__all__ = [
    "LoopbackHub",
    "LoopbackTransport",
    "MemoryStore",
    "capture_logs",
    "isolated_registry",
    "pipe_pair",
]


@contextlib.contextmanager
def isolated_registry(registry: Registry | None = None) -> Iterator[Registry]:
    """Swap in a registry (by default a freshly discovered one) and restore the previous one."""
    fresh = registry if registry is not None else Registry()
    previous = set_registry(fresh)
    try:
        yield fresh
    finally:
        set_registry(previous)


@contextlib.contextmanager
def capture_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Collect structlog events as dicts (event name and fields) instead of printing them."""
    from structlog.testing import capture_logs as _capture

    with _capture() as events:
        yield events
