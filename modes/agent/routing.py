"""Where each request on a filtered port goes: the routing table of one agent port.

The agent builds one :class:`Router` per Service port and gives it the Service's intercepts
(:class:`kubetunnel.intercepts.Intercepts`) with a :data:`~modes.agent.upstreams.Dial` per
intercept that reaches its developer's laptop. For every request the protocol handlers
(:mod:`modes.agent.h1`, :mod:`modes.agent.h2c`) ask :meth:`Router.choose`: the first filtered
intercept that matches gets it (first made wins), otherwise the origin (the Service's own pods);
every matching mirror gets a copy. A laptop that cannot take a request (its local process down,
its tunnel gone) sends that request to the origin: the failback of
:mod:`modes.agent.fronting`, per developer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubetunnel.intercepts import Intercepts, Mode
from kubetunnel.logging import get_logger
from modes.agent.fronting import Counters, Front
from modes.agent.mirroring import MIRROR_LINGER, Mirror, MirrorStats
from modes.agent.upstreams import Dial, Pool, tcp_dial

log = get_logger(__name__)

ORIGIN = "origin"


@dataclass(frozen=True)
class Target:
    """One upstream: ``key`` names its pool of kept-alive connections; ``fallback`` is where a
    request goes when ``dial`` fails (the origin, for a laptop)."""

    key: str
    dial: Dial
    intercept: str | None = None  # None: the origin
    fallback: Target | None = None


@dataclass(frozen=True)
class Route:
    target: Target | None  # None: no origin to send an unmatched request to (reset)
    mirrors: tuple[Mirror, ...] = ()


@dataclass
class RouterCounters:
    requests: int = 0  # HTTP/1.x requests and HTTP/2 streams routed
    to_origin: int = 0
    to_local: int = 0  # routed to a laptop (some of them then failed back)
    failed_back: int = 0  # meant for a laptop that could not take it: sent to the origin
    handed_over: int = 0  # of those, after the laptop's dial of its local process failed
    retried: int = 0  # a kept-alive upstream connection closed under a request: sent again
    reset: int = 0  # could not be served: the client connection or stream was reset
    raw: int = 0  # connections that were not HTTP: relayed to the origin as bytes
    bad_requests: int = 0  # malformed HTTP after a first good request
    per_intercept: dict[str, int] = field(default_factory=dict)  # requests each laptop took

    def fell_back(self, intercept: str | None) -> None:
        """A request routed to ``intercept``'s laptop went to the origin instead: it no longer
        counts as that laptop's."""
        self.failed_back += 1
        if intercept is not None and self.per_intercept.get(intercept, 0) > 0:
            self.per_intercept[intercept] -= 1

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


class Router:
    """The routing table and the shared state (connection pools, mirrors, tasks) of one port."""

    def __init__(self, origin: tuple[str, int] | None, *, dial_timeout: float = 5.0,
                 counters: Counters | None = None, mirror_queue: int = 256,
                 mirror_timeout: float = 10.0, mirror_linger: float = MIRROR_LINGER) -> None:
        self.pool = Pool()
        self.counters = RouterCounters()
        self.intercepts = Intercepts()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._mirror_queue, self._mirror_timeout = mirror_queue, mirror_timeout
        self._mirror_linger = mirror_linger
        self.origin = None if origin is None else Target(ORIGIN, tcp_dial(*origin, dial_timeout))
        self.raw_front = None if origin is None else Front(
            lambda port: None, origin, self._track, counters or Counters(), dial_timeout)
        """Relays a connection that is not HTTP to the origin as bytes (fronting's relay)."""
        # Routes made once, not per request (a frozen dataclass is slow to make).
        self._origin_route = Route(self.origin)
        self._targets: dict[str, Route] = {}
        self._mirrors: dict[str, Mirror] = {}
        self.header_names: frozenset[bytes] = frozenset()

    def update(self, intercepts: Intercepts, dials: Mapping[str, Dial]) -> None:
        """Swap in the current intercepts; ``dials[id]`` reaches that intercept's laptop (a
        missing one: its requests go to the origin, its copies are dropped). Requests already
        routed finish where they went."""
        targets: dict[str, Route] = {}
        mirrors: dict[str, Mirror] = {}
        for intercept in intercepts:
            dial = dials.get(intercept.id)
            if dial is None:
                dial = _unreachable
            key = f"local:{intercept.id}"
            if intercept.mode is Mode.MIRROR:
                old = self._mirrors.get(intercept.id)
                mirrors[intercept.id] = old if old is not None and old.key == key else Mirror(
                    key, dial, self.pool, self.spawn, self._mirror_queue, self._mirror_timeout,
                    self._mirror_linger)
            else:
                targets[intercept.id] = Route(Target(key, dial, intercept.id, self.origin))
        for intercept_id, old in self._mirrors.items():
            if mirrors.get(intercept_id) is not old:
                old.close()
        self.intercepts, self._targets, self._mirrors = intercepts, targets, mirrors
        kept = {f"local:{i.id}" for i in intercepts} | {ORIGIN}
        for key in self.pool.upstreams():
            if key not in kept:
                self.pool.drop(key)
        self.header_names = frozenset(n.encode("latin-1") for n in intercepts.header_names)

    def set_answering(self, intercept_id: str, answering: bool) -> None:
        """Whether an intercept's laptop takes new requests (its status). While it does not, its
        kept-alive connections close as they come free, so a draining CLI is not held open by
        idle ones and no request reaches it through them."""
        key = f"local:{intercept_id}"
        if answering:
            self.pool.restore(key)
        else:
            self.pool.retire(key)

    def choose(self, path: str, headers: Mapping[str, str]) -> Route:
        """``headers``: lower-case name -> combined value, for the names in
        :attr:`header_names` (others are not looked at)."""
        counters = self.counters
        counters.requests += 1
        intercepts = self.intercepts
        chosen = intercepts.route(path, headers)
        if chosen is None:
            counters.to_origin += 1
            route = self._origin_route
        else:
            counters.to_local += 1
            per = counters.per_intercept
            per[chosen.id] = per.get(chosen.id, 0) + 1
            route = self._targets[chosen.id]
        if self._mirrors:
            mirrors = tuple(self._mirrors[i.id] for i in intercepts.mirrors(path, headers))
            if mirrors:
                return Route(route.target, mirrors)
        return route

    def mirror(self, intercept_id: str) -> Mirror | None:
        return self._mirrors.get(intercept_id)

    def mirror_stats(self) -> dict[str, MirrorStats]:
        return {intercept_id: mirror.stats for intercept_id, mirror in self._mirrors.items()}

    # --- tasks ------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._track(asyncio.ensure_future(coro))

    def _track(self, task: asyncio.Future[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Cancel dials and mirror copies in progress and close the idle connections."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for mirror in self._mirrors.values():
            mirror.close()
        self.pool.close()


async def _unreachable() -> Any:
    raise ConnectionRefusedError("no tunnel for this intercept")


def request_path(target: bytes) -> str:
    """The path of a request target, without its query: origin form ``/a?b`` or absolute form
    ``http://host/a?b`` (``*`` and CONNECT's ``host:port`` have none: empty)."""
    if target[:1] != b"/":
        scheme = target.find(b"://")
        if scheme < 0:
            return ""
        slash = target.find(b"/", scheme + 3)
        target = b"/" if slash < 0 else target[slash:]
    end = target.find(b"?")
    return (target if end < 0 else target[:end]).decode("latin-1")

