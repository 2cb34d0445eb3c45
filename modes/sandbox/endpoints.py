"""The REST verbs on a resource URL: list/watch/get/create/update/patch/delete/deletecollection,
the status and scale subresources, content negotiation for ``Table``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import yaml
from aiohttp import web

from modes.sandbox import applying, deletion, protobuf, tables
from modes.sandbox.errors import (
    ApiError,
    bad_request,
    gone,
    method_not_allowed,
    not_found,
    page_not_found,
)
from modes.sandbox.resources import Target
from modes.sandbox.responses import convert, dumps, flag, int_param, respond, wants_table
from modes.sandbox.scaling import serve_scale
from modes.sandbox.selectors import Selector
from modes.sandbox.storage import Store, WriteOptions
from modes.sandbox.streaming import Watching

Obj = dict[str, Any]
SubresourceHandler = Callable[[web.Request, "Target"], Awaitable[web.StreamResponse]]


class Endpoints:
    def __init__(self, store: Store) -> None:
        self.store = store
        # (group, plural, subresource) -> handler; part 2 registers log and portforward here.
        self.subresources: dict[tuple[str, str, str], SubresourceHandler] = {}
        # (group, plural) of a review kind -> its answer (the status) for this request.
        self.reviewers: dict[tuple[str, str], Callable[[web.Request, Obj], Obj]] = {}
        self.watching = Watching(store)
        self._encoded: dict[tuple[str, int, str, bool], bytes] = {}

    async def serve(self, request: web.Request, t: Target) -> web.StreamResponse:
        method = request.method
        if t.subresource:
            custom = self.subresources.get((t.rt.group, t.rt.plural, t.subresource))
            if custom is not None:
                return await custom(request, t)
            if t.subresource == "status":
                return await self._object(request, t, "status")
            if t.subresource == "scale":
                body = None
                if request.method in ("PUT", "PATCH"):
                    try:
                        body = json.loads(await request.read() or b"null")
                    except ValueError as exc:
                        raise bad_request(f"error decoding request body: {exc}") from None
                return await serve_scale(self.store, request, t, body, self._opts(request))
            raise page_not_found()
        if t.name is None:
            if method == "GET":
                if flag(request, "watch"):
                    self._verb(t, "watch")
                    return await self.watching.serve(request, t, self._selector(request, t))
                return self.list(request, t)
            if t.rt.namespaced and t.namespace is None:
                raise method_not_allowed()  # across all namespaces one can only list and watch
            if method == "POST":
                return await self.create(request, t)
            if method == "DELETE":
                return await self.delete_collection(request, t)
            raise method_not_allowed()
        return await self._object(request, t, None)

    def _verb(self, t: Target, verb: str) -> None:
        if verb not in t.rt.verbs:
            raise method_not_allowed()

    def _opts(self, request: web.Request) -> WriteOptions:
        dry = request.query.getall("dryRun", [])
        if any(d != "All" for d in dry):
            raise bad_request(f'dryRun: Unsupported value: {dry!r}: supported values: "All"')
        manager = request.query.get("fieldManager")
        opts = WriteOptions(
            dry_run=bool(dry),
            field_validation=request.query.get("fieldValidation", "Warn"),
            # Without fieldManager, kube-apiserver names the manager after the User-Agent product.
            field_manager=manager or request.headers.get("User-Agent", "").split("/")[0] or None,
            force=flag(request, "force"),
        )
        opts.derived_manager = not manager
        return opts

    async def decode_body(self, request: web.Request) -> Any:
        raw = await request.read()
        ctype = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
        try:
            if ctype in ("application/yaml", "application/x-yaml"):
                return yaml.safe_load(raw)
            if ctype == protobuf.MEDIA_TYPE:
                return protobuf.decode(raw)
            if ctype not in ("application/json", ""):
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media "
                    f"types include: application/json, application/yaml, "
                    f"{protobuf.MEDIA_TYPE} (got {ctype})",
                )
            return json.loads(raw) if raw else None
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"error decoding request body: {exc}") from None

    # --- collection verbs --------------------------------------------------------------

    def _selector(self, request: web.Request, t: Target) -> Selector:
        return Selector.parse(
            request.query.get("labelSelector"), request.query.get("fieldSelector"), t.rt.plural,
            custom=t.rt.custom,
        )

    def list(self, request: web.Request, t: Target) -> web.Response:
        self._verb(t, "list")
        selector = self._selector(request, t)
        items = self.store.select(t.rt, t.namespace, selector)
        meta: Obj = {}
        rv = self.store.rv
        token = request.query.get("continue")
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(token.encode()))
                start, rv = tuple(state["start"]), int(state["rv"])
            except (ValueError, KeyError, TypeError):
                raise bad_request("continue key is not valid: illegal base64 data") from None
            if rv < self.store.hub.compacted_rv:
                raise gone(
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter."
                )
            # Later pages show the state of the first page's resourceVersion, as etcd's do.
            items = self.store.hub.state_at(t.rt.key, items, rv, t.namespace)
            items = [o for o in items if selector.matches(o)]
            items = [
                o
                for o in items
                if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > start
            ]
        limit = int_param(request, "limit", 0)
        if limit > 0 and len(items) > limit:
            last = items[limit - 1]["metadata"]
            state = {"rv": rv, "start": [last.get("namespace", ""), last["name"]]}
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
            if selector.empty:  # etcd counts the rest only for an unfiltered list
                meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        if wants_table(request):
            return respond(
                tables.table(
                    t.rt,
                    t.version,
                    [convert(o, t.rt, t.version) for o in items],
                    str(rv),
                    request.query.get("includeObject", "Metadata"),
                    list_meta=meta,
                )
            )
        if t.rt.custom:  # unstructured lists always carry "continue"
            meta.setdefault("continue", "")
        head = dumps(
            {
                "kind": f"{t.rt.kind}List",
                "apiVersion": t.rt.api_version(t.version),
                "metadata": {"resourceVersion": str(rv), **meta},
            }
        )
        encoded = b",".join(self._encode(o, t, in_list=not t.rt.custom) for o in items)
        return web.Response(
            body=head[:-1] + b',"items":[' + encoded + b"]}", content_type="application/json"
        )

    def _encode(self, obj: Obj, t: Target, in_list: bool = False) -> bytes:
        """A stored object's JSON, made once per version: stored objects never change.

        Items of a built-in kind's list have no apiVersion and kind, as kube-apiserver's typed
        lists (custom resources' unstructured lists keep them)."""
        key = (obj["metadata"]["resourceVersion"], id(obj), t.version, in_list)
        found = self._encoded.get(key)
        if found is None:
            if len(self._encoded) >= 50_000:
                self._encoded.clear()
            converted = convert(obj, t.rt, t.version)
            if in_list:
                converted = {k: v for k, v in converted.items() if k not in ("apiVersion", "kind")}
            found = self._encoded[key] = dumps(converted)
        return found

    async def create(self, request: web.Request, t: Target) -> web.Response:
        self._verb(t, "create")
        body = await self.decode_body(request)
        opts = self._opts(request)
        created = self.store.create(t.rt, body, t.namespace or "", opts)
        reviewer = self.reviewers.get((t.rt.group, t.rt.plural))
        if reviewer is not None:
            created["status"] = reviewer(request, created)
        return respond(convert(created, t.rt, t.version), 201, opts.warnings)

    async def delete_collection(self, request: web.Request, t: Target) -> web.Response:
        self._verb(t, "deletecollection")
        options = await self._delete_options(request)
        deleted = deletion.delete_collection(
            self.store,
            t.rt,
            t.namespace,
            self._selector(request, t),
            options,
            dry_run=bool(request.query.getall("dryRun", [])),
        )
        return respond(
            {
                "kind": f"{t.rt.kind}List",
                "apiVersion": t.rt.api_version(t.version),
                "metadata": {"resourceVersion": str(self.store.rv)},
                "items": [convert(o, t.rt, t.version) for o in deleted],
            }
        )

    async def _delete_options(self, request: web.Request) -> Obj:
        body = await self.decode_body(request) if request.can_read_body else None
        options: Obj = dict(body) if isinstance(body, dict) else {}
        for name in ("propagationPolicy",):
            if name in request.query:
                options[name] = request.query[name]
        if "gracePeriodSeconds" in request.query:
            options["gracePeriodSeconds"] = int_param(request, "gracePeriodSeconds", 0)
        if "orphanDependents" in request.query:
            options["orphanDependents"] = flag(request, "orphanDependents")
        return options

    # --- object verbs ------------------------------------------------------------------

    async def _object(self, request: web.Request, t: Target, sub: str | None) -> web.Response:
        assert t.name is not None
        ns = t.namespace or ""
        method = request.method
        if method == "GET":
            self._verb(t, "get")
            obj = convert(self.store.get(t.rt, ns, t.name), t.rt, t.version)
            if wants_table(request):
                return respond(
                    tables.table(
                        t.rt,
                        t.version,
                        [obj],
                        obj["metadata"]["resourceVersion"],
                        request.query.get("includeObject", "Metadata"),
                    )
                )
            return respond(obj)
        if method == "PUT":
            self._verb(t, "update")
            opts = self._opts(request)
            body = await self.decode_body(request)
            updated = self.store.update(t.rt, body, ns, t.name, opts, subresource=sub)
            return respond(convert(updated, t.rt, t.version), 200, opts.warnings)
        if method == "PATCH":
            self._verb(t, "patch")
            opts = self._opts(request)
            existed = self.store.peek(t.rt, ns, t.name) is not None
            patched = applying.patch(
                self.store,
                t.rt,
                ns,
                t.name,
                request.headers.get("Content-Type", ""),
                await request.read(),
                opts,
                sub,
            )
            return respond(
                convert(patched, t.rt, t.version), 200 if existed else 201, opts.warnings
            )
        if method == "DELETE" and sub is None:
            self._verb(t, "delete")
            options = await self._delete_options(request)
            obj, gone_now = deletion.delete(
                self.store,
                t.rt,
                ns,
                t.name,
                options,
                dry_run=bool(request.query.getall("dryRun", [])),
            )
            if gone_now and not t.rt.returns_deleted:
                return respond(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {
                            "name": t.name,
                            **({"group": t.rt.group} if t.rt.group else {}),
                            "kind": t.rt.plural,
                            "uid": obj["metadata"]["uid"],
                        },
                    }
                )
            return respond(convert(obj, t.rt, t.version))
        raise method_not_allowed()


__all__ = ["Endpoints", "Target", "gone", "not_found"]
