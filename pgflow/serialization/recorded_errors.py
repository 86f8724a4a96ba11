"""Errors as recorded in the database, and rebuilt from it.

Errors are always recorded as JSON so any reader can show them, whatever the app's serializer,
and are rebuilt as their own type only from classes the reader has already imported.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
import types
from typing import Any

from pgflow.errors import WorkflowFailed
from pgflow.redaction import redact, redact_value

from .codec import ASCII, DECODER, to_json_ready

# Cap on a recorded message and traceback: an error record must stay small, even for a
# RecursionError or an exception carrying a huge message.
_TEXT_LIMIT = 64 * 1024
_UNENCODABLE = object()


# The recorded error that cannot be rebuilt is the public pgflow.WorkflowFailed; this older
# name stays for code that imported it from here.
RecordedError = WorkflowFailed


def _clip(text: str) -> str:
    text = text.replace("\x00", "\\x00")
    if len(text) <= _TEXT_LIMIT:
        return text
    # Keep the end: it holds the innermost frames and the message.
    return f"[{len(text) - _TEXT_LIMIT:,} characters cut]\n{text[-_TEXT_LIMIT:]}"


def _jsonable(value: Any) -> Any:
    try:
        return to_json_ready(value, careful=True)
    except Exception:  # Refused, RecursionError, or a hostile object's own failure
        return _UNENCODABLE


def dumps_error(exc: BaseException) -> str:
    """Record ``exc`` as JSON: type, module, message, args, public attributes and traceback,
    without passwords (:mod:`pgflow.redaction`).

    Never fails: args that are not JSON are recorded as ``null``, unreadable parts as text.
    """
    try:
        return _record_error(exc)
    except Exception:  # a truly hostile exception object: record what is certain
        return ASCII.encode(
            {
                "type": "unknown error",
                "module": None,
                "message": "<the error could not be recorded>",
                "args": None,
                "traceback": "",
            }
        )


def _record_error(exc: BaseException) -> str:
    kind = type(exc)
    try:
        message = str(exc)
    except Exception:
        message = f"<{kind.__qualname__} whose str() failed>"
    try:
        formatted = "".join(traceback.format_exception(exc))
    except Exception:
        formatted = ""
    args = _jsonable(list(exc.args))
    record: dict[str, Any] = {
        "type": kind.__qualname__,
        "module": kind.__module__,
        # Redacted before clipping: a cut could leave a password without its "://".
        "message": _clip(redact(message)),
        "args": None if args is _UNENCODABLE else redact_value(args),
        "traceback": _clip(redact(formatted)),
    }
    try:  # a database error's SQLSTATE (psycopg's), shown with the recorded error
        sqlstate = getattr(exc, "sqlstate", None)
    except Exception:
        sqlstate = None
    if isinstance(sqlstate, str):
        record["sqlstate"] = sqlstate
    attrs = {}
    try:
        public = [
            (name, value)
            for name, value in vars(exc).items()
            if type(name) is str and not name.startswith("_")
        ]
    except Exception:
        public = []
    for name, value in public:
        encoded = _jsonable(value)
        if encoded is not _UNENCODABLE:
            attrs[name] = encoded
    if attrs:
        record["attrs"] = redact_value(attrs)
    # ASCII keeps odd characters (lone surrogates) in a form every reader can parse.
    return ASCII.encode(record)


def loads_error(text: str) -> BaseException:
    """Rebuild an error recorded by :func:`dumps_error`, or a :class:`~pgflow.WorkflowFailed`
    for it.

    The original type is used only when its module is already imported here (importing a name
    read from the database could run any code), it is an ``Exception`` (or a pgflow signal),
    and it can be rebuilt from the recorded args.
    """
    try:
        record = DECODER.decode(text)
    except Exception:
        record = None
    if not isinstance(record, dict):
        return WorkflowFailed("unknown error", _clip(str(text)))
    module_name, type_name = record.get("module"), record.get("type")
    attrs = record.get("attrs")
    rebuilt = _rebuild(
        _find_class(module_name, type_name),
        record.get("args"),
        attrs if isinstance(attrs, dict) else {},
    )
    if rebuilt is not None:
        formatted = record.get("traceback")
        if isinstance(formatted, str) and formatted:
            # (an exception type that takes no attributes goes without)
            with contextlib.suppress(Exception):
                rebuilt.__pgflow_traceback__ = formatted  # type: ignore[attr-defined]
        return rebuilt
    if module_name in (None, "builtins"):
        error_type = str(type_name)
    else:
        error_type = f"{module_name}.{type_name}"
    formatted = record.get("traceback")
    return WorkflowFailed(
        error_type,
        str(record.get("message", "")),
        formatted if isinstance(formatted, str) else None,
    )


def recorded_traceback(exc: BaseException) -> str | None:
    """The traceback recorded with an error read by :func:`loads_error` (None when none)."""
    found = (
        getattr(exc, "traceback_text", None)
        if isinstance(exc, WorkflowFailed)
        else getattr(exc, "__pgflow_traceback__", None)
    )
    return found if isinstance(found, str) and found else None


def _find_class(module_name: Any, type_name: Any) -> type[BaseException] | None:
    if not isinstance(module_name, str) or not isinstance(type_name, str):
        return None
    found: Any = sys.modules.get(module_name)
    for part in type_name.split("."):
        if not isinstance(found, (types.ModuleType, type)):
            return None
        # vars(), not getattr(): a module's __getattr__ could import or run code.
        found = vars(found).get(part)
    if not isinstance(found, type) or not issubclass(found, BaseException):
        return None
    # SystemExit, KeyboardInterrupt and the like would stop the process that reads them.
    if not issubclass(found, Exception) and found.__module__ != "pgflow.errors":
        return None
    return found


def _rebuild(
    cls: type[BaseException] | None, args: Any, attrs: dict[str, Any]
) -> BaseException | None:
    if cls is None or not isinstance(args, list):
        return None
    arguments = tuple(args)
    try:
        exc = cls(*arguments)
        if (
            type(exc) is cls
            and exc.args == arguments
            and all(getattr(exc, name, _UNENCODABLE) == value for name, value in attrs.items())
        ):
            return exc
    except Exception:
        pass
    # Its __init__ takes other parameters than its args (e.g. it formats a message from
    # them): restore args and attributes around __init__ instead.
    try:
        exc = cls.__new__(cls, *arguments)
        exc.args = arguments
        for name, value in attrs.items():
            setattr(exc, name, value)
    except Exception:
        return None
    return exc
