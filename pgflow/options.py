"""The values a queue and an enqueue are declared with: ``Rate`` and ``EnqueueOptions``,
checked when made (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigurationError
from .limits import check_count, check_seconds


@dataclass(frozen=True)
class Rate:
    """At most ``limit`` workflow starts in any window of ``per`` seconds."""

    limit: int
    per: float = 1.0

    def __post_init__(self) -> None:
        # Claims compute the window in SQL: int4 counts and an interval that must not overflow.
        check_count("Rate limit", self.limit, minimum=1)
        if not check_seconds("Rate per=", self.per):
            raise ConfigurationError(
                f"Rate per= must be a positive number of seconds, not {self.per!r}"
            )

    def __str__(self) -> str:
        return f"{self.limit}/{self.per:g}s"


@dataclass(frozen=True)
class EnqueueOptions:
    """Per-enqueue options; see :meth:`Queue.options`."""

    workflow_id: str | None = None
    dedup_id: str | None = None
    priority: int | None = None
    partition_key: str | None = None
    delay: float | None = None
    timeout: float | None = None
