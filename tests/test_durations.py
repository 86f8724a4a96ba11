"""The one duration parser of ``--older-than`` and the ``retention`` setting."""

from __future__ import annotations

import pytest

from pgflow.durations import format_duration, parse_duration
from pgflow.errors import ConfigurationError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("15m", 900.0),
        ("12h", 43200.0),
        ("30d", 2592000.0),
        ("2w", 1209600.0),
        ("1d12h", 129600.0),
        ("1.5h", 5400.0),
        ("3600", 3600.0),
        ("0.5", 0.5),
        (" 7D ", 604800.0),
        ("0s", 0.0),
        (120, 120.0),
        (1.5, 1.5),
    ],
)
def test_accepted(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "d", "30x", "-5", "-1d", "1d-2h", "nan", "inf", "30 days", "1y", "h12", "1e400"]
)
def test_refused_with_what_to_type(text: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_duration(text, what="--older-than")
    message = str(caught.value)
    assert "--older-than" in message
    assert "30d" in message or "between 0 and 100 years" in message


def test_format_picks_the_largest_whole_unit() -> None:
    assert [format_duration(s) for s in (2592000, 90, 3600, 5400, 1.5, 1209600)] == [
        "30d",
        "90s",
        "1h",
        "90m",
        "1.5s",
        "2w",
    ]
