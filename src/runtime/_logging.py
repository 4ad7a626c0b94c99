"""structlog configuration for the ``runtime`` command.

The library itself only calls ``structlog.get_logger("runtime")`` and leaves
configuration to the application; ``runtime start`` configures it once here.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from ._correlation import add_correlation_id

__all__ = ["configure_logging"]


def configure_logging(
    stream: TextIO | None = None, *, fmt: str = "auto", level: str = "info"
) -> None:
    """Send log events to ``stream`` (stderr): JSON unless it is a terminal.

    Args:
        stream: where events go; stderr by default.
        fmt: ``auto`` (console on a terminal, JSON otherwise), ``json`` or
            ``console``.
        level: the least severe level written (``debug`` ... ``error``).
    """
    stream = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_correlation_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if as_json:
        processors += [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(),
        ]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=stream.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
