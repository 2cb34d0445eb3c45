"""The ``direct`` transport: plain TCP (optionally TLS) to an address the user gives.

For agents exposed by a NodePort, a LoadBalancer or a TCP ingress, where going through the API
server's port-forward would only add a hop; and for tests, which need a real socket.
"""

from __future__ import annotations

import asyncio
import ssl

from kubetunnel.errors import KubetunnelError, UsageError
from kubetunnel.plugins import ByteStream, TransportSettings, TunnelTarget
from kubetunnel.tunnel.sockets import SocketStream


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); a UsageError names what is wrong."""
    host, sep, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"direct transport address {address!r} is not host:port")
    return host, int(port_text)


class DirectTransport:
    """Transport plugin ``direct``: ``target.address`` is ``host:port``.

    ``settings.tls_ca`` (a CA bundle file) turns on TLS and verifies the agent's certificate
    against it; ``settings.options["tls_server_name"]`` overrides the name checked, and
    ``settings.options["connect_timeout"]`` the seconds to wait (default 10).
    """

    def __init__(self, settings: TransportSettings) -> None:
        self._tls_ca = settings.tls_ca
        self._server_name = settings.options.get("tls_server_name")
        try:
            self._timeout = float(settings.options.get("connect_timeout", "10"))
        except ValueError as exc:
            raise UsageError(f"direct transport connect_timeout must be seconds: {exc}") from exc
        self._ssl: ssl.SSLContext | None = None

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            try:
                # Reads the CA file: callers run connect() once per tunnel, so the short
                # blocking read happens once and before any traffic.
                self._ssl = ssl.create_default_context(cafile=self._tls_ca)
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(f"cannot load TLS CA bundle {self._tls_ca}: {exc}") from exc
        return self._ssl

    async def connect(self, target: TunnelTarget) -> ByteStream:
        if not target.address:
            raise UsageError("the direct transport needs an address (host:port) for the agent")
        host, port = parse_address(target.address)
        context = None
        if self._tls_ca:
            context = await asyncio.to_thread(self._context)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                _, stream = await loop.create_connection(
                    SocketStream, host, port, ssl=context,
                    server_hostname=(self._server_name or host) if context else None,
                )
        except TimeoutError as exc:
            raise KubetunnelError(
                f"cannot reach the agent at {target.address}: timed out after {self._timeout:g}s"
            ) from exc
        except ssl.SSLError as exc:
            raise KubetunnelError(f"TLS with the agent at {target.address} failed: {exc}") from exc
        except OSError as exc:
            raise KubetunnelError(f"cannot reach the agent at {target.address}: {exc}") from exc
        return stream

    async def aclose(self) -> None:
        return None
