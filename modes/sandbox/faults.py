"""Fault injection for chaos runs (off unless ``sandbox up --faults FILE`` is given): a share of
one user's API calls answered with 409, 429 or 500 without reaching the store, and that user's
watches ended after a random short time, as a real API server and its load balancers do on a
bad day.

The plan is a JSON file, read again whenever it changes, so a chaos run switches faults on and
off while the sandbox runs::

    {"users": ["system:serviceaccount:kubetunnel:kubetunnel-operator"],
     "error_rate": 0.1, "codes": [409, 429, 500], "watch_end_after": [1, 5], "seed": 7}

An empty or missing file means no faults. Only the users listed are affected (none listed: all
users), so the tools that check the outcome keep a truthful view of the cluster.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from kubetunnel.logging import get_logger
from modes.sandbox.errors import ApiError

log = get_logger(__name__)

_REASONS = {409: "Conflict", 429: "TooManyRequests", 500: "InternalError",
            503: "ServiceUnavailable"}


@dataclass(frozen=True)
class FaultPlan:
    users: tuple[str, ...] = ()
    error_rate: float = 0.0
    codes: tuple[int, ...] = (409, 429, 500)
    watch_end_after: tuple[int, int] | None = None
    seed: int = 0

    @classmethod
    def parse(cls, data: dict[str, Any]) -> FaultPlan:
        span = data.get("watch_end_after")
        codes = tuple(int(c) for c in data.get("codes") or (409, 429, 500))
        if any(c not in _REASONS for c in codes):
            raise ValueError(f"codes must be among {sorted(_REASONS)}")
        rate = float(data.get("error_rate") or 0.0)
        if not 0.0 <= rate <= 1.0:
            raise ValueError("error_rate must be between 0 and 1")
        return cls(tuple(str(u) for u in data.get("users") or ()), rate, codes,
                   (max(1, int(span[0])), max(1, int(span[1]))) if span else None,
                   int(data.get("seed") or 0))


class FaultInjector:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._plan: FaultPlan | None = None
        self._rng = random.Random(0)  # noqa: S311 - chaos, not secrets
        self.counts: dict[str, int] = {}

    def plan(self) -> FaultPlan | None:
        try:
            stat = self.path.stat()
        except OSError:
            self._stamp, self._plan = None, None
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                text = self.path.read_text().strip()
                self._plan = FaultPlan.parse(json.loads(text)) if text else None
            except (OSError, ValueError, TypeError, IndexError) as exc:
                log.error("faults.unreadable", path=str(self.path), error=str(exc))
                self._plan = None
            if self._plan is not None:
                self._rng.seed(self._plan.seed)
            log.info("faults.plan", path=str(self.path), plan=str(self._plan))
        return self._plan

    def apply(self, request: web.Request, user: str | None) -> web.Request:
        """The request to serve (a watch may get a short timeout); raises the injected error."""
        plan = self.plan()
        if plan is None or (plan.users and user not in plan.users):
            return request
        if request.query.get("watch") in ("true", "1"):
            if plan.watch_end_after is not None:
                low, high = plan.watch_end_after
                seconds = self._rng.randint(low, max(low, high))
                self._count("watch-end")
                url = request.rel_url.update_query(timeoutSeconds=str(seconds))
                return request.clone(rel_url=url)
            return request
        if plan.error_rate and self._rng.random() < plan.error_rate:
            code = self._rng.choice(plan.codes)
            self._count(f"error-{code}")
            raise ApiError(code, _REASONS[code], f"injected fault ({self.path.name})")
        return request

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
