"""Watch responses: newline-delimited JSON events over a chunked response, with bookmarks,
``sendInitialEvents``, timeouts, and 410 as an ERROR event, as kube-apiserver streams them.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from aiohttp import web

from modes.sandbox import tables
from modes.sandbox.errors import ApiError
from modes.sandbox.responses import convert, dumps, flag, int_param, wants_table
from modes.sandbox.selectors import Selector
from modes.sandbox.storage import Store
from modes.sandbox.watching import parse_rv

if TYPE_CHECKING:
    from modes.sandbox.resources import Target

Obj = dict[str, Any]
BOOKMARK_EVERY = 60.0
DEFAULT_WATCH_TIMEOUT = 1800.0
CLIENT_CHECK_EVERY = 5.0


class Watching:
    def __init__(self, store: Store) -> None:
        self.store = store
        # Encoded watch events, shared by every watcher that sends the same event (fan-out).
        self._encoded: dict[tuple[Any, ...], bytes] = {}

    def _event_line(self, t: Target, kind: str, obj: Obj) -> bytes:
        key = (t.rt.key, t.version, kind, obj["metadata"].get("resourceVersion"), id(obj))
        line = self._encoded.get(key)
        if line is None:
            if len(self._encoded) > 4096:
                self._encoded.clear()
            line = self._encoded[key] = _encode_event(t, kind, obj)
        return line

    async def serve(
        self, request: web.Request, t: Target, selector: Selector
    ) -> web.StreamResponse:
        rv = request.query.get("resourceVersion")
        initial_end = flag(request, "sendInitialEvents")
        bookmarks = flag(request, "allowWatchBookmarks") or initial_end
        if initial_end:
            rv = None if rv in (None, "", "0") else rv
        timeout = float(int_param(request, "timeoutSeconds", int(DEFAULT_WATCH_TIMEOUT)))
        as_table = wants_table(request)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            if initial_end and rv is not None:
                parse_rv(rv)
            watcher = self.store.watch(t.rt, t.namespace, selector, rv)
        except ApiError as exc:
            if exc.code != 410:
                raise
            await response.prepare(request)
            await response.write(dumps({"type": "ERROR", "object": exc.status()}) + b"\n")
            await response.write_eof()
            return response
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        first = True

        def bookmark(annotate: bool = False) -> bytes:
            meta: Obj = {"resourceVersion": str(self.store.rv)}
            if annotate:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            return (
                dumps(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": t.rt.kind,
                            "apiVersion": t.rt.api_version(t.version),
                            "metadata": meta,
                        },
                    }
                )
                + b"\n"
            )

        pending_initial = initial_end and rv is None
        next_bookmark = _next_bookmark(loop.time(), deadline)
        try:
            while True:
                now = loop.time()
                if now >= deadline:
                    break
                if pending_initial and watcher.backlog == 0:
                    await response.write(bookmark(annotate=True))
                    pending_initial = False
                # Wake up now and then to notice a client that went away without a word.
                wait = min(deadline - now, CLIENT_CHECK_EVERY)
                if bookmarks and next_bookmark is not None:
                    wait = min(wait, max(0.0, next_bookmark - now))
                item = await watcher.next(wait)
                if item is None:
                    if (
                        watcher.closed
                        or request.transport is None
                        or request.transport.is_closing()
                    ):
                        break
                    if bookmarks and next_bookmark is not None and loop.time() >= next_bookmark:
                        await response.write(bookmark())
                        next_bookmark = _next_bookmark(loop.time(), deadline)
                    continue
                _, kind, obj = item
                if not as_table:
                    await response.write(self._event_line(t, kind, obj))
                    continue
                obj = convert(obj, t.rt, t.version)
                obj = tables.table(
                    t.rt,
                    t.version,
                    [obj],
                    obj["metadata"]["resourceVersion"],
                    request.query.get("includeObject", "Metadata"),
                    headers=first,
                )
                first = False
                await response.write(dumps({"type": kind, "object": obj}) + b"\n")
        except ConnectionResetError:
            return response  # the client went away; nothing left to tell it
        finally:
            watcher.close()
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response


def _encode_event(t: Target, kind: str, obj: Obj) -> bytes:
    return dumps({"type": kind, "object": convert(obj, t.rt, t.version)}) + b"\n"


def _next_bookmark(now: float, deadline: float) -> float | None:
    """As kube's watch cache: every minute, and once about two seconds before the deadline."""
    when = min(now + BOOKMARK_EVERY, deadline - 2.0)
    return when if when > now else None
