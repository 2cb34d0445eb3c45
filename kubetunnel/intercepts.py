"""The intercepts on one Service and how a request picks among them.

An intercept is one developer's claim: ``exclusive`` (every connection, today's plain connect),
``filtered`` (only requests its filter matches go to the laptop; the rest to the cluster's pods)
or ``mirror`` (the cluster's pods answer everything; a copy of each matching request also goes to
the laptop, and its answer is thrown away). The operator keeps them apart (:meth:`Intercepts.
conflicts`), ``cli status`` warns about overlaps (:meth:`Intercepts.overlapping`), and the agent
routes with :meth:`Intercepts.route` and :meth:`Intercepts.mirrors`.

"First made wins": a request that two filtered intercepts match goes to the older one (earlier
``created``; ties broken by id, so every agent replica and every ``cli status`` agrees).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubetunnel.errors import UsageError
from kubetunnel.filters import Filter


class Mode(enum.StrEnum):
    EXCLUSIVE = "exclusive"
    FILTERED = "filtered"
    MIRROR = "mirror"


@dataclass(frozen=True)
class Intercept:
    """One developer's intercept. ``created`` is a Unix time (seconds); ``holder`` is
    ``user@host`` for messages."""

    id: str
    mode: Mode
    filter: Filter = field(default_factory=Filter)
    created: float = 0.0
    holder: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            raise UsageError("an intercept needs an id")
        if self.mode is Mode.EXCLUSIVE and not self.filter.empty:
            raise UsageError("an exclusive intercept has no filter; with --header or "
                             "--path-prefix it is a filtered one")
        if self.mode is Mode.FILTERED and self.filter.empty:
            raise UsageError("a filtered intercept needs --header or --path-prefix")

    @property
    def order(self) -> tuple[float, str]:
        return self.created, self.id

    def describe(self) -> str:
        who = f"{self.holder} " if self.holder else ""
        if self.mode is Mode.EXCLUSIVE:
            return f"{who}(exclusive)"
        return f"{who}({self.mode.value}: {self.filter.describe()})"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "mode": self.mode.value, "filter": self.filter.to_dict(),
                "created": self.created, "holder": self.holder}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Intercept:
        try:
            mode = Mode(data.get("mode", "exclusive"))
        except ValueError:
            raise UsageError(f"intercept: unknown mode {data.get('mode')!r}") from None
        created = data.get("created", 0.0)
        if not isinstance(created, int | float) or not isinstance(data.get("id"), str) \
                or not isinstance(data.get("holder", ""), str):
            raise UsageError("intercept: id and holder must be strings, created a number")
        return cls(data["id"], mode, Filter.from_dict(data.get("filter", {})), float(created),
                   data.get("holder", ""))


class Intercepts:
    """An immutable, ordered set of intercepts (oldest first). The agent swaps in a new one when
    intercepts come and go, so a request always sees one consistent table."""

    def __init__(self, items: Iterable[Intercept] = ()) -> None:
        ordered = sorted(items, key=lambda i: i.order)
        ids = [i.id for i in ordered]
        if len(set(ids)) != len(ids):
            raise UsageError(f"duplicate intercept ids in {ids}")
        self.items: tuple[Intercept, ...] = tuple(ordered)
        self._routed = tuple(i for i in ordered if i.mode is not Mode.MIRROR)
        self._mirrors = tuple(i for i in ordered if i.mode is Mode.MIRROR)
        self.header_names: frozenset[str] = frozenset().union(
            *(i.filter.header_names for i in ordered))
        """Every header name some filter looks at: a router need not collect any other."""

    def __iter__(self) -> Iterator[Intercept]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def get(self, intercept_id: str) -> Intercept | None:
        return next((i for i in self.items if i.id == intercept_id), None)

    def with_added(self, intercept: Intercept) -> Intercepts:
        return Intercepts((*(i for i in self.items if i.id != intercept.id), intercept))

    def without(self, intercept_id: str) -> Intercepts:
        return Intercepts(i for i in self.items if i.id != intercept_id)

    @property
    def filtering(self) -> bool:
        """Requests must be parsed: there is a filtered or mirrored intercept."""
        return any(i.mode is not Mode.EXCLUSIVE for i in self.items)

    def route(self, path: str, headers: Mapping[str, str]) -> Intercept | None:
        """The intercept whose laptop gets this request (first made wins), or None: the
        cluster's pods."""
        for intercept in self._routed:
            if intercept.filter.matches(path, headers):
                return intercept
        return None

    def mirrors(self, path: str, headers: Mapping[str, str]) -> list[Intercept]:
        """The mirrors that get a copy of this request."""
        return [i for i in self._mirrors if i.filter.matches(path, headers)]

    def conflicts(self, new: Intercept) -> list[Intercept]:
        """Who stands in the way of ``new``: an exclusive intercept excludes every other kind,
        and every other kind excludes it. The caller names them in its refusal."""
        others = [i for i in self.items if i.id != new.id]
        if new.mode is Mode.EXCLUSIVE:
            return others
        return [i for i in others if i.mode is Mode.EXCLUSIVE]

    def overlapping(self, new: Intercept) -> list[Intercept]:
        """Filtered intercepts that may take requests ``new`` also matches (a warning, not a
        refusal: the older one wins). Mirrors never compete, so they overlap nothing."""
        if new.mode is not Mode.FILTERED:
            return []
        return [i for i in self.items if i.id != new.id and i.mode is Mode.FILTERED
                and i.filter.may_overlap(new.filter)]

    def to_list(self) -> list[dict[str, Any]]:
        return [i.to_dict() for i in self.items]

    @classmethod
    def from_list(cls, data: Iterable[Mapping[str, Any]]) -> Intercepts:
        return cls(Intercept.from_dict(item) for item in data)
