"""The REST API the agents call (contract: docs/operator-api.yaml), plus health and metrics.

A report only records the agent's word in the record's status (condition AgentConnected) and
asks for a reconcile; the reconcile decides about the selector. So the API never touches a
Service itself, a report lost in a crash is repeated by the agent, and a restarted operator
finds the last report in the record. Every refusal (400, 401, 403, 404, 413, 503) changes
nothing and answers the same JSON problem body.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubetunnel.errors import Conflict, KubetunnelError
from kubetunnel.logging import get_logger
from kubetunnel.records import TunnelRecord, now
from modes.operator import agents, conditions, objects
from modes.operator.conditions import AGENT_CONNECTED, SWITCHED
from modes.operator.sharing import shared_uid

if TYPE_CHECKING:
    from kubetunnel.kube import KubeClient
    from kubetunnel.plugins import Store
    from modes.operator.engine import Engine
    from modes.operator.events import Recorder
    from modes.operator.metrics import Metrics
    from modes.operator.state import Key, State

log = get_logger(__name__)


class Operator(Protocol):
    """What the API reads of the running operator (``modes.operator.runtime.Operator``), which
    builds on this module to serve it."""

    @property
    def leading(self) -> bool: ...

    @property
    def client(self) -> KubeClient: ...

    @property
    def store(self) -> Store: ...

    @property
    def state(self) -> State: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def engine(self) -> Engine[Key]: ...

    @property
    def recorder(self) -> Recorder: ...

MAX_REASON = 1024
MAX_BODY = 64 * 1024
STATUS_ROUTE = "/v1/namespaces/{namespace}/tunnels/{name}/status"


def _problem(status: int, message: str) -> web.Response:
    return web.json_response({"status": status, "message": message}, status=status)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def parse_report(raw: bytes) -> tuple[bool, str]:
    """``(connected, reason)`` from a request body; ValueError with a message a person reads."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"the body is not JSON: {exc}") from exc
    except RecursionError as exc:
        # The C decoder gives up at the interpreter's recursion limit; a report is two keys deep.
        raise ValueError("the body is not a report: JSON nested too deeply") from exc
    if not isinstance(body, dict):
        raise ValueError('the body must be a JSON object like {"connected": true, "reason": "..."}')
    connected = body.get("connected")
    if not isinstance(connected, bool):
        raise ValueError('"connected" is required and must be true or false')
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise ValueError('"reason" must be a string')
    if len(reason) > MAX_REASON:
        raise ValueError(f'"reason" is longer than {MAX_REASON} characters')
    return connected, reason


def parse_counts(raw: bytes) -> dict[str, int]:
    """A shared agent's per-intercept counters (``"counts": {"requests": n, ...}``), if any."""
    counts = json.loads(raw).get("counts") or {}
    if not isinstance(counts, dict) or not all(
            k in ("requests", "mirrorDropped") and isinstance(v, int) and not isinstance(v, bool)
            and 0 <= v < 1 << 62 for k, v in counts.items()):
        raise ValueError('"counts" must map "requests" and "mirrorDropped" to counts')
    return counts


class Api:
    def __init__(self, operator: Operator) -> None:
        self.operator = operator

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(STATUS_ROUTE, self.report)
        self.add_health(app)
        return app

    def add_health(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(self, request: web.Request) -> web.Response:
        # Only the leader is Ready, so the operator Service sends the agents to it alone.
        if self.operator.leading:
            return web.Response(text="ok")
        return web.Response(status=503, text="not the leader")

    async def metrics(self, request: web.Request) -> web.Response:
        payload = generate_latest(self.operator.metrics.registry)
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def report(self, request: web.Request) -> web.Response:
        status = 500  # what aiohttp answers for an exception that escapes; counted all the same
        try:
            response = await self._report(request)
            status = response.status
            return response
        finally:
            self.operator.metrics.reports.labels(str(status)).inc()

    async def _report(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        name = request.match_info["name"]
        token = _bearer(request)
        if token is None:
            return _problem(401, "missing bearer token (Authorization: Bearer <tunnel token>)")
        if not self.operator.leading:
            return _problem(503, "this operator replica is not the leader; retry")
        key = (namespace, name)
        try:
            record = await self.operator.store.get(namespace, name)
            expected = await self._token(record) if record is not None else None
        except KubetunnelError as exc:
            return _problem(503, f"cannot read tunnel {namespace}/{name}: {exc}")
        valid = expected is not None and hmac.compare_digest(expected.encode(), token.encode())
        if not valid:
            owner = self.operator.state.token_owner(token)
            if owner is None or owner == key:
                return _problem(401, "the token is not valid for any tunnel")
            if record is None:
                return _problem(404, f"tunnel {namespace}/{name} does not exist")
            return _problem(403, f"the token belongs to another tunnel, not {namespace}/{name}")
        self.operator.state.heard[key] = now()
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _problem(413, f"the body is larger than {MAX_BODY} bytes; a report is a few")
        try:
            connected, reason = parse_report(raw)
            counts = parse_counts(raw)
        except ValueError as exc:
            return _problem(400, str(exc))
        assert record is not None
        try:
            await self._record(record, connected, reason, counts)
        except KubetunnelError as exc:
            log.warning("report.not_recorded", namespace=namespace, tunnel=name, error=str(exc))
            return _problem(503, f"the report could not be recorded, retry: {exc}")
        self.operator.engine.enqueue(key)
        return web.json_response(
            {"namespace": namespace, "name": name, "connected": connected}, status=202
        )

    async def _token(self, record: TunnelRecord) -> str | None:
        key = (record.namespace, record.name)
        cached = self.operator.state.token(key, record.uid)
        if cached is not None:
            return cached
        obj = await agents.get_or_none(
            self.operator.client, agents.secret_path(record.namespace, objects.object_name(record))
        )
        annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
        token = objects.token_of(obj) if obj else None
        # A filtered or mirrored record's agent is the Service's shared one, with its token.
        uid = shared_uid(record.namespace, record.service) if record.shared else record.uid
        if token is None or annotations.get(objects.RECORD_UID) != uid:
            return None
        self.operator.state.put_token(key, record.uid, token)
        return token

    async def _record(self, record: TunnelRecord, connected: bool, reason: str,
                      counts: dict[str, int] | None = None) -> None:
        """Write the report into the record's status, re-reading on conflict."""
        store = self.operator.store
        for _ in range(8):
            status = record.status
            if counts:
                status = replace(status, requests=counts.get("requests", status.requests),
                                 mirror_dropped=counts.get("mirrorDropped",
                                                           status.mirror_dropped))
            was = conditions.is_true(status, AGENT_CONNECTED)
            status = conditions.with_condition(
                status, AGENT_CONNECTED, "True" if connected else "False",
                "AgentReported", reason or ("connected" if connected else "disconnected"),
            )
            if connected and not was:
                # A fresh connection after a person took the Service over: tunnel again.
                status = conditions.without(status, SWITCHED)
            if status == record.status:
                return
            try:
                await store.replace_status(record.replace(status=status))
            except Conflict:
                fresh = await store.get(record.namespace, record.name)
                if fresh is None:
                    return
                record = fresh
                continue
            if connected != was:
                await self.operator.recorder.emit(
                    record, "Connected" if connected else "Disconnected",
                    f"agent reports: {reason or ('connected' if connected else 'disconnected')}")
            return
        raise Conflict(f"tunnel {record.namespace}/{record.name} kept changing; retry")


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0: any free port); returns the runner and bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound: Any = runner.addresses[0]
    return runner, int(bound[1])
