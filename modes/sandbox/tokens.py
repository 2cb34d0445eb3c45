"""``serviceaccounts/{name}/token``: TokenRequest, as ``kubectl create token`` uses it.

Each request mints a new random bearer token that the sandbox accepts as the ServiceAccount
(``system:serviceaccount:<ns>:<name>``, authorized by RBAC) until it expires. Real clusters
issue signed JWTs; the sandbox's tokens are opaque, which no client may rely on anyway.
"""

from __future__ import annotations

import datetime
import json
import secrets
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from modes.sandbox.errors import bad_request, cause, invalid, method_not_allowed, not_found
from modes.sandbox.responses import respond

if TYPE_CHECKING:
    from modes.sandbox.endpoints import Endpoints
    from modes.sandbox.resources import Target

Obj = dict[str, Any]
DEFAULT_SECONDS = 3600
MIN_SECONDS = 600  # kube-apiserver: "may not specify a duration less than 10 minutes"
MAX_SECONDS = 1 << 32
DEFAULT_AUDIENCE = "https://kubernetes.default.svc.cluster.local"


class TokenIssuer:
    """Mints TokenRequest tokens into the server's token table and forgets expired ones."""

    def __init__(self, accepted: dict[str, str], endpoints: Endpoints) -> None:
        self.accepted = accepted  # bearer token -> user name (the server's table)
        self.expires: dict[str, float] = {}  # token -> time.time() after which it is refused
        self.endpoints = endpoints

    def expired(self, token: str) -> bool:
        """True (and the token forgotten) once a minted token has expired."""
        deadline = self.expires.get(token)
        if deadline is None or time.time() < deadline:
            return False
        self.expires.pop(token, None)
        self.accepted.pop(token, None)
        return True

    async def serve(self, request: web.Request, t: Target) -> web.StreamResponse:
        if request.method != "POST":
            raise method_not_allowed()
        namespace, name = t.namespace or "", t.name or ""
        account = self.endpoints.store.peek(t.rt, namespace, name)
        if account is None:
            raise not_found(t.rt.plural, t.rt.group, name)
        body = await self.endpoints.decode_body(request) or {}
        if not isinstance(body, dict) or body.get("kind", "TokenRequest") != "TokenRequest":
            raise bad_request("the body of a token request must be a TokenRequest")
        spec = body.get("spec") or {}
        seconds = spec.get("expirationSeconds", DEFAULT_SECONDS)
        if not isinstance(seconds, int) or not MIN_SECONDS <= seconds <= MAX_SECONDS:
            message = (f"may not specify a duration less than {MIN_SECONDS // 60} minutes"
                       if isinstance(seconds, int) and seconds < MIN_SECONDS
                       else f"may not specify a duration larger than {MAX_SECONDS} seconds")
            raise invalid("TokenRequest", "authentication.k8s.io", name, [cause(
                "spec.expirationSeconds", "FieldValueInvalid",
                f"Invalid value: {json.dumps(seconds)}: {message}")])
        token = secrets.token_urlsafe(32)
        self.accepted[token] = f"system:serviceaccount:{namespace}:{name}"
        self.expires[token] = time.time() + seconds
        issued = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        expires = issued + datetime.timedelta(seconds=seconds)
        return respond({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            # The ServiceAccount's uid, as kube-apiserver's answer carries it.
            "metadata": {"name": name, "namespace": namespace,
                         "uid": account["metadata"]["uid"],
                         "creationTimestamp": _rfc3339(issued)},
            # boundObjectRef is a pointer without omitempty: null when none was asked for.
            "spec": {"audiences": spec.get("audiences") or [DEFAULT_AUDIENCE],
                     "expirationSeconds": seconds,
                     "boundObjectRef": spec.get("boundObjectRef") or None},
            "status": {"token": token, "expirationTimestamp": _rfc3339(expires)},
        }, 201, [])


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
