"""Structured logs via structlog: JSON lines for the service, readable lines on a console."""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.types import EventDict, WrappedLogger

from expressway_certd.monitor.text import printable

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _CurrentStderr:
    """Writes to whatever sys.stderr is at the time (test runners and daemons swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def terminal_safe(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Escape control and bidi characters in every value bound for a console (a certificate
    subject, a server's error text); tracebacks keep their line breaks."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = printable(value, keep_newlines=key in ("exception", "stack"))
        elif value is not None and not isinstance(value, bool | int | float):
            event_dict[key] = printable(repr(value))
    return event_dict


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    console: list[structlog.types.Processor] = [
        terminal_safe,
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
    ]
    renderers: list[structlog.types.Processor] = (
        [structlog.processors.JSONRenderer()] if fmt == "json" else console
    )
    # APScheduler reports skipped overlapping runs at WARNING: expected here, not news.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
