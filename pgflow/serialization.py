"""Turn workflow inputs, step outputs and errors into database text, and back.

Two serializers: ``json`` (the default) round-trips the common Python value types exactly through
a tagged JSON form; ``pickle`` (opt-in) stores anything picklable but trusts every writer of the
database, because unpickling runs code. Errors are always recorded as JSON so any reader can show
them, and are rebuilt as their own type only from classes the reader has already imported.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import enum
import json
import math
import pickle
import sys
import traceback
import types
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from functools import partial
from typing import Any, Protocol
from uuid import UUID
from zoneinfo import ZoneInfo

from pgflow.errors import ConfigurationError, SerializationError, WorkflowFailed
from pgflow.redaction import redact, redact_value

__all__ = [
    "JSON",
    "PICKLE",
    "RecordedError",
    "Serializer",
    "dumps_error",
    "dumps_inputs",
    "dumps_value",
    "get_serializer",
    "loads_error",
    "loads_inputs",
    "loads_value",
    "serializer_for_row",
]


class Serializer(Protocol):
    """Turns one value into text and back; ``name`` is stored beside the text."""

    name: str

    def dumps(self, value: Any) -> str: ...

    def loads(self, text: str) -> Any: ...


class TypeCodec(Protocol):
    """The classes an app registered for the JSON serializer (pgflow.serialization_types)."""

    def type_fields(self, value: Any) -> tuple[str, dict[str, Any]] | None:
        """``(registered name, fields)`` of an instance of a registered class, else None."""


# Set only while an app's own JSON serializer encodes: what its registered types are.
_APP_TYPES: contextvars.ContextVar[TypeCodec | None] = contextvars.ContextVar(
    "pgflow_app_types", default=None
)


class _Refused(Exception):
    """A value cannot be stored. ``path`` collects keys and indexes, innermost first."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix
        self.path: list[Any] = []


# --- JSON ------------------------------------------------------------------------------------

_TAG = "__pgflow__"
_SCALARS = frozenset({str, int, float, bool, type(None)})
# Longer ints are written as tagged hex: decimal text past sys.get_int_max_str_digits() (640 at
# the lowest) cannot be parsed back, hex has no such limit.
_LONG_INT_BITS = 2000
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_ASCII = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)
_MICROSECOND = timedelta(microseconds=1)
_NUL_FIX = "PostgreSQL text cannot store NUL; remove it, or pass the data as bytes"


def _encode(value: Any, careful: bool) -> Any:
    """Return ``value`` in JSON-ready form: the very same object when nothing had to change.

    The fast pass (``careful=False``) leaves NaN, NUL and long ints to the JSON encoder, which
    fails on them; the caller then redoes the walk carefully to tag or locate them.
    """
    kind = type(value)
    if kind in _SCALARS:
        return _check_scalar(value) if careful else value
    if kind is list:
        return _encode_items(value, careful)
    if kind is dict:
        return _encode_dict(value, careful)
    if kind is tuple:
        return {_TAG: "tuple", "v": _encode_items(value, careful)}
    tagger = _TAGGERS.get(kind)
    if tagger is not None:
        return tagger(value)
    types = _APP_TYPES.get()
    found = None if types is None else types.type_fields(value)
    if found is not None:
        return {_TAG: "type", "t": found[0], "v": _encode_dict(found[1], careful)}
    raise _Refused(*_explain(value))


def _check_scalar(value: Any) -> Any:
    kind = type(value)
    if kind is str:
        if "\x00" in value:
            raise _Refused("is a string containing a NUL character (\\x00)", _NUL_FIX)
    elif kind is float:
        if not math.isfinite(value):
            raise _Refused(
                f"is the float {value!r}",
                "JSON has no NaN or Infinity; pass None, a string or a Decimal",
            )
    elif kind is int and value.bit_length() > _LONG_INT_BITS:
        return {_TAG: "int", "v": hex(value)}
    return value


def _encode_items(items: list[Any] | tuple[Any, ...], careful: bool) -> Any:
    out: list[Any] | None = None
    for index, item in enumerate(items):
        if not careful and type(item) in _SCALARS:
            continue  # the common case, checked inline to save a call per item
        try:
            encoded = _encode(item, careful)
        except _Refused as refused:
            refused.path.append(index)
            raise
        if encoded is not item:
            if out is None:
                out = list(items)
            out[index] = encoded
    return items if out is None else out


def _encode_dict(mapping: dict[Any, Any], careful: bool) -> Any:
    out: dict[str, Any] | None = None
    for key, item in mapping.items():
        if type(key) is not str:
            raise _Refused(
                f"is a dict with a key of type {type(key).__qualname__}",
                "JSON object keys are strings; convert the keys with str(), "
                "or pass a list of (key, value) pairs",
            )
        if careful and "\x00" in key:
            raise _Refused("is a dict with a key containing a NUL character (\\x00)", _NUL_FIX)
        if not careful and type(item) in _SCALARS:
            continue
        try:
            encoded = _encode(item, careful)
        except _Refused as refused:
            refused.path.append(key)
            raise
        if encoded is not item:
            if out is None:
                out = dict(mapping)
            out[key] = encoded
    result = mapping if out is None else out
    if _TAG in mapping:
        # A user's own "__pgflow__" key would read back as a tag: store such a dict as pairs.
        return {_TAG: "dict", "v": [[key, item] for key, item in result.items()]}
    return result


def _explain(value: Any) -> tuple[str, str]:
    """Say what ``value`` is and how to pass it instead, without showing the value itself."""
    kind = type(value)
    name = kind.__qualname__
    if isinstance(value, (set, frozenset)):
        return f"is a {name}", "sets are not JSON; pass a sorted list"
    if isinstance(
        value, (types.FunctionType, types.BuiltinFunctionType, types.MethodType, partial)
    ):
        label = getattr(value, "__qualname__", name)
        return (
            f"is a function ({label})",
            "functions cannot be stored; pass the data it needs, or a name to look it up by",
        )
    if isinstance(value, type):
        return (
            f"is a class ({value.__qualname__})",
            "classes cannot be stored; pass a name to look it up by",
        )
    for base in (bool, int, float, str, list, tuple, dict, *_TAGGERS):
        if isinstance(value, base):
            # An enum or other subclass would come back as its plain base: refuse rather than
            # change its type silently.
            plain = base.__name__
            how = "value.value" if isinstance(value, enum.Enum) else f"{plain}(value)"
            return f"is a {name} (a subclass of {plain})", f"pass a plain {plain}: {how}"
    return (
        f"is a {kind.__module__}.{name} object",
        "it has no JSON form; register its class (a dataclass or pydantic model) with "
        "app.register_type(Class), or pass its fields as a dict "
        "(e.g. dataclasses.asdict(value) or model.model_dump())",
    )


def _tag_clock(tag: str, value: datetime | time) -> dict[str, Any]:
    # The offset goes apart from the ISO text: fromisoformat() reads a sub-second offset such
    # as +00:00:00.000007 back as UTC.
    record: dict[str, Any] = {_TAG: tag, "v": value.replace(tzinfo=None).isoformat()}
    zone = value.tzinfo
    if isinstance(zone, ZoneInfo) and zone.key is not None:
        # Keep the zone by name: an offset alone would lose its daylight-saving rules.
        record["tz"] = zone.key
    elif zone is not None:
        offset = value.utcoffset()
        if offset is not None:
            record["off"] = offset // _MICROSECOND
            name = zone.tzname(None) if isinstance(zone, timezone) else None
            if name is not None and name != timezone(offset).tzname(None):
                record["name"] = name
    if value.fold:
        record["fold"] = 1
    return record


def _tag_bytes(value: bytes | bytearray) -> dict[str, Any]:
    return {_TAG: "bytes", "v": base64.b64encode(value).decode("ascii")}


_TAGGERS: dict[type, Callable[[Any], Any]] = {
    bytes: _tag_bytes,
    bytearray: _tag_bytes,
    datetime: partial(_tag_clock, "datetime"),
    time: partial(_tag_clock, "time"),
    date: lambda value: {_TAG: "date", "v": value.isoformat()},
    timedelta: lambda value: {
        _TAG: "timedelta",
        "v": [value.days, value.seconds, value.microseconds],
    },
    Decimal: lambda value: {_TAG: "decimal", "v": str(value)},
    UUID: lambda value: {_TAG: "uuid", "v": str(value)},
}


def _untag_clock(parse: Callable[[str], Any], record: dict[str, Any]) -> Any:
    value = parse(record["v"])
    if "tz" in record:
        value = value.replace(tzinfo=ZoneInfo(record["tz"]))
    elif "off" in record:
        offset = timedelta(microseconds=record["off"])
        name = record.get("name")
        zone = timezone(offset) if name is None else timezone(offset, name)
        value = value.replace(tzinfo=zone)
    if record.get("fold"):
        value = value.replace(fold=1)
    return value


_UNTAGGERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "tuple": lambda record: tuple(record["v"]),
    "dict": lambda record: dict(record["v"]),
    "int": lambda record: int(record["v"], 16),
    "bytes": lambda record: base64.b64decode(record["v"], validate=True),
    "datetime": partial(_untag_clock, datetime.fromisoformat),
    "time": partial(_untag_clock, time.fromisoformat),
    "date": lambda record: date.fromisoformat(record["v"]),
    "timedelta": lambda record: timedelta(*record["v"]),
    "decimal": lambda record: Decimal(record["v"]),
    "uuid": lambda record: UUID(record["v"]),
    # A registered class, read without the app that registered it (a Client, the CLI): its
    # fields, and its name under "__type__" (no class named by a row is ever imported).
    "type": lambda record: {"__type__": record["t"], **record["v"]},
}


def _untag(record: dict[str, Any]) -> Any:
    tag = record.get(_TAG)
    if tag is None:
        return record
    untagger = _UNTAGGERS.get(tag)
    if untagger is None:
        raise SerializationError(
            f"stored JSON has an unknown type tag {tag!r}; it was probably written by a newer "
            "pgflow: upgrade this one"
        )
    return untagger(record)


_DECODER = json.JSONDecoder(object_hook=_untag)


class _JsonSerializer:
    """The default serializer: tagged JSON, exact for the common value types, safe to read."""

    name = "json"

    def dumps(self, value: Any) -> str:
        try:
            return self.encode(value)[0]
        except _Refused as refused:
            raise _refusal(self, "value", refused) from None

    def loads(self, text: str) -> Any:
        try:
            return _DECODER.decode(text)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(
                f"a stored value is not valid pgflow JSON ({type(exc).__name__}: {exc})"
            ) from exc

    def encode(self, value: Any) -> tuple[str, int]:
        """Return the text and its size in UTF-8 bytes; raise ``_Refused`` with its location."""
        try:
            data = _encode(value, careful=False)
            try:
                text = _COMPACT.encode(data)
            except ValueError:
                # NaN, Infinity or an int too long for decimal text: find it and deal with it.
                data = _encode(value, careful=True)
                text = _COMPACT.encode(data)
            else:
                if "\\u0000" in text:
                    # A NUL, or a literal backslash-u0000: the careful walk tells them apart.
                    data = _encode(value, careful=True)
                    text = _COMPACT.encode(data)
        except RecursionError:
            raise _Refused(
                "is nested too deeply, or contains itself", "pass a flatter value without cycles"
            ) from None
        if text.isascii():
            return text, len(text)
        try:
            return text, len(text.encode("utf-8"))
        except UnicodeEncodeError:
            # Lone surrogates are not UTF-8; escaped as \udXXX they are, and still round-trip.
            text = _ASCII.encode(data)
            return text, len(text)

    def __repr__(self) -> str:
        return "pgflow.serialization.JSON"


# --- pickle ----------------------------------------------------------------------------------


class _PickleSerializer:
    """The opt-in serializer: base64 of pickle protocol 5. Reading it runs the writer's code."""

    name = "pickle"

    def dumps(self, value: Any) -> str:
        try:
            return self.encode(value)[0]
        except _Refused as refused:
            raise _refusal(self, "value", refused) from None

    def loads(self, text: str) -> Any:
        try:
            return pickle.loads(base64.b64decode(text, validate=True))
        except Exception as exc:
            raise SerializationError(
                f"cannot unpickle a stored value ({type(exc).__name__}: {exc}); the classes it "
                "refers to must be importable here under the same names"
            ) from exc

    def encode(self, value: Any) -> tuple[str, int]:
        """Return the text and its size in bytes; raise ``_Refused`` when pickle fails."""
        try:
            raw = pickle.dumps(value, protocol=5)
        except RecursionError:
            raise _Refused(
                "is nested too deeply, or contains itself", "pass a flatter value without cycles"
            ) from None
        except Exception as exc:
            raise _Refused(
                f"cannot be pickled ({type(exc).__name__}: {exc})",
                "pass values pickle can store: module-level functions and classes, "
                "no locks, open files, sockets or connections",
            ) from None
        text = base64.b64encode(raw).decode("ascii")
        return text, len(text)

    def __repr__(self) -> str:
        return "pgflow.serialization.PICKLE"


JSON: Serializer = _JsonSerializer()
PICKLE: Serializer = _PickleSerializer()

_ADVICE = {"json": "Pass JSON-friendly values, or opt in with App(serializer='pickle')."}


def get_serializer(name: str) -> Serializer:
    """Return the serializer called ``name``: ``"json"`` or ``"pickle"``."""
    if name == "json":
        return JSON
    if name == "pickle":
        return PICKLE
    raise ConfigurationError(
        f"serializer must be 'json' or 'pickle', not {name!r}; set App(serializer=...) "
        "or PGFLOW_SERIALIZER"
    )


def _encode_with(serializer: Serializer, value: Any) -> tuple[str, int]:
    if isinstance(serializer, (_JsonSerializer, _PickleSerializer)):
        return serializer.encode(value)
    try:
        text = serializer.dumps(value)
    except Exception as exc:
        raise _Refused(f"cannot be serialized ({type(exc).__name__}: {exc})", "") from None
    return text, len(text.encode("utf-8", "surrogatepass"))


def _refusal(serializer: Serializer, subject: str, refused: _Refused) -> SerializationError:
    location = "".join(f"[{step!r}]" for step in reversed(refused.path))
    where = f"the value at {location}" if location else "it"
    parts = [
        f"cannot serialize {subject} with the {serializer.name} serializer: "
        f"{where} {refused.problem}"
    ]
    if refused.fix:
        parts[0] += f": {refused.fix}."
    else:
        parts[0] += "."
    if serializer.name in _ADVICE:
        parts.append(_ADVICE[serializer.name])
    return SerializationError(" ".join(parts))


def _check_size(size: int, max_bytes: int, subject: str) -> None:
    if size > max_bytes:
        raise SerializationError(
            f"{subject} is too large: {size:,} bytes once serialized, over the limit of "
            f"{max_bytes:,} (max_payload_bytes, PGFLOW_MAX_PAYLOAD_BYTES); store large data "
            "elsewhere and pass a reference to it (a key, path or URL)"
        )


def _argument(group: str, key: Any) -> str:
    if group == "args":
        return f"positional argument {key + 1} (args[{key}])"
    return f"keyword argument {key!r}"


def dumps_inputs(
    serializer: Serializer,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    max_bytes: int,
    what: str = "workflow",
) -> str:
    """Serialize a call's arguments as ``{"args": [...], "kwargs": {...}}``.

    A refusal names the argument, e.g. ``what="workflow 'checkout'"`` gives "cannot serialize
    positional argument 2 (args[1]) of workflow 'checkout' with the json serializer: ...".
    """
    try:
        text, size = _encode_with(serializer, {"args": list(args), "kwargs": kwargs})
    except _Refused as refused:
        raise _inputs_refusal(serializer, args, kwargs, refused, what) from None
    _check_size(size, max_bytes, f"inputs of {what}")
    return text


def _inputs_refusal(
    serializer: Serializer,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    refused: _Refused,
    what: str,
) -> SerializationError:
    path = refused.path
    if len(path) >= 2 and path[-1] in ("args", "kwargs"):
        subject = _argument(path[-1], path[-2])
        del path[-2:]
        return _refusal(serializer, f"{subject} of {what}", refused)
    # Pickle does not say which part failed: serialize the arguments one by one to find it.
    candidates: list[tuple[str, Any, Any]] = [
        ("args", index, arg) for index, arg in enumerate(args)
    ]
    candidates += [("kwargs", key, arg) for key, arg in kwargs.items()]
    for group, key, arg in candidates:
        try:
            _encode_with(serializer, arg)
        except _Refused as culprit:
            return _refusal(serializer, f"{_argument(group, key)} of {what}", culprit)
    return _refusal(serializer, f"inputs of {what}", refused)


def loads_inputs(serializer: Serializer, text: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Read back what :func:`dumps_inputs` wrote, as ``(args, kwargs)``.

    ``serializer`` must be the one the row was written with; pick it with
    :func:`serializer_for_row` so that a JSON app never unpickles.
    """
    data = serializer.loads(text)
    if isinstance(data, dict):
        args, kwargs = data.get("args"), data.get("kwargs")
        if isinstance(args, (list, tuple)) and isinstance(kwargs, dict):
            return tuple(args), kwargs
    raise SerializationError("stored inputs are not an {args, kwargs} record; the row is corrupt")


def dumps_value(serializer: Serializer, value: Any, *, max_bytes: int, what: str) -> str:
    """Serialize one value (a step output, a message, an event); errors name ``what``."""
    try:
        text, size = _encode_with(serializer, value)
    except _Refused as refused:
        raise _refusal(serializer, what, refused) from None
    _check_size(size, max_bytes, what)
    return text


def serializer_for_row(configured: Serializer, row_serializer: str) -> Serializer:
    """Return the serializer that reads a row written with ``row_serializer``.

    A JSON row is always readable. A pickle row is refused unless this app opted into pickle,
    since unpickling text from the database runs whatever code its writer chose.
    """
    if row_serializer == "json":
        return configured if configured.name == "json" else JSON
    if row_serializer == "pickle":
        if configured.name == "pickle":
            return PICKLE
        raise SerializationError(
            "this row was written with the pickle serializer but this app is configured for "
            "JSON, and pgflow refuses to unpickle it: unpickling data from the database can run "
            "arbitrary code. To read it, opt in with App(serializer='pickle') (or "
            "PGFLOW_SERIALIZER=pickle) if you trust every writer of this database."
        )
    raise SerializationError(
        f"this row was written with an unknown serializer {row_serializer!r}; it was probably "
        "written by a newer pgflow: upgrade this one"
    )


def loads_value(configured: Serializer, row_serializer: str, text: str | None) -> Any:
    """Read back a value stored by :func:`dumps_value`; ``None`` (no value) stays ``None``."""
    if text is None:
        return None
    return serializer_for_row(configured, row_serializer).loads(text)


# --- errors ----------------------------------------------------------------------------------

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
        return _encode(value, careful=True)
    except Exception:  # _Refused, RecursionError, or a hostile object's own failure
        return _UNENCODABLE


def dumps_error(exc: BaseException) -> str:
    """Record ``exc`` as JSON: type, module, message, args, public attributes and traceback,
    without passwords (:mod:`pgflow.redaction`).

    Never fails: args that are not JSON are recorded as ``null``, unreadable parts as text.
    """
    try:
        return _record_error(exc)
    except Exception:  # a truly hostile exception object: record what is certain
        return _ASCII.encode(
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
    return _ASCII.encode(record)


def loads_error(text: str) -> BaseException:
    """Rebuild an error recorded by :func:`dumps_error`, or a :class:`~pgflow.WorkflowFailed`
    for it.

    The original type is used only when its module is already imported here (importing a name
    read from the database could run any code), it is an ``Exception`` (or a pgflow signal),
    and it can be rebuilt from the recorded args.
    """
    try:
        record = _DECODER.decode(text)
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
