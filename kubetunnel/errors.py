"""Errors a user may see. Each carries a one-line message; no traceback is printed for them."""


class KubetunnelError(Exception):
    """A failure at run time: the message says what went wrong and what to do (exit code 1)."""

    exit_code = 1


class UsageError(KubetunnelError):
    """The user asked for something that cannot be done as asked (exit code 2)."""

    exit_code = 2


class PluginError(UsageError):
    """A plugin is unknown, broken, or registered twice."""


class StoreError(KubetunnelError):
    """A store refused an operation; subclasses mirror the Kubernetes API's reasons."""


class NotFound(StoreError):
    pass


class AlreadyExists(StoreError):
    pass


class Conflict(StoreError):
    """The record changed since it was read: read it again and retry."""
