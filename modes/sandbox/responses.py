"""Small pieces every HTTP handler shares: JSON bodies, Warning headers, query flags, Table
negotiation, and serving a stored object in the requested version.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from modes.sandbox.errors import bad_request
from modes.sandbox.resources import ResourceType

Obj = dict[str, Any]


def dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def respond(body: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    headers: CIMultiDict[str] = CIMultiDict()
    for warning in (warnings or [])[:20]:
        # One header per warning, a quoted-string as RFC 9111 has it (kubectl prints them).
        quoted = warning.replace("\\", "\\\\").replace('"', '\\"')
        headers.add("Warning", f'299 - "{quoted}"')
    return web.Response(
        body=dumps(body), status=status, content_type="application/json", headers=headers
    )


def flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true")


def wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def convert(obj: Obj, rt: ResourceType, version: str) -> Obj:
    """Objects are stored in one version; with no conversion webhooks only apiVersion differs."""
    if version != rt.storage_version and obj.get("apiVersion") != rt.api_version(version):
        obj = {**obj, "apiVersion": rt.api_version(version)}
    return obj


def int_param(request: web.Request, name: str, default: int) -> int:
    """An integer query parameter; anything else is 400, as kube-apiserver's decoder says."""
    raw = request.query.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f'{name}: Invalid value: "{raw}": must be an integer') from None
