"""structlog set-up: a console format for people, one JSON object per line for machines.

Every line carries what was bound with ``structlog.contextvars.bind_contextvars`` (the running
workflow's id and name), and no line carries a password: every value goes through
:func:`pgflow.redaction.redact_value`, tracebacks through :func:`pgflow.redaction.redact`.
Before :func:`configure_logging` is called, structlog's own defaults apply, except that lines
go to standard error (:func:`stderr_unless_configured`).
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, ExcInfo, FilteringBoundLogger, Processor, WrappedLogger

from .errors import ConfigurationError
from .redaction import redact, redact_value

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
FORMATS = ("auto", "console", "json")
_FIRST_KEYS = ("timestamp", "level", "event")


def redact_passwords(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: remove passwords from every string field (and secret-named fields whole)."""
    redacted: EventDict = redact_value(event_dict)
    return redacted


def _leading_keys(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: put timestamp, level and event first in the JSON object."""
    ordered: dict[str, Any] = {k: event_dict.pop(k) for k in _FIRST_KEYS if k in event_dict}
    ordered.update(event_dict)
    return ordered


def _redacted_traceback(sio: TextIO, exc_info: ExcInfo) -> None:
    buffer = io.StringIO()
    structlog.dev.plain_traceback(buffer, exc_info)
    sio.write(redact(buffer.getvalue()))


class _LineWriter:
    """The logger structlog writes rendered lines to: one line per event, whole.

    Its lock is rebuilt in a forked child, where a lock held by another thread at the fork
    would never be released. With no stream given it writes to the current ``sys.stderr``.
    """

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._lock = threading.Lock()
        stream = self._stream if self._stream is not None else sys.stderr
        with self._lock:
            stream.write(message + "\n")
            stream.flush()

    debug = info = warning = warn = error = err = critical = exception = fatal = failure = msg


class _LineWriterFactory:
    def __init__(self, stream: TextIO | None) -> None:
        self._writer = _LineWriter(stream)

    def __call__(self, *args: Any) -> _LineWriter:
        return self._writer


def _is_tty(stream: TextIO | None) -> bool:
    target = stream if stream is not None else sys.stderr
    try:
        return bool(target.isatty())
    except (AttributeError, ValueError):  # closed or not a real file
        return False


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog for pgflow and the application (idempotent; call again after fork).

    ``fmt``: ``console`` (aligned, coloured on a terminal), ``json`` (one object per line with an
    ISO UTC ``timestamp``, ``level`` and ``event``) or ``auto`` (console on a terminal, else
    json). ``stream`` defaults to standard error.

    >>> configure_logging("json", "debug")  # doctest: +SKIP
    """
    if fmt not in FORMATS:
        raise ConfigurationError(f"log format must be auto, console or json, not {fmt!r}")
    level_name = str(level).lower()
    if level_name not in LEVELS:
        raise ConfigurationError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    tty = _is_tty(stream)
    console = fmt == "console" or (fmt == "auto" and tty)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
    ]
    processors: list[Processor]
    if console:
        processors = [
            *shared,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            redact_passwords,
            structlog.dev.ConsoleRenderer(colors=tty, exception_formatter=_redacted_traceback),
        ]
    else:
        processors = [
            *shared,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_passwords,
            _leading_keys,
            structlog.processors.JSONRenderer(),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level_name]),
        context_class=dict,
        logger_factory=_LineWriterFactory(stream),
        # Not cached: configuring again (another format, a forked child) takes effect at once.
        cache_logger_on_first_use=False,
    )
    # The driver's own warnings (the pool's reconnection attempts) become pgflow lines too:
    # in json format every line of the stream stays one JSON object.
    driver = logging.getLogger("psycopg")
    driver.handlers = [h for h in driver.handlers if not isinstance(h, _DriverLog)]
    driver.addHandler(_DriverLog(logging.WARNING))
    driver.propagate = False


class _DriverLog(logging.Handler):
    """Forwards psycopg's standard-library log records to structlog as ``driver_log``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            structlog.get_logger("pgflow").log(
                record.levelno, "driver_log", logger_name=record.name, message=record.getMessage()
            )
        except Exception:  # logging must never raise
            self.handleError(record)


def stderr_unless_configured() -> None:
    """Point structlog's output at standard error when nobody configured structlog yet.

    Its default prints to standard output, which belongs to the program's own results (a
    command's table, a script's JSON). Only the output stream is set; structlog's default
    processors stay, and a later ``structlog.configure`` (or :func:`configure_logging`) wins.
    """
    if not structlog.is_configured():
        structlog.configure(logger_factory=_LineWriterFactory(None))


def get_logger(name: str = "pgflow") -> FilteringBoundLogger:
    """A structlog logger; loggers other than ``pgflow`` carry ``logger_name``.

    >>> get_logger().info("workflow_claimed", workflow_id="w1", queue="payments")  # doctest: +SKIP
    """
    stderr_unless_configured()
    extra = {} if name == "pgflow" else {"logger_name": name}
    logger: FilteringBoundLogger = structlog.get_logger(name, **extra)
    return logger
