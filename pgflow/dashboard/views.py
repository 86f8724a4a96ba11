"""What the templates show, computed in Python: the list's filters parsed from a query string,
values as escaped text (passwords masked, long ones cut), times, recorded errors, and the
steps' timeline bars."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from markupsafe import Markup, escape

from ..records import Status
from ..redaction import redact, redact_value
from ..serialization import recorded_traceback
from . import reading

SHOW_CHARS = 2000  # longer values show their start, with the rest behind "show all"


def parse_filters(query: Any) -> tuple[reading.ListFilters, int | None]:
    """The list's filters from the query string (blank fields are no filter)."""

    def text(key: str) -> str | None:
        value = (query.get(key) or "").strip()
        return value or None

    def moment(key: str) -> datetime | None:
        value = text(key)
        if value is None:
            return None
        try:
            found = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{key}: {value!r} is not a date and time (YYYY-MM-DD or YYYY-MM-DDTHH:MM)"
            ) from None
        return found if found.tzinfo else found.replace(tzinfo=timezone.utc)

    statuses = [s for s in query.getlist("status") if s]
    unknown = [s for s in statuses if s not in Status.__members__]
    if unknown:
        raise ValueError(f"unknown status {unknown[0]!r}")
    before = text("before")
    if before is not None and not before.isdigit():
        raise ValueError("before must be a number")
    return reading.ListFilters(
        statuses=statuses or None,
        name=text("name"),
        queue_name=text("queue"),
        id_prefix=text("id"),
        dedup_id=text("dedup_id"),
        partition_key=text("partition_key"),
        created_after=moment("created_after"),
        created_before=moment("created_before"),
    ), None if before is None else int(before)


def shown(value: Any) -> Markup:
    """A value as escaped text (JSON where it can be, passwords masked); past SHOW_CHARS, its
    start with the whole behind a "show all" expander (plain HTML, no script)."""
    if isinstance(value, str):
        text = redact(value)
    else:
        try:
            text = json.dumps(redact_value(value), indent=2, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = redact(repr(value))
    if len(text) <= SHOW_CHARS:
        return Markup("<pre class=value>{}</pre>").format(text)
    return Markup(
        "<details class=value><summary><pre>{}…</pre>show all ({} characters)"
        "</summary><pre>{}</pre></details>"
    ).format(text[:SHOW_CHARS], f"{len(text):,}", escape(text))


def when(value: datetime | None) -> str:
    return (
        "-" if value is None else value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    )


def error_view(error: Any) -> dict[str, str] | None:
    if error is None:
        return None
    kind = getattr(error, "error_type", None) or type(error).__name__
    message = getattr(error, "message", None) if hasattr(error, "error_type") else str(error)
    return {
        "type": redact(str(kind)),
        "message": redact(str(message or "")),
        "traceback": redact(recorded_traceback(error) or ""),
    }


def timeline(w: Any, steps: list[Any]) -> list[dict[str, Any]]:
    """Each step's bar as offsets (0-100) within the workflow's span, for an inline SVG."""
    begin = w.started_at or w.created_at
    times = [s.completed_at for s in steps if s.completed_at] + [w.updated_at]
    end = max(times) if times else begin
    total = max((end - begin).total_seconds(), 1e-6)
    bars = []
    for s in steps:
        start = s.started_at or s.completed_at
        stop = s.completed_at or end
        if start is None:
            bars.append({"step": s, "x": 0.0, "width": 0.0, "seconds": None})
            continue
        x = min(max((start - begin).total_seconds() / total * 100, 0.0), 100.0)
        width = max(min((stop - start).total_seconds() / total * 100, 100.0 - x), 0.5)
        bars.append({"step": s, "x": x, "width": width, "seconds": (stop - start).total_seconds()})
    return bars
