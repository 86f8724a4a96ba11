"""Durations as operators type them: ``90s``, ``15m``, ``12h``, ``30d``, ``2w``, a sum of
those (``1d12h``), or a plain number of seconds (``3600``, ``1.5``). One parser for every
option that takes one (``--older-than``, the ``retention`` setting)."""

from __future__ import annotations

import math
import re

from .errors import InvalidValue
from .limits import MAX_SECONDS

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")


def parse_duration(text: str | float, *, what: str = "duration") -> float:
    """Seconds in ``text``; InvalidValue (a ConfigurationError) saying what is accepted.

    >>> parse_duration("1d12h")
    129600.0
    >>> parse_duration("90")
    90.0
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    elif isinstance(text, str):
        raw = text.strip().lower().replace(" ", "")
        try:
            seconds = float(raw)
        except ValueError:
            if not _WHOLE.fullmatch(raw):
                raise InvalidValue(
                    f"{what} {text!r} is not a duration: give seconds (3600) or a number with "
                    "a unit, s, m, h, d or w (90s, 15m, 12h, 30d, 1d12h)"
                ) from None
            seconds = sum(float(n) * UNITS[unit] for n, unit in _PART.findall(raw))
    else:
        raise InvalidValue(f"{what} must be a duration such as '30d', not {text!r}")
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_SECONDS:
        raise InvalidValue(f"{what} {text!r} must be between 0 and 100 years")
    return seconds


def format_duration(seconds: float) -> str:
    """The largest whole unit that fits: 2592000 -> '30d', 90 -> '90s'."""
    for unit in ("w", "d", "h", "m"):
        if seconds >= UNITS[unit] and seconds % UNITS[unit] == 0:
            return f"{int(seconds // UNITS[unit])}{unit}"
    return f"{seconds:g}s"
