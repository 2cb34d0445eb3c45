"""An asynchronous Kubernetes API client on aiohttp, with the official client's credentials.

Small on purpose: paths in, JSON out, Status bodies turned into :class:`ApiError`. Resource
paths for ``apiVersion``/``kind`` come from API discovery, so custom resources work as built-ins.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import yaml

from kubetunnel.errors import KubetunnelError
from kubetunnel.kube.access import KubeAccess

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


class ApiError(KubetunnelError):
    """The API server answered with an error Status; ``status`` is the HTTP code."""

    def __init__(self, status: int, reason: str, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.body = body

    @property
    def transient(self) -> bool:
        """Worth retrying with back-off: throttling, server errors, timeouts."""
        return self.status == 429 or self.status >= 500


class KubeClient:
    """One aiohttp session to one API server. Use ``async with`` or call :meth:`aclose`."""

    def __init__(self, access: KubeAccess, timeout: float = 30.0) -> None:
        self.access = access
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._resources: dict[str, dict[str, tuple[str, bool]]] = {}

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _session_for_use(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, enable_cleanup_closed=True)
            )
        return self._session

    async def _request_kwargs(self, headers: Mapping[str, str] | None) -> dict[str, Any]:
        merged = {**await self.access.auth_headers(), **(headers or {})}
        kwargs: dict[str, Any] = {"headers": merged, "ssl": await self.access.ssl_context()}
        if self.access.proxy:
            kwargs["proxy"] = self.access.proxy
        if self.access.tls_server_name:
            kwargs["server_hostname"] = self.access.tls_server_name
        return kwargs

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Any:
        """Send one request; return the decoded JSON body, or raise ApiError / KubetunnelError."""
        kwargs = await self._request_kwargs({"Accept": "application/json"})
        if body is not None:
            data = yaml.safe_dump(body) if content_type == APPLY_PATCH else json.dumps(body)
            kwargs["data"] = data.encode()
            kwargs["headers"]["Content-Type"] = content_type
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
        else:
            kwargs["timeout"] = self._timeout
        url = self.access.server + path
        try:
            async with self._session_for_use().request(
                method, url, params=_params(params), **kwargs
            ) as resp:
                payload = await resp.read()
                if resp.status >= 400:
                    raise _api_error(resp.status, payload)
                return json.loads(payload) if payload else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise unreachable(self.access.server, exc) from exc

    async def get(self, path: str, **params: str | int) -> Any:
        return await self.request("GET", path, params=params)

    async def get_or_none(self, path: str, **params: str | int) -> Any:
        """``get``, or None when the object does not exist (404); other errors raise."""
        try:
            return await self.get(path, **params)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, path: str, obj: Mapping[str, Any]) -> Any:
        return await self.request("POST", path, body=obj)

    async def replace(self, path: str, obj: Mapping[str, Any]) -> Any:
        return await self.request("PUT", path, body=obj)

    async def patch(self, path: str, patch: Any, content_type: str = MERGE_PATCH) -> Any:
        return await self.request("PATCH", path, body=patch, content_type=content_type)

    async def delete(self, path: str, *, propagation: str = "Background", **params: str) -> Any:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        return await self.request("DELETE", path, params=params, body=body)

    async def apply(
        self, obj: Mapping[str, Any], field_manager: str = "kubetunnel", force: bool = True
    ) -> Any:
        """Server-side apply: create or converge ``obj``; idempotent."""
        meta = obj.get("metadata", {})
        path = await self.object_path(
            obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"]
        )
        params = {"fieldManager": field_manager, "force": "true" if force else "false"}
        return await self.request(
            "PATCH", path, params=params, body=dict(obj), content_type=APPLY_PATCH
        )

    async def watch(
        self, path: str, *, timeout_seconds: int = 300, **params: str | int
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events as dicts (``type``, ``object``); an ERROR event raises ApiError (410...)."""
        query: dict[str, str | int] = {
            **params, "watch": "true", "timeoutSeconds": timeout_seconds,
            "allowWatchBookmarks": "true",
        }
        kwargs = await self._request_kwargs({"Accept": "application/json"})
        kwargs["timeout"] = aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30)
        url = self.access.server + path
        try:
            async with self._session_for_use().get(url, params=_params(query), **kwargs) as resp:
                if resp.status >= 400:
                    raise _api_error(resp.status, await resp.read())
                async for line in resp.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        raise ApiError(
                            int(status.get("code", 500)), status.get("reason", ""),
                            status.get("message", "watch error"), status,
                        )
                    yield event
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubetunnelError(f"watch of {path} ended: {type(exc).__name__}: {exc}") from exc

    async def websocket(
        self, path: str, params: list[tuple[str, str]], protocols: tuple[str, ...]
    ) -> aiohttp.ClientWebSocketResponse:
        """Open a websocket (port-forward, exec) with the same credentials as every request."""
        kwargs = await self._request_kwargs(None)
        url = self.access.server.replace("https://", "wss://").replace("http://", "ws://") + path
        try:
            ws: aiohttp.ClientWebSocketResponse = await self._session_for_use().ws_connect(
                url, params=params, protocols=protocols, max_msg_size=0,
                autoping=True, heartbeat=None, **kwargs,
            )
            return ws
        except aiohttp.WSServerHandshakeError as exc:
            raise ApiError(
                exc.status, "", f"websocket to {path} refused: {exc.status} {exc.message}"
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise unreachable(self.access.server, exc) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubetunnelError(f"cannot open websocket to {path}: {exc}") from exc

    async def resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(plural, namespaced) for a kind, from discovery (cached per group/version)."""
        if api_version not in self._resources:
            base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            listing = await self.get(base)
            self._resources[api_version] = {
                r["kind"]: (r["name"], bool(r.get("namespaced")))
                for r in listing.get("resources", [])
                if "/" not in r["name"]
            }
        try:
            return self._resources[api_version][kind]
        except KeyError:
            raise KubetunnelError(f"the cluster does not serve {kind} in {api_version}") from None

    async def object_path(
        self, api_version: str, kind: str, namespace: str | None, name: str | None = None
    ) -> str:
        plural, namespaced = await self.resource(api_version, kind)
        return resource_path(api_version, plural, namespace if namespaced else None, name)


def resource_path(
    api_version: str, plural: str, namespace: str | None = None, name: str | None = None
) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = base + (f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"
    return path + (f"/{name}" if name else "")


def unreachable(server: str, exc: BaseException) -> KubetunnelError:
    """One line in kubectl's terms for a request that got no answer; no object reprs."""
    reason: str
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = (f"its TLS certificate is not trusted ({exc.certificate_error}); check "
                  "certificate-authority-data of the cluster in your kubeconfig")
        return KubetunnelError(f"cannot reach the Kubernetes API at {server}: {reason}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, socket.gaierror):
            reason = f"cannot resolve host {exc.host}"
        elif isinstance(os_error, ssl.SSLError):
            reason = f"TLS handshake failed ({os_error.reason or os_error})"
        elif os_error.errno:
            reason = os.strerror(os_error.errno).lower()
        else:
            reason = str(os_error) or "connection failed"
    elif isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        reason = "no answer in time"
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        reason = "the server closed the connection"
    else:
        reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
    return KubetunnelError(
        f"cannot reach the Kubernetes API at {server}: {reason}; is the cluster running, and is "
        "this the right context? (kubectl cluster-info)")


def _params(params: Mapping[str, str | int] | None) -> dict[str, str] | None:
    return {k: str(v) for k, v in params.items()} if params else None


def _api_error(status: int, payload: bytes) -> ApiError:
    try:
        body = json.loads(payload)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        return ApiError(status, body.get("reason", ""), body.get("message", ""), body)
    text = payload.decode(errors="replace").strip().splitlines()
    return ApiError(status, "", text[0] if text else f"HTTP {status}", body)
