"""The tagged JSON form: Python values to JSON-ready data and back.

Values JSON has no type for (tuples, bytes, datetimes, decimals, UUIDs, long ints, registered
classes, dicts with a ``"__pgflow__"`` key) are written as ``{"__pgflow__": tag, ...}`` records
and read back as their own type. A value with no form raises :class:`Refused`, which says where
it is and what to pass instead; the serializers turn that into the user's error.
"""

from __future__ import annotations

import base64
import contextvars
import enum
import json
import math
import types
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from functools import partial
from typing import Any, Protocol
from uuid import UUID
from zoneinfo import ZoneInfo

from pgflow.errors import SerializationError


class TypeCodec(Protocol):
    """The classes an app registered for the JSON serializer (pgflow.serialization_types)."""

    def type_fields(self, value: Any) -> tuple[str, dict[str, Any]] | None:
        """``(registered name, fields)`` of an instance of a registered class, else None."""


# Set only while an app's own JSON serializer encodes: what its registered types are.
APP_TYPES: contextvars.ContextVar[TypeCodec | None] = contextvars.ContextVar(
    "pgflow_app_types", default=None
)


class Refused(Exception):
    """A value cannot be stored. ``path`` collects keys and indexes, innermost first."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix
        self.path: list[Any] = []


TAG = "__pgflow__"
_SCALARS = frozenset({str, int, float, bool, type(None)})
# Longer ints are written as tagged hex: decimal text past sys.get_int_max_str_digits() (640 at
# the lowest) cannot be parsed back, hex has no such limit.
_LONG_INT_BITS = 2000
COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
ASCII = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)
_MICROSECOND = timedelta(microseconds=1)
_NUL_FIX = "PostgreSQL text cannot store NUL; remove it, or pass the data as bytes"


def to_json_ready(value: Any, careful: bool) -> Any:
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
        return {TAG: "tuple", "v": _encode_items(value, careful)}
    tagger = _TAGGERS.get(kind)
    if tagger is not None:
        return tagger(value)
    types = APP_TYPES.get()
    found = None if types is None else types.type_fields(value)
    if found is not None:
        return {TAG: "type", "t": found[0], "v": _encode_dict(found[1], careful)}
    raise Refused(*_explain(value))


def _check_scalar(value: Any) -> Any:
    kind = type(value)
    if kind is str:
        if "\x00" in value:
            raise Refused("is a string containing a NUL character (\\x00)", _NUL_FIX)
    elif kind is float:
        if not math.isfinite(value):
            raise Refused(
                f"is the float {value!r}",
                "JSON has no NaN or Infinity; pass None, a string or a Decimal",
            )
    elif kind is int and value.bit_length() > _LONG_INT_BITS:
        return {TAG: "int", "v": hex(value)}
    return value


def _encode_items(items: list[Any] | tuple[Any, ...], careful: bool) -> Any:
    out: list[Any] | None = None
    for index, item in enumerate(items):
        if not careful and type(item) in _SCALARS:
            continue  # the common case, checked inline to save a call per item
        try:
            encoded = to_json_ready(item, careful)
        except Refused as refused:
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
            raise Refused(
                f"is a dict with a key of type {type(key).__qualname__}",
                "JSON object keys are strings; convert the keys with str(), "
                "or pass a list of (key, value) pairs",
            )
        if careful and "\x00" in key:
            raise Refused("is a dict with a key containing a NUL character (\\x00)", _NUL_FIX)
        if not careful and type(item) in _SCALARS:
            continue
        try:
            encoded = to_json_ready(item, careful)
        except Refused as refused:
            refused.path.append(key)
            raise
        if encoded is not item:
            if out is None:
                out = dict(mapping)
            out[key] = encoded
    result = mapping if out is None else out
    if TAG in mapping:
        # A user's own "__pgflow__" key would read back as a tag: store such a dict as pairs.
        return {TAG: "dict", "v": [[key, item] for key, item in result.items()]}
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
    record: dict[str, Any] = {TAG: tag, "v": value.replace(tzinfo=None).isoformat()}
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
    return {TAG: "bytes", "v": base64.b64encode(value).decode("ascii")}


_TAGGERS: dict[type, Callable[[Any], Any]] = {
    bytes: _tag_bytes,
    bytearray: _tag_bytes,
    datetime: partial(_tag_clock, "datetime"),
    time: partial(_tag_clock, "time"),
    date: lambda value: {TAG: "date", "v": value.isoformat()},
    timedelta: lambda value: {
        TAG: "timedelta",
        "v": [value.days, value.seconds, value.microseconds],
    },
    Decimal: lambda value: {TAG: "decimal", "v": str(value)},
    UUID: lambda value: {TAG: "uuid", "v": str(value)},
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


def untag(record: dict[str, Any]) -> Any:
    """The value a decoded JSON object stands for: itself, or the tagged type rebuilt."""
    tag = record.get(TAG)
    if tag is None:
        return record
    untagger = _UNTAGGERS.get(tag)
    if untagger is None:
        raise SerializationError(
            f"stored JSON has an unknown type tag {tag!r}; it was probably written by a newer "
            "pgflow: upgrade this one"
        )
    return untagger(record)


DECODER = json.JSONDecoder(object_hook=untag)
