"""Readiness, liveness and startup probes (httpGet, tcpSocket), with the kubelet's thresholds.

A probe result drives two things the rest of the system reads: the Ready condition (readiness:
Services send traffic only to Ready pods) and restarts (liveness, startup). One deviation, on
purpose: until the first success the sandbox probes every ``eager_period`` seconds rather than
``periodSeconds``, so a pod is Ready in well under a second instead of up to ten; after that,
periods and thresholds are the kubelet's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Any

from kubetunnel.logging import get_logger
from modes.sandbox.node import network

Obj = dict[str, Any]
log = get_logger(__name__)

USER_AGENT = "kube-probe/1.31"


def resolve_port(port: Any, container: Obj) -> int:
    """A probe port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"port {port!r} is not a named port of container {container.get('name')!r}")


async def http_get(action: Obj, pod_ip: str, container: Obj, timeout: float) -> tuple[bool, str]:
    """Success for a status in [200, 400), as the kubelet's HTTP prober."""
    host = action.get("host") or pod_ip
    port = resolve_port(action.get("port"), container)
    path = action.get("path") or "/"
    tls = None
    if str(action.get("scheme", "HTTP")).upper() == "HTTPS":
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE  # the kubelet does not verify probe certificates either
    headers = {
        "Host": f"{host}:{port}",
        "User-Agent": USER_AGENT,
        "Accept": "*/*",
        "Connection": "close",
    }
    for header in action.get("httpHeaders") or []:
        headers[header["name"]] = header["value"]
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    async with asyncio.timeout(timeout):
        reader, writer = await network.active().open_connection(host, port, ssl=tls)
        try:
            writer.write(request.encode("latin-1") + b"\r\n")
            await writer.drain()
            status_line = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
    parts = status_line.decode("latin-1").split()
    if len(parts) < 2 or not parts[1].isdigit():
        return False, f"malformed HTTP response from {host}:{port}{path}"
    code = int(parts[1])
    if 200 <= code < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {code}"


async def tcp_socket(action: Obj, pod_ip: str, container: Obj, timeout: float) -> tuple[bool, str]:
    host = action.get("host") or pod_ip
    port = resolve_port(action.get("port"), container)
    async with asyncio.timeout(timeout):
        _, writer = await network.active().open_connection(host, port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, ""


async def probe_once(probe: Obj, pod_ip: str, container: Obj) -> tuple[bool, str]:
    """One attempt: (success, message)."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if "httpGet" in probe:
            return await http_get(probe["httpGet"], pod_ip, container, timeout)
        if "tcpSocket" in probe:
            return await tcp_socket(probe["tcpSocket"], pod_ip, container, timeout)
    except TimeoutError:
        return False, f"probe timed out after {timeout:g}s"
    except (OSError, ValueError, ssl.SSLError) as exc:
        return False, str(exc) or type(exc).__name__
    return False, "only httpGet and tcpSocket probes run in the sandbox (no exec or grpc)"


class Prober:
    """Runs one probe of one container until cancelled, reporting state changes.

    ``on_change(True/False)`` is called when the thresholds flip the result; readiness starts
    False, liveness starts True (a container is alive until proven otherwise). A startup probe
    reports once, True on its first success or False when it gives up, and then stops, as the
    kubelet stops probing startup once a container has started.
    """

    def __init__(
        self,
        kind: str,
        probe: Obj,
        pod_ip: str,
        container: Obj,
        on_change: Callable[[bool], None],
        eager_period: float = 0.1,
    ) -> None:
        self.kind = kind
        self.probe = probe
        self.pod_ip = pod_ip
        self.container = container
        self.on_change = on_change
        self.eager_period = eager_period
        self.result = kind == "liveness"
        self.message = ""

    async def run(self) -> None:
        await asyncio.sleep(float(self.probe.get("initialDelaySeconds") or 0))
        period = float(self.probe.get("periodSeconds") or 10)
        success_needed = int(self.probe.get("successThreshold") or 1)
        failure_needed = int(self.probe.get("failureThreshold") or 3)
        successes = failures = 0
        ever_succeeded = False
        while True:
            ok, message = await probe_once(self.probe, self.pod_ip, self.container)
            if self.kind == "startup" and (ok or failures + 1 >= failure_needed):
                self._flip(ok, message)
                return
            if ok:
                successes, failures, ever_succeeded = successes + 1, 0, True
                if not self.result and successes >= success_needed:
                    self._flip(True, "")
            else:
                failures, successes = failures + 1, 0
                self.message = message
                # Before the first success a failing readiness probe is just "not yet".
                if self.result and failures >= failure_needed:
                    log.info(
                        "probe.failed",
                        kind=self.kind,
                        container=self.container.get("name"),
                        message=message,
                        failures=failures,
                    )
                    self._flip(False, message)
            # Only readiness and startup are hurried: a liveness probe that failed at the eager
            # pace would kill a container that is merely still starting, which the kubelet's
            # periodSeconds x failureThreshold would not.
            eager = not ever_succeeded and self.kind != "liveness"
            await asyncio.sleep(min(period, self.eager_period) if eager else period)

    def _flip(self, result: bool, message: str) -> None:
        self.result = result
        self.message = message
        self.on_change(result)
