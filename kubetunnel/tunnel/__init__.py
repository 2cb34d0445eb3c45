"""The tunnel data plane shared by the CLI and the agent: framing, streams, sessions, bridging
real sockets, and the CLI-side client. docs/protocol.md is the specification.

The names most callers need; everything else is internal to the package.
"""

from kubetunnel.tunnel.client import ClientOptions, Route, TunnelClient
from kubetunnel.tunnel.handshake import TunnelRefused
from kubetunnel.tunnel.session import Session, SessionOptions
from kubetunnel.tunnel.streams import Stream, StreamState

__all__ = [
    "ClientOptions",
    "Route",
    "Session",
    "SessionOptions",
    "Stream",
    "StreamState",
    "TunnelClient",
    "TunnelRefused",
]
