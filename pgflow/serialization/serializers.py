"""The two serializers and the choice between them.

``json`` (the default) round-trips the common Python value types exactly through the tagged
JSON form (:mod:`.codec`); ``pickle`` (opt-in) stores anything picklable but trusts every writer
of the database, because unpickling runs code. ``serializer_for_row`` picks the one that may
read a stored row.
"""

from __future__ import annotations

import base64
import pickle
from typing import Any, Protocol

from pgflow.errors import ConfigurationError, SerializationError

from .codec import ASCII, COMPACT, DECODER, Refused, to_json_ready


class Serializer(Protocol):
    """Turns one value into text and back; ``name`` is stored beside the text."""

    name: str

    def dumps(self, value: Any) -> str: ...

    def loads(self, text: str) -> Any: ...


class JsonSerializer:
    """The default serializer: tagged JSON, exact for the common value types, safe to read."""

    name = "json"

    def dumps(self, value: Any) -> str:
        try:
            return self.encode(value)[0]
        except Refused as refused:
            raise refusal(self, "value", refused) from None

    def loads(self, text: str) -> Any:
        try:
            return DECODER.decode(text)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(
                f"a stored value is not valid pgflow JSON ({type(exc).__name__}: {exc})"
            ) from exc

    def encode(self, value: Any) -> tuple[str, int]:
        """Return the text and its size in UTF-8 bytes; raise ``Refused`` with its location."""
        try:
            data = to_json_ready(value, careful=False)
            try:
                text = COMPACT.encode(data)
            except ValueError:
                # NaN, Infinity or an int too long for decimal text: find it and deal with it.
                data = to_json_ready(value, careful=True)
                text = COMPACT.encode(data)
            else:
                if "\\u0000" in text:
                    # A NUL, or a literal backslash-u0000: the careful walk tells them apart.
                    data = to_json_ready(value, careful=True)
                    text = COMPACT.encode(data)
        except RecursionError:
            raise Refused(
                "is nested too deeply, or contains itself", "pass a flatter value without cycles"
            ) from None
        if text.isascii():
            return text, len(text)
        try:
            return text, len(text.encode("utf-8"))
        except UnicodeEncodeError:
            # Lone surrogates are not UTF-8; escaped as \udXXX they are, and still round-trip.
            text = ASCII.encode(data)
            return text, len(text)

    def __repr__(self) -> str:
        return "pgflow.serialization.JSON"


class PickleSerializer:
    """The opt-in serializer: base64 of pickle protocol 5. Reading it runs the writer's code."""

    name = "pickle"

    def dumps(self, value: Any) -> str:
        try:
            return self.encode(value)[0]
        except Refused as refused:
            raise refusal(self, "value", refused) from None

    def loads(self, text: str) -> Any:
        try:
            return pickle.loads(base64.b64decode(text, validate=True))
        except Exception as exc:
            raise SerializationError(
                f"cannot unpickle a stored value ({type(exc).__name__}: {exc}); the classes it "
                "refers to must be importable here under the same names"
            ) from exc

    def encode(self, value: Any) -> tuple[str, int]:
        """Return the text and its size in bytes; raise ``Refused`` when pickle fails."""
        try:
            raw = pickle.dumps(value, protocol=5)
        except RecursionError:
            raise Refused(
                "is nested too deeply, or contains itself", "pass a flatter value without cycles"
            ) from None
        except Exception as exc:
            raise Refused(
                f"cannot be pickled ({type(exc).__name__}: {exc})",
                "pass values pickle can store: module-level functions and classes, "
                "no locks, open files, sockets or connections",
            ) from None
        text = base64.b64encode(raw).decode("ascii")
        return text, len(text)

    def __repr__(self) -> str:
        return "pgflow.serialization.PICKLE"


JSON: Serializer = JsonSerializer()
PICKLE: Serializer = PickleSerializer()

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


def encode_with(serializer: Serializer, value: Any) -> tuple[str, int]:
    """The text of ``value`` and its size in bytes; any failure is ``Refused``."""
    if isinstance(serializer, (JsonSerializer, PickleSerializer)):
        return serializer.encode(value)
    try:
        text = serializer.dumps(value)
    except Exception as exc:
        raise Refused(f"cannot be serialized ({type(exc).__name__}: {exc})", "") from None
    return text, len(text.encode("utf-8", "surrogatepass"))


def refusal(serializer: Serializer, subject: str, refused: Refused) -> SerializationError:
    """The user's error for a refused value: what, where in it, and what to pass instead."""
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
