"""Where the runtime's log events go.

The runtime logs structlog events (``log.info("actor_started",
incarnation=3)``, bound ``path=``) through the logger ``get_logger()``
returns. Which way each event goes is decided when it is logged:

* structlog configured by the program (``structlog.is_configured()`` and a
  configuration other than structlog's builtin defaults; a test inside
  ``structlog.testing.capture_logs()`` counts): structlog's global
  configuration, as ``structlog.get_logger("runtime")`` would log it.
* otherwise: the standard library logger ``runtime``, so a program
  configures it as it configures any library. Configured nowhere, Python's
  ``logging.lastResort`` writes warnings and errors to stderr and nothing
  goes to stdout.

The builtin-defaults clause is there because ``capture_logs`` calls
``structlog.configure()`` on entry and again on exit: after it, structlog
reports itself configured although its configuration is the builtin one
again (print to stdout), which is not a choice a program made.

A stdlib record carries the event every way a handler may read it:
``record.msg`` is the event dict, whose ``str()`` (what a plain
``logging.Formatter`` prints) is ``event key=value ...``; the record has the
``_logger`` and ``_name`` attributes of structlog's ``wrap_for_formatter``,
so ``structlog.stdlib.ProcessorFormatter`` renders the event dict itself;
each key-value is also an attribute of the record (``extra``) unless it would
shadow a ``LogRecord`` attribute; and an exception is the record's
``exc_info``.

Importing this module changes no global state. ``configure_logging`` (the
``runtime start`` command) installs a handler on the root logger and
configures structlog to log through the standard library, so the runtime's
events and the actors' own take the same path.

It imports nothing of the runtime but ``_correlation``: every module logs.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any, TextIO

import structlog
import structlog._config

from ._correlation import add_correlation_id

__all__ = [
    "LOGGER_NAME",
    "Event",
    "RuntimeLogger",
    "configure_logging",
    "get_logger",
    "host_configured",
]

LOGGER_NAME = "runtime"

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


# structlog's builtin configuration, to tell "configured by the program" from
# "configure() was called with the defaults" (capture_logs on exit). Private
# names: test_capture_logs_counts_as_configured_only_while_it_captures fails
# if a structlog release renames them (the rule is then is_configured() alone).
def _builtin_defaults() -> dict[str, Any] | None:
    names = {
        "processors": "_BUILTIN_DEFAULT_PROCESSORS",
        "logger_factory": "_BUILTIN_DEFAULT_LOGGER_FACTORY",
        "wrapper_class": "_BUILTIN_DEFAULT_WRAPPER_CLASS",
        "context_class": "_BUILTIN_DEFAULT_CONTEXT_CLASS",
    }
    if not all(hasattr(structlog._config, name) for name in names.values()):
        return None
    defaults = {key: getattr(structlog._config, name) for key, name in names.items()}
    defaults["processors"] = list(defaults["processors"])  # capture_logs edits lists in place
    return defaults


_BUILTIN_DEFAULTS = _builtin_defaults()


def host_configured() -> bool:
    """Whether the runtime logs through structlog's global configuration:
    structlog is configured, and not just with its builtin defaults."""
    if not structlog.is_configured():
        return False
    if _BUILTIN_DEFAULTS is None:
        return True
    config = structlog.get_config()
    return any(
        (list(config[key]) != value if key == "processors" else config[key] is not value)
        for key, value in _BUILTIN_DEFAULTS.items()
    )


# -- the standard library path ------------------------------------------------

# Attributes a LogRecord has (or logging refuses as ``extra``): an event's key
# of the same name stays in the event dict only.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_PLAIN = re.compile(r"[\w.,:/@+-]+")


class Event(dict[str, Any]):
    """An event dict as a stdlib record's ``msg``: ProcessorFormatter copies
    its items, any other formatter prints ``str()``: ``event key=value ...``
    (``exc_info`` and keys starting with ``_`` left out)."""

    __slots__ = ()

    def __str__(self) -> str:
        parts = [str(self.get("event", ""))]
        parts += [
            f"{key}={_value(value)}"
            for key, value in self.items()
            if key not in ("event", "exc_info") and not key.startswith("_")
        ]
        return " ".join(parts)


def _value(value: object) -> str:
    if isinstance(value, str):
        return value if _PLAIN.fullmatch(value) else json.dumps(value, ensure_ascii=False)
    return repr(value)


def _exc_info(value: object) -> _ExcInfo | None:
    """``exc_info`` as a structlog event holds it (an exception, True inside
    an ``except`` block, or a sys.exc_info() tuple) made a tuple, or None."""
    if isinstance(value, BaseException):
        return (type(value), value, value.__traceback__)
    if isinstance(value, tuple):
        return value if value[0] is not None else None
    if value is True:
        exc = sys.exc_info()
        return exc if exc[0] is not None else None
    return None


def to_record(
    logger: logging.Logger, method_name: str, event_dict: MutableMapping[str, Any]
) -> tuple[tuple[Event], dict[str, Any]]:
    """structlog's final processor: the arguments of the stdlib logger call.

    Like ``ProcessorFormatter.wrap_for_formatter``, but the message also
    reads well without ProcessorFormatter, and the exception is the record's.
    """
    exc_info = _exc_info(event_dict.pop("exc_info", None))
    event = Event(event_dict)
    if exc_info is not None:
        event["exc_info"] = exc_info
    extra = {
        key: value
        for key, value in event_dict.items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }
    extra["_logger"] = logger
    extra["_name"] = method_name
    return (event,), {"exc_info": exc_info, "extra": extra}


# The chain every event takes on its way to a stdlib logger; the levels are
# the stdlib logger's (events below its effective level are dropped first).
PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,
    structlog.contextvars.merge_contextvars,
    add_correlation_id,
    to_record,
]

_STDLIB = structlog.stdlib.BoundLogger(logging.getLogger(LOGGER_NAME), PROCESSORS, {})
_STRUCTLOG = structlog.get_logger(LOGGER_NAME)  # a lazy proxy: reads the configuration per use


def _configuration_key() -> object:
    """What identifies structlog's global configuration now (None if its
    private state is not where this structlog version keeps it)."""
    config = getattr(structlog._config, "_CONFIG", None)
    if config is None:
        return None
    return (
        config.is_configured,
        tuple(map(id, config.default_processors)),  # capture_logs edits the list in place
        id(config.logger_factory),
        id(config.default_wrapper_class),
        id(config.default_context_class),
    )


class _Route:
    """The logger events go to, worked out once per configuration: a
    lifecycle event costs a lookup, not a reading of structlog's settings."""

    __slots__ = ("base", "key")

    def __init__(self) -> None:
        self.key: object = ()
        self.base: Any = None

    def current(self) -> Any:
        key = _configuration_key()
        if key is None or key != self.key or self.base is None:
            # A concrete logger of the host's configuration, or the stdlib one.
            self.base = _STRUCTLOG.bind() if host_configured() else _STDLIB
            self.key = key if key is not None else ()
        return self.base


_ROUTE = _Route()


class RuntimeLogger:
    """The runtime's logger: structlog's event API, routed per event as the
    module docstring says. ``bind`` keeps its values here, so a logger bound
    once (a supervisor's) follows later configuration changes."""

    __slots__ = ("_context",)

    def __init__(self, context: dict[str, Any] | None = None) -> None:
        self._context = context or {}

    def bind(self, **values: Any) -> RuntimeLogger:
        return RuntimeLogger({**self._context, **values})

    def _target(self) -> Any:
        base = _ROUTE.current()
        return base.bind(**self._context) if self._context else base

    def debug(self, event: str, *args: Any, **kw: Any) -> None:
        self._target().debug(event, *args, **kw)

    def info(self, event: str, *args: Any, **kw: Any) -> None:
        self._target().info(event, *args, **kw)

    def warning(self, event: str, *args: Any, **kw: Any) -> None:
        self._target().warning(event, *args, **kw)

    def error(self, event: str, *args: Any, **kw: Any) -> None:
        self._target().error(event, *args, **kw)

    def exception(self, event: str, *args: Any, **kw: Any) -> None:
        self._target().exception(event, *args, **kw)

    def critical(self, event: str, *args: Any, **kw: Any) -> None:
        self._target().critical(event, *args, **kw)


def get_logger() -> RuntimeLogger:
    """The runtime's logger (stdlib name ``runtime``)."""
    return RuntimeLogger()


# -- the runtime command --------------------------------------------------------


class _CommandHandler(logging.StreamHandler[TextIO]):
    """The handler ``configure_logging`` installs (and replaces when called
    again)."""


def _shown(record: logging.LogRecord) -> bool:
    """structlog events (the runtime's and the actors') at the handler's
    level; other libraries' records (httpx, hypercorn) from warning up."""
    return hasattr(record, "_logger") or record.levelno >= logging.WARNING


def _one_line(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Console processor: an exception as ``error=repr(exc)`` on the event's
    own line instead of a traceback below it (``raised=`` if the event has an
    ``error`` already; ConsoleRenderer prints an ``exception`` key below)."""
    exc_info = _exc_info(event_dict.pop("exc_info", None))
    if exc_info is not None:
        event_dict["raised" if "error" in event_dict else "error"] = repr(exc_info[1])
    return event_dict


def formatter(*, as_json: bool, colors: bool = False, tracebacks: bool = True) -> logging.Formatter:
    """A ProcessorFormatter rendering events as ``runtime start`` does.

    Args:
        as_json: one JSON object per line, exceptions as structured data
            (frames without local variables); otherwise console rendering.
        colors: console rendering in color.
        tracebacks: console rendering with the traceback below the event;
            without, an exception is one ``error=`` field.
    """
    processors: list[Any] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
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
        if not tracebacks:
            processors.append(_one_line)
        processors.append(structlog.dev.ConsoleRenderer(colors=colors, sort_keys=False))
    return structlog.stdlib.ProcessorFormatter(
        processors=processors, foreign_pre_chain=[structlog.stdlib.add_logger_name]
    )


def configure_logging(
    stream: TextIO | None = None, *, fmt: str = "auto", level: str = "info"
) -> logging.Handler:
    """Send log events to ``stream`` (stderr): JSON unless it is a terminal.

    For the ``runtime start`` command, which owns its process: one handler on
    the root logger, and structlog configured to log through the standard
    library, so the actors' own structlog events take the same path as the
    runtime's. Console rendering shows an exception as one ``error=`` field,
    with its traceback only at level debug; JSON always has it.

    Args:
        stream: where events go; stderr by default.
        fmt: ``auto`` (console on a terminal, JSON otherwise), ``json`` or
            ``console``.
        level: the least severe level written (``debug`` ... ``error``).

    Returns:
        The handler installed (a second call replaces it).
    """
    stream = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    levelno = logging.getLevelNamesMapping()[level.upper()]
    handler = _CommandHandler(stream)
    handler.setFormatter(
        formatter(as_json=as_json, colors=stream.isatty(), tracebacks=levelno <= logging.DEBUG)
    )
    handler.addFilter(_shown)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _CommandHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(levelno)
    structlog.configure(
        processors=PROCESSORS,
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    return handler
