"""What the database can store and claim: the one check of every value a start or an enqueue
accepts (App, Queue, Client, CLI, enqueue_many, schedules), made before any row is built.

A value past these limits would fail in PostgreSQL (text with NUL, an index entry too large, an
int4 or interval overflow), in the middle of an enqueue or, worse, at every later claim of the
row. The claim itself is guarded in the database too (``{schema}.claim_deadline``, migration
0007), for rows written by an older client or by hand.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import InvalidValue

# Workflow ids, dedup ids, partition keys, workflow names: indexed text. A B-tree entry holds at
# most about 2,700 bytes, shared with the other columns of the index.
MAX_ID_BYTES = 1000
# Queue names, message topics, event keys.
MAX_NAME_BYTES = 200
# Timeouts and delays: 100 years. PostgreSQL's interval and timestamptz overflow around
# 290,000 years; the claim clamps to the same 100 years (migration 0007).
MAX_SECONDS = 100 * 365.25 * 86400
MAX_INT4 = 2**31 - 1
# PostgreSQL refuses a text value over 1 GB; a row holds inputs plus the other columns.
MAX_PAYLOAD_BYTES = 512 * 1024 * 1024


def check_text(kind: str, value: Any, *, limit: int = MAX_NAME_BYTES) -> str:
    """Text PostgreSQL can store and index: non-empty, not only spaces, no NUL or control
    characters, valid Unicode, at most ``limit`` bytes in UTF-8."""
    if not isinstance(value, str) or not value:
        raise InvalidValue(f"{kind} must be a non-empty string, not {value!r}")
    if value.isspace():
        raise InvalidValue(f"{kind} {value!r} is only whitespace; give it visible characters")
    if any(c < " " or c == "\x7f" for c in value):
        raise InvalidValue(
            f"{kind} {value[:40]!r} contains a control or NUL character, which "
            "PostgreSQL text cannot hold or would show garbled; remove it"
        )
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidValue(
            f"{kind} {value[:40]!r} is not valid Unicode (a lone surrogate); pass proper text"
        ) from None
    if size > limit:
        raise InvalidValue(
            f"{kind} is {size:,} bytes long in UTF-8; the limit is {limit:,} "
            f"bytes ({limit:,} ASCII characters)"
        )
    return value


def check_id(kind: str, value: Any) -> str:
    """A workflow id, dedup id or partition key: :func:`check_text` up to 1,000 bytes."""
    return check_text(kind, value, limit=MAX_ID_BYTES)


def check_seconds(kind: str, value: Any) -> float | None:
    """A timeout or delay: None, or a finite number of seconds from 0 to 100 years."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidValue(f"{kind} must be a number of seconds or None, not {value!r}")
    if not math.isfinite(value) or not 0 <= value <= MAX_SECONDS:
        raise InvalidValue(
            f"{kind} must be between 0 and {MAX_SECONDS:,.0f} seconds (100 years), not {value!r}"
        )
    return float(value)


def check_time_limit(kind: str, value: Any) -> float | None:
    """A step's ``time_limit``: None (no limit), or a finite number of seconds above 0 and
    at most 100 years (0 would fail every attempt; NaN or infinity would never fire)."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 < value <= MAX_SECONDS
    ):
        raise InvalidValue(
            f"{kind} must be a number of seconds above 0 and at most "
            f"{MAX_SECONDS:,.0f} (100 years), or None for no limit; "
            f"not {value!r}"
        )
    return float(value)


def to_ms(kind: str, seconds: Any) -> int | None:
    """A checked timeout or delay as whole milliseconds, as the rows store them."""
    checked = check_seconds(kind, seconds)
    return None if checked is None else math.ceil(checked * 1000)


def check_priority(value: Any) -> int:
    """A queue priority: an int from 0 (the default, first) to 2**31 - 1; lower runs first."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT4:
        raise InvalidValue(
            f"priority must be an integer from 0 to {MAX_INT4:,} (lower runs first), not {value!r}"
        )
    return value


def check_count(kind: str, value: Any, *, minimum: int = 0) -> int | None:
    """An optional integer the rows store as int4 (e.g. ``max_recovery_attempts``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_INT4:
        raise InvalidValue(
            f"{kind} must be an integer from {minimum} to {MAX_INT4:,} or None, not {value!r}"
        )
    return value


def check_payload_limit(value: Any) -> int:
    """``max_payload_bytes``: what one text column may hold, with room for the row."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PAYLOAD_BYTES:
        raise InvalidValue(
            f"max_payload_bytes (PGFLOW_MAX_PAYLOAD_BYTES) must be from 1 to "
            f"{MAX_PAYLOAD_BYTES:,} bytes, not {value!r}"
        )
    return value


def validate_name(kind: str, value: str, *, limit: int = MAX_NAME_BYTES) -> str:
    """Queue names, partition keys, dedup ids and workflow ids: see :func:`check_text`
    (text PostgreSQL can store and index, at most ``limit`` bytes). Anything else is a clear
    error, never SQL's."""
    return check_text(kind, value, limit=limit)
