"""Watch fan-out: every write becomes one event, kept in a bounded history for replay.

The history is global and ordered by the global resourceVersion, so replay "after rv N" is a
scan of a deque. A watcher asking for a version older than the history gets 410 Gone, as it
would from kube-apiserver's watch cache after compaction.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from typing import Any

from modes.sandbox.errors import ApiError, bad_request, gone
from modes.sandbox.selectors import Selector

Obj = dict[str, Any]

# A watcher this far behind is closed, as kube-apiserver drops watchers whose buffer fills up;
# the client re-lists and watches again.
MAX_BACKLOG = 100_000


@dataclasses.dataclass(frozen=True)
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    key: tuple[str, str]
    namespace: str
    obj: Obj
    old: Obj | None = None


_CLOSED = object()


class Watcher:
    """One client's view: events of one type (and namespace), filtered through a selector."""

    def __init__(
        self, hub: WatchHub, key: tuple[str, str], namespace: str | None, selector: Selector
    ) -> None:
        self._hub = hub
        self.key = key
        self.namespace = namespace
        self.selector = selector
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.closed = False
        self.last_rv = 0

    def translate(self, event: Event) -> tuple[str, Obj] | None:
        """The event this watcher sees, if any: selector moves become ADDED or DELETED."""
        if event.key != self.key or (self.namespace and event.namespace != self.namespace):
            return None
        now = self.selector.matches(event.obj)
        if event.type != "MODIFIED":
            return (event.type, event.obj) if now else None
        before = event.old is not None and self.selector.matches(event.old)
        if now and before:
            return ("MODIFIED", event.obj)
        if now:
            return ("ADDED", event.obj)
        if before:
            return ("DELETED", event.obj)
        return None

    def offer(self, event: Event) -> None:
        seen = self.translate(event)
        if seen is None:
            return
        if self._queue.qsize() >= MAX_BACKLOG:
            self.close()
            return
        self._queue.put_nowait((event.rv, *seen))

    def push_initial(self, rv: int, obj: Obj) -> None:
        self._queue.put_nowait((rv, "ADDED", obj))

    async def next(self, timeout: float | None) -> tuple[int, str, Obj] | None:
        """The next (rv, type, object), or None on timeout or close."""
        if self.closed and self._queue.empty():
            return None
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None
        if item is _CLOSED:
            self.closed = True
            return None
        self.last_rv = item[0]
        return item  # type: ignore[no-any-return]

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(_CLOSED)
        self._hub.unsubscribe(self)


class WatchHub:
    def __init__(self, history: int = 10_000) -> None:
        self._history: collections.deque[Event] = collections.deque()
        self._limit = max(1, history)
        self._compacted_rv = 0  # every event at or below this is gone from the history
        self._watchers: set[Watcher] = set()

    def publish(self, event: Event) -> None:
        self._history.append(event)
        if len(self._history) > self._limit:
            self._compacted_rv = self._history.popleft().rv
        for watcher in list(self._watchers):
            watcher.offer(event)

    @property
    def compacted_rv(self) -> int:
        return self._compacted_rv

    def state_at(
        self, key: tuple[str, str], current: list[Obj], rv: int, namespace: str | None
    ) -> list[Obj]:
        """Objects of one type (in one namespace, or all) as they were at ``rv``, by undoing
        the kept events after it."""
        state = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in current}
        for event in reversed(self._history):
            if event.rv <= rv:
                break
            if event.key != key or (namespace and event.namespace != namespace):
                continue
            location = (event.namespace, event.obj["metadata"]["name"])
            if event.type == "ADDED":
                state.pop(location, None)
            elif event.old is not None:
                state[location] = event.old
        return [state[k] for k in sorted(state)]

    def check_not_compacted(self, rv: int, current: int) -> None:
        if rv < self._compacted_rv:
            raise gone(f"too old resource version: {rv} ({current})")

    def subscribe(
        self,
        key: tuple[str, str],
        namespace: str | None,
        selector: Selector,
        since: int | None,
        current: int,
    ) -> Watcher:
        """A watcher that first replays every kept event after ``since`` (if given)."""
        watcher = Watcher(self, key, namespace, selector)
        if since is not None:
            self.check_not_compacted(since, current)
            for event in self._history:
                if event.rv > since:
                    watcher.offer(event)
        self._watchers.add(watcher)
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def close_key(self, key: tuple[str, str]) -> None:
        """End every watch of one type (its CRD was deleted)."""
        for watcher in list(self._watchers):
            if watcher.key == key:
                watcher.close()

    def close_all(self) -> None:
        for watcher in list(self._watchers):
            watcher.close()

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)


def parse_rv(value: str) -> int:
    try:
        rv = int(value)
    except ValueError:
        raise bad_request(f'invalid resource version "{value}"') from None
    if rv < 0:
        raise bad_request(f'invalid resource version "{value}"')
    return rv


__all__ = ["ApiError", "Event", "WatchHub", "Watcher", "parse_rv"]
