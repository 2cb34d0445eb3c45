"""structlog, configured once per process: a console renderer on a terminal, JSON elsewhere."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Literal, TextIO

if TYPE_CHECKING:
    import structlog

LogFormat = Literal["console", "json"]
LEVELS = ("debug", "info", "warning", "error")

_configured: tuple[str, str] | None = None


def default_format(stream: TextIO | None = None) -> LogFormat:
    stream = stream if stream is not None else sys.stderr
    return "console" if stream.isatty() else "json"


def configure(level: str = "info", fmt: LogFormat | None = None) -> None:
    """Configure structlog and the stdlib root logger (aiohttp, kubernetes) to one output on stderr.

    Idempotent for the same arguments, so the root group and a subcommand may both call it.
    """
    global _configured
    fmt = fmt or default_format()
    if _configured == (level, fmt):
        return
    import structlog  # here, not at the top: `kubetunnel --help` must stay fast

    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if fmt == "json":
        shared.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library; send them through the same renderer.
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer
        ], foreign_pre_chain=shared)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Third-party chatter only from warnings up unless the user asked for debug.
    root.setLevel(numeric if level == "debug" else max(numeric, logging.WARNING))
    _configured = (level, fmt)


def _stderr_logger(*args: object) -> object:
    # Resolve sys.stderr at each use, not once: whoever swaps it (a test runner capturing output,
    # a daemonising parent) must not leave us writing to a closed file.
    import structlog

    return structlog.PrintLogger(file=sys.stderr)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that always writes to the current ``sys.stderr`` (see above)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    import structlog

    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger


def current() -> tuple[str, LogFormat]:
    """The level and format configured (or the defaults): for a child process to log alike."""
    if _configured is None:
        return "info", default_format()
    level, fmt = _configured
    return level, "json" if fmt == "json" else "console"


def debug_enabled() -> bool:
    return _configured is not None and _configured[0] == "debug"
