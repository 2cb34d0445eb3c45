"""The version, read from the installed distribution so pyproject.toml stays the one source."""

from importlib import metadata

try:
    __version__ = metadata.version("kubetunnel")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
