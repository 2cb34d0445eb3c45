"""``pods/{name}/log``: what ``kubectl logs`` reads, with kube-apiserver's parameters and errors.

Supported: ``container``, ``follow``, ``previous``, ``tailLines``, ``timestamps``,
``sinceSeconds``, ``sinceTime`` and ``limitBytes``. The body is plain text, streamed (chunked)
so that ``follow`` delivers each line as the container writes it and ends when it exits.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from aiohttp import web

from modes.sandbox.errors import bad_request
from modes.sandbox.node.logbuffer import ContainerLog, LogLine

Obj = dict[str, Any]
LogOf = Callable[[str, bool], ContainerLog | None]  # (container, previous) -> its log


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes")


def _int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"{name}: invalid value {raw!r}: must be an integer") from None


def _container(pod: Obj, request: web.Request) -> str:
    name = pod["metadata"]["name"]
    names = [c["name"] for c in pod.get("spec", {}).get("containers") or []]
    inits = [c["name"] for c in pod.get("spec", {}).get("initContainers") or []]
    wanted = request.query.get("container")
    if not wanted:
        if len(names) == 1:
            return str(names[0])
        raise bad_request(
            f"a container name must be specified for pod {name}, choose one of: "
            f"[{' '.join(names)}]"
            + (f" or one of the init containers: [{' '.join(inits)}]" if inits else "")
        )
    if wanted not in names and wanted not in inits:
        raise bad_request(f"container {wanted} is not valid for pod {name}")
    return wanted


def _since(request: web.Request) -> datetime.datetime | None:
    seconds = _int(request, "sinceSeconds")
    if seconds is not None:
        if seconds < 1:
            raise bad_request("sinceSeconds: Invalid value: must be greater than 0")
        return datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)
    raw = request.query.get("sinceTime")
    if raw:
        try:
            return datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise bad_request(f"sinceTime: invalid value {raw!r}") from None
    return None


def _waiting_reason(pod: Obj, container: str) -> str:
    status = pod.get("status") or {}
    for cs in [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]:
        if cs.get("name") == container:
            return str((cs.get("state") or {}).get("waiting", {}).get("reason") or "")
    return "ContainerCreating"


async def serve(request: web.Request, pod: Obj, log_of: LogOf) -> web.StreamResponse:
    """The log of one container of ``pod``; ``log_of`` reads the kubelet's buffers."""
    name = pod["metadata"]["name"]
    container = _container(pod, request)
    previous = _flag(request, "previous")
    follow = _flag(request, "follow") and not previous
    tail = _int(request, "tailLines")
    limit = _int(request, "limitBytes")
    since = _since(request)
    stamps = _flag(request, "timestamps")
    log = log_of(container, previous)
    if log is None:
        if previous:
            raise bad_request(
                f'previous terminated container "{container}" in pod "{name}" not found'
            )
        reason = _waiting_reason(pod, container) or "ContainerCreating"
        raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
    lines, end = log.lines(tail, since)
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    budget = limit if limit is not None and limit > 0 else None

    async def emit(line: LogLine) -> bool:
        nonlocal budget
        data = (line.rfc3339().encode() + b" " + line.data) if stamps else line.data
        if budget is not None:
            data = data[:budget]
            budget -= len(data)
        await response.write(data)
        return budget is None or budget > 0

    try:
        for line in lines:
            if not await emit(line):
                break
        else:
            if follow:
                async for line in log.follow(end):
                    if not await emit(line):
                        break
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client stopped reading (`kubectl logs -f` interrupted): not an error
    return response
