"""The HTTP front: authentication, routing of kube-apiserver's URL layout, Status bodies for
every failure. The verbs themselves live in ``endpoints``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from kubetunnel.logging import get_logger
from modes.sandbox import discovery, openapi
from modes.sandbox.authorization import (
    Attributes,
    Authorizer,
    User,
    default_objects,
    resource_verb,
)
from modes.sandbox.crds import CrdController
from modes.sandbox.endpoints import Endpoints
from modes.sandbox.errors import ApiError, method_not_allowed, page_not_found, unauthorized
from modes.sandbox.faults import FaultInjector
from modes.sandbox.resources import Target
from modes.sandbox.storage import Store
from modes.sandbox.tokens import TokenIssuer

Obj = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = get_logger("kubetunnel.sandbox")
OPEN_PATHS = {"/healthz", "/livez", "/readyz"}
# The authenticated User of the request being handled (each request runs in its own task).
CURRENT_USER: contextvars.ContextVar[User | None] = contextvars.ContextVar(
    "kubetunnel_sandbox_user", default=None)
# A websocket upgrade (a GET) to these needs "create" as well: kube-apiserver's
# AuthorizePodWebsocketUpgradeCreatePermission, on by default since 1.35.
UPGRADE_NEEDS_CREATE = {("", "pods", "exec"), ("", "pods", "attach"), ("", "pods", "portforward")}
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
AGGREGATED = "as=APIGroupDiscoveryList"
AGGREGATED_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def status_response(error: ApiError) -> web.Response:
    return json_response(error.status(), error.code)


class Sandbox:
    """The API server: a store, the tokens it accepts, and the aiohttp application."""

    def __init__(
        self, *, history: int = 10_000, token: str | None = None, service_cidr: str | None = None
    ) -> None:
        self.store = Store(history=history, service_cidr=service_cidr)
        self.crds = CrdController(self.store)
        self.token = token or secrets.token_urlsafe(32)
        # bearer token -> user name; part 2 adds the tokens it mints for service accounts.
        self.tokens: dict[str, str] = {self.token: "sandbox-admin"}
        self.endpoints = Endpoints(self.store)
        self.authorizer = Authorizer(self.store)
        self.endpoints.reviewers[("authorization.k8s.io", "selfsubjectaccessreviews")] = (
            self._review_access
        )
        self.endpoints.reviewers[("authorization.k8s.io", "selfsubjectrulesreviews")] = (
            self._review_rules
        )
        self.issuer = TokenIssuer(self.tokens, self.endpoints)
        self.endpoints.subresources[("", "serviceaccounts", "token")] = self.issuer.serve
        self.address = ""
        self.faults: FaultInjector | None = None
        ns_rt = self.store.registry.get("", "namespaces")
        assert ns_rt is not None
        for name in INITIAL_NAMESPACES:
            self.store.create(
                ns_rt, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            )
        for obj in default_objects():
            rt = self.store.registry.get("rbac.authorization.k8s.io", f"{obj['kind'].lower()}s")
            assert rt is not None
            self.store.create(rt, obj)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._route)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, app: web.Application) -> None:
        self.store.hub.close_all()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.path not in OPEN_PATHS:
                header = request.headers.get("Authorization", "")
                scheme, _, token = header.partition(" ")
                token = token.strip()
                user = self.tokens.get(token) if scheme.lower() == "bearer" else None
                if user is None or self.issuer.expired(token):
                    raise unauthorized()
                CURRENT_USER.set(User.named(user))
                if self.faults is not None:  # chaos runs only (sandbox up --faults)
                    request = self.faults.apply(request, user)
            return await handler(request)
        except ApiError as exc:
            if exc.code >= 500:
                log.error("request.failed", method=request.method, path=request.path, code=exc.code)
            return status_response(exc)
        except web.HTTPException:
            raise
        except Exception as exc:
            log.exception("request.crashed", method=request.method, path=request.path)
            return status_response(
                ApiError(
                    500, "InternalError", f"Internal error occurred: {type(exc).__name__}: {exc}"
                )
            )

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        method = request.method
        if request.path not in OPEN_PATHS and not _is_resource_path(parts):
            self._authorize(request, Attributes(
                "get" if method in ("GET", "HEAD") else method.lower(), False, request.path))
        if not parts or parts[0] in ("healthz", "livez", "readyz", "version"):
            if method != "GET":
                raise method_not_allowed()
            if parts and parts[0] == "version":
                return json_response(discovery.version_info())
            if parts and len(parts) == 1:
                return web.Response(text="ok")
            return json_response(
                {
                    "paths": [
                        "/api",
                        "/api/v1",
                        "/apis",
                        "/healthz",
                        "/livez",
                        "/openapi/v2",
                        "/openapi/v3",
                        "/readyz",
                        "/version",
                    ]
                }
            )
        if parts[0] == "openapi":
            return openapi.handle(request, self.store.registry, parts[1:])
        if parts[0] == "api":
            return await self._api(request, "", parts[1:])
        if parts[0] == "apis":
            if len(parts) == 1:
                return self._discovery(request, None)
            return await self._api(request, parts[1], parts[2:])
        raise page_not_found()

    def _discovery(self, request: web.Request, core: bool | None) -> web.Response:
        if request.method != "GET":
            raise method_not_allowed()
        registry = self.store.registry
        if AGGREGATED in request.headers.get("Accept", ""):
            encoded = json.dumps(discovery.aggregated(registry, core=bool(core))).encode()
            # As kube-apiserver: an ETag, so a client's discovery cache sees new CRDs at once.
            etag = '"' + hashlib.sha256(encoded).hexdigest()[:32].upper() + '"'
            headers = {
                "Content-Type": AGGREGATED_TYPE,
                "ETag": etag,
                "Cache-Control": "no-cache, private",
                "Vary": "Accept",
            }
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304, headers=headers)
            return web.Response(body=encoded, headers=headers)
        if core:
            return json_response(discovery.core_versions(self.address))
        return json_response(discovery.group_list(registry))

    async def _api(self, request: web.Request, group: str, rest: list[str]) -> web.StreamResponse:
        registry = self.store.registry
        if not group and not rest:
            return self._discovery(request, True)
        if len(rest) <= 1 and request.method != "GET":  # discovery documents are read-only
            raise method_not_allowed()
        if group and not rest:
            found = discovery.group(registry, group)
            if found is None:
                raise page_not_found()
            return json_response(found)
        version, rest = rest[0], rest[1:]
        if not rest:
            found = discovery.resource_list(registry, group, version)
            if found is None:
                raise page_not_found()
            return json_response(found)
        if rest[0] == "watch" and len(rest) > 1 and request.method == "GET":
            # The deprecated /watch/ paths: the same as ?watch=true on the plain path.
            target = self._target(group, version, rest[1:])
            if target.name is not None:
                name = target.name
                target = dataclasses.replace(target, name=None)
                selector = request.query.get("fieldSelector")
                field = f"metadata.name={name}" + (f",{selector}" if selector else "")
                request = request.clone(rel_url=request.rel_url.update_query(fieldSelector=field))
            request = request.clone(rel_url=request.rel_url.update_query(watch="true"))
            self._authorize_target(request, group, target, watch=True)
            return await self.endpoints.serve(request, target)
        target = self._target(group, version, rest)
        watch = request.query.get("watch", "").lower() in ("true", "1")
        self._authorize_target(request, group, target, watch=watch and target.subresource is None)
        return await self.endpoints.serve(request, target)

    def _authorize(self, request: web.Request, attrs: Attributes) -> None:
        user = CURRENT_USER.get()
        if user is not None:
            self.authorizer.check(user, attrs)

    def _authorize_target(self, request: web.Request, group: str, target: Target,
                          watch: bool) -> None:
        """RBAC for a resource request, with the attributes kube-apiserver's RequestInfo has."""
        name = target.name or ""
        namespace = target.namespace or ""
        if target.rt.key == ("", "namespaces") and not namespace:
            namespace = name  # the namespace of a namespace is itself
        attrs = Attributes(
            resource_verb(request.method, has_name=bool(target.name), watch=watch), True,
            request.path, group, target.rt.plural, target.subresource or "", namespace, name)
        self._authorize(request, attrs)
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if upgrade and (group, target.rt.plural, target.subresource) in UPGRADE_NEEDS_CREATE:
            self._authorize(request, dataclasses.replace(attrs, verb="create"))

    def _review_rules(self, request: web.Request, review: Obj) -> Obj:
        """The status of a SelfSubjectRulesReview: every rule that applies in the namespace."""
        user = CURRENT_USER.get()
        if user is None:
            return {"resourceRules": [], "nonResourceRules": [], "incomplete": True}
        namespace = (review.get("spec") or {}).get("namespace") or ""
        resource, non_resource = self.authorizer.rules_of(user, namespace)
        return {"resourceRules": resource, "nonResourceRules": non_resource, "incomplete": False}

    def _review_access(self, request: web.Request, review: Obj) -> Obj:
        """The status of a SelfSubjectAccessReview: what RBAC says for the asking user."""
        user = CURRENT_USER.get()
        if user is None:
            return {"allowed": False, "reason": "no authenticated user"}
        spec = review.get("spec") or {}
        res, non = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if isinstance(res, dict):
            attrs = Attributes(res.get("verb", ""), True, "", res.get("group", ""),
                               res.get("resource", ""), res.get("subresource", ""),
                               res.get("namespace", ""), res.get("name", ""))
        elif isinstance(non, dict):
            attrs = Attributes(non.get("verb", ""), False, non.get("path", ""))
        else:
            return {"allowed": False, "reason": "no resource or non-resource attributes"}
        allowed, reason = self.authorizer.decide(user, attrs)
        return {"allowed": True, "reason": reason} if allowed else {"allowed": False}

    def _target(self, group: str, version: str, rest: list[str]) -> Target:
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            ns_rt = self.store.registry.get("", "namespaces")
            if not (group == "" and len(rest) == 3 and ns_rt and rest[2] in ns_rt.subresources):
                namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise page_not_found()
        rt = self.store.registry.lookup(group, version, rest[0])
        if rt is None or (namespace is not None and not rt.namespaced):
            raise page_not_found()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in rt.subresources:
            raise page_not_found()
        if rt.namespaced and namespace is None and name is not None:
            raise page_not_found()  # a namespaced object has no cluster-wide URL
        return Target(rt, version, namespace, name, sub)


def _is_resource_path(parts: list[str]) -> bool:
    """/api/v1/<resource>... and /apis/<group>/<version>/<resource>...; the rest (discovery,
    version, openapi) are non-resource requests."""
    return (parts[:1] == ["api"] and len(parts) > 2) or (parts[:1] == ["apis"] and len(parts) > 3)


__all__ = ["INITIAL_NAMESPACES", "Sandbox", "json_response"]
