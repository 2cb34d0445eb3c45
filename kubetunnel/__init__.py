"""KubeTunnel core: the plugin registry, the plugin protocols and the code every mode shares.

The public surface is deliberately small: the CLI, the plugin protocols re-exported here,
and :mod:`kubetunnel.testing`. Everything else may change between releases.
"""

from kubetunnel.errors import KubetunnelError, PluginError, UsageError
from kubetunnel.plugins import (
    ByteStream,
    PolicyRenderer,
    PolicyRequest,
    Store,
    StoreEvent,
    Transport,
    TransportSettings,
    TunnelTarget,
)
from kubetunnel.records import PortMapping, TunnelRecord, TunnelStatus

__all__ = [
    "ByteStream",
    "KubetunnelError",
    "PluginError",
    "PolicyRenderer",
    "PolicyRequest",
    "PortMapping",
    "Store",
    "StoreEvent",
    "Transport",
    "TransportSettings",
    "TunnelRecord",
    "TunnelStatus",
    "TunnelTarget",
    "UsageError",
    "__version__",
]


def __getattr__(name: str) -> str:
    # Reading distribution metadata costs tens of milliseconds; only `version` needs it.
    if name == "__version__":
        from kubetunnel._version import __version__

        return __version__
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
