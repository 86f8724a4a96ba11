"""Text for the CLI: aligned tables for people, JSON for scripts (no I/O here).

Every string shown goes through :func:`pgflow.redaction.redact`, whoever recorded it.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from .redaction import MASK, SECRET_KEYS, redact
from .serialization import recorded_traceback


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns, two spaces apart; ``None`` shows as ``-``."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """``label  value`` lines, labels aligned."""
    width = max((len(label) for label, _ in pairs), default=0)
    return "\n".join(f"{label.ljust(width)}  {cell(value)}" for label, value in pairs)


def cell(value: Any, limit: int = 80) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return when(value)
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, BaseException):
        text = error_text(value)
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(jsonable(value), ensure_ascii=False, default=str)
    text = " ".join(redact(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_text(exc: BaseException) -> str:
    """``Type: message`` (a recorded error of a type not imported here names its own type)."""
    if hasattr(exc, "error_type"):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def when(value: datetime) -> str:
    """A time in UTC to the second."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    """``850ms``, ``12.3s``, ``4m05s``, ``2h03m``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def jsonable(value: Any) -> Any:
    """Records, enums, times and errors as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, BaseException):
        trace = recorded_traceback(value)
        return {
            "type": getattr(value, "error_type", type(value).__name__),
            "message": redact(str(getattr(value, "message", str(value)))),
            "traceback": None if trace is None else redact(trace),
        }
    if isinstance(value, dict):
        return {
            str(k): MASK if str(k).lower() in SECRET_KEYS and v is not None else jsonable(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact(str(value))


def to_json(value: Any) -> str:
    return json.dumps(jsonable(value), indent=2, ensure_ascii=False)
