"""Dataclasses and pydantic models through the JSON serializer, by explicit registration.

``app.register_type(Order)`` (or ``App(..., types=[Order])``) lets instances of ``Order`` be
workflow inputs, outputs, messages and events. They are stored as tagged JSON,
``{"__pgflow__": "type", "t": "shop.Order", "v": {fields}}``, and read back as ``Order`` only
by an app that registered that name: a class is never imported because a row names it.
Fields are encoded like any value (datetimes, nested registered types, ...). Subclasses are
not instances of a registered class here: register each class that crosses.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TypeVar

from .errors import ConfigurationError, SerializationError
from .serialization.codec import APP_TYPES, TAG, untag
from .serialization.serializers import JsonSerializer

T = TypeVar("T", bound=type)


def _is_pydantic(cls: type) -> bool:
    return callable(getattr(cls, "model_validate", None)) and callable(
        getattr(cls, "model_dump", None)
    )


class TypedJson(JsonSerializer):
    """pgflow's JSON serializer plus the classes one app registered."""

    def __init__(self) -> None:
        self._names: dict[type, str] = {}
        self._classes: dict[str, type] = {}
        self._decoder = json.JSONDecoder(object_hook=self._untag)

    def register(self, cls: type, name: str | None = None) -> None:
        """Let instances of ``cls`` (a dataclass or a pydantic model) cross as JSON, stored
        under ``name`` (default: ``module.QualifiedName``)."""
        if not isinstance(cls, type) or not (dataclasses.is_dataclass(cls) or _is_pydantic(cls)):
            raise ConfigurationError(
                f"{cls!r} cannot be registered: register_type takes a dataclass or a pydantic "
                "model class"
            )
        name = name or f"{cls.__module__}.{cls.__qualname__}"
        known = self._classes.get(name)
        if (known is not None and known is not cls) or self._names.get(cls, name) != name:
            raise ConfigurationError(
                f"type name {name!r} or class {cls.__qualname__} is registered twice "
                "differently; give one of them another name="
            )
        self._names[cls] = name
        self._classes[name] = cls

    @property
    def types(self) -> dict[str, type]:
        return dict(self._classes)

    def type_fields(self, value: Any) -> tuple[str, dict[str, Any]] | None:
        name = self._names.get(type(value))
        if name is None:
            return None
        if _is_pydantic(type(value)):
            return name, value.model_dump()
        return name, {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}

    def encode(self, value: Any) -> tuple[str, int]:
        token = APP_TYPES.set(self)
        try:
            return super().encode(value)
        finally:
            APP_TYPES.reset(token)

    def loads(self, text: str) -> Any:
        try:
            return self._decoder.decode(text)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(
                f"a stored value is not valid pgflow JSON ({type(exc).__name__}: {exc})"
            ) from exc

    def _untag(self, record: dict[str, Any]) -> Any:
        if record.get(TAG) != "type":
            return untag(record)
        name, fields = record.get("t"), record.get("v")
        cls = self._classes.get(name) if isinstance(name, str) else None
        if cls is None or not isinstance(fields, dict):
            raise SerializationError(
                f"a stored value is of type {name!r}, which this app does not register; "
                "register its class with app.register_type(...) (pgflow never imports a "
                "class named by the database)"
            )
        try:
            return _rebuild(cls, fields)
        except Exception as exc:
            raise SerializationError(
                f"cannot rebuild a stored {name!r} from its fields ({type(exc).__name__}: "
                f"{exc}); did the class change since it was stored?"
            ) from exc

    def __repr__(self) -> str:
        return f"pgflow.serialization_types.TypedJson({sorted(self._classes)})"


def _rebuild(cls: type, fields: dict[str, Any]) -> Any:
    if _is_pydantic(cls):
        return cls.model_validate(fields)  # type: ignore[attr-defined]
    declared = dataclasses.fields(cls)
    value = cls(**{f.name: fields[f.name] for f in declared if f.init and f.name in fields})
    for f in declared:
        if not f.init and f.name in fields:
            object.__setattr__(value, f.name, fields[f.name])
    return value
