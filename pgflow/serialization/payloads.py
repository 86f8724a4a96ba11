"""What a workflow's inputs, a step's output, a message or an event become in the database:
the serialized text, checked against the size limit, with refusals that name the argument.
"""

from __future__ import annotations

from typing import Any

from pgflow.errors import SerializationError

from .codec import Refused
from .serializers import Serializer, encode_with, refusal, serializer_for_row


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
        text, size = encode_with(serializer, {"args": list(args), "kwargs": kwargs})
    except Refused as refused:
        raise _inputs_refusal(serializer, args, kwargs, refused, what) from None
    _check_size(size, max_bytes, f"inputs of {what}")
    return text


def _inputs_refusal(
    serializer: Serializer,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    refused: Refused,
    what: str,
) -> SerializationError:
    path = refused.path
    if len(path) >= 2 and path[-1] in ("args", "kwargs"):
        subject = _argument(path[-1], path[-2])
        del path[-2:]
        return refusal(serializer, f"{subject} of {what}", refused)
    # Pickle does not say which part failed: serialize the arguments one by one to find it.
    candidates: list[tuple[str, Any, Any]] = [
        ("args", index, arg) for index, arg in enumerate(args)
    ]
    candidates += [("kwargs", key, arg) for key, arg in kwargs.items()]
    for group, key, arg in candidates:
        try:
            encode_with(serializer, arg)
        except Refused as culprit:
            return refusal(serializer, f"{_argument(group, key)} of {what}", culprit)
    return refusal(serializer, f"inputs of {what}", refused)


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
        text, size = encode_with(serializer, value)
    except Refused as refused:
        raise refusal(serializer, what, refused) from None
    _check_size(size, max_bytes, what)
    return text


def loads_value(configured: Serializer, row_serializer: str, text: str | None) -> Any:
    """Read back a value stored by :func:`dumps_value`; ``None`` (no value) stays ``None``."""
    if text is None:
        return None
    return serializer_for_row(configured, row_serializer).loads(text)
