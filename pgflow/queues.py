"""Queue and Rate value objects and their validation (no I/O: the App does the enqueueing)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .app import App
    from .workflows import WorkflowHandle

MAX_NAME = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_name(kind: str, value: str, *, limit: int = MAX_NAME) -> str:
    """Queue names, partition keys, dedup ids and workflow ids: text without NUL or control
    characters, at most ``limit`` characters. Anything else is a clear error, never SQL's."""
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{kind} must be a non-empty string, not {value!r}")
    if len(value) > limit:
        raise ConfigurationError(f"{kind} is {len(value)} characters long; the limit is {limit}")
    if _CONTROL.search(value):
        raise ConfigurationError(f"{kind} {value[:40]!r} contains a control or NUL character")
    return value


@dataclass(frozen=True)
class Rate:
    """At most ``limit`` workflow starts in any window of ``per`` seconds."""

    limit: int
    per: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.limit, int) or self.limit < 1:
            raise ConfigurationError(f"Rate limit must be a positive integer, not {self.limit!r}")
        if not (isinstance(self.per, (int, float)) and math.isfinite(self.per) and self.per > 0):
            raise ConfigurationError(f"Rate per= must be a positive number of seconds, "
                                     f"not {self.per!r}")

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


@dataclass(frozen=True)
class Queue:
    """A named queue with its flow control. Create with ``app.queue(...)``."""

    name: str
    concurrency: int | None = None
    worker_concurrency: int | None = None
    rate_limit: Rate | None = None
    priority: bool = False
    partitioned: bool = False
    app: App | None = field(default=None, compare=False, repr=False)
    opts: EnqueueOptions = field(default_factory=EnqueueOptions, compare=False, repr=False)

    def __post_init__(self) -> None:
        validate_name("queue name", self.name)
        for label, value in (("concurrency", self.concurrency),
                             ("worker_concurrency", self.worker_concurrency)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigurationError(f"queue {self.name!r}: {label} must be a positive "
                                         f"integer or None, not {value!r}")
        if self.rate_limit is not None and not isinstance(self.rate_limit, Rate):
            raise ConfigurationError(f"queue {self.name!r}: rate_limit must be pgflow.Rate(...)")

    def options(self, *, workflow_id: str | None = None, dedup_id: str | None = None,
                priority: int | None = None, partition_key: str | None = None,
                delay: float | None = None, timeout: float | None = None) -> Queue:
        """The same queue with options for the next enqueue, e.g.
        ``payments.options(dedup_id="order-7", delay=30).enqueue(checkout, 7)``."""
        opts = EnqueueOptions(workflow_id, dedup_id, priority, partition_key, delay, timeout)
        self.check_options(opts)
        return replace(self, opts=opts)

    def check_options(self, opts: EnqueueOptions) -> None:
        if opts.workflow_id is not None:
            validate_name("workflow_id", opts.workflow_id, limit=1000)
        if opts.dedup_id is not None:
            validate_name("dedup_id", opts.dedup_id, limit=1000)
        if opts.priority is not None:
            if not self.priority:
                raise ConfigurationError(
                    f"queue {self.name!r} was not declared with priority=True; "
                    "declare it so, or drop priority=")
            if not isinstance(opts.priority, int) or not -2**31 < opts.priority < 2**31:
                raise ConfigurationError(f"priority must be a 32-bit integer, not "
                                         f"{opts.priority!r}")
        if self.partitioned and opts.partition_key is None:
            # No claim would ever take a keyless row of a partitioned queue.
            raise ConfigurationError(
                f"queue {self.name!r} is partitioned: enqueue with "
                ".options(partition_key=...)")
        if opts.partition_key is not None:
            if not self.partitioned:
                raise ConfigurationError(
                    f"queue {self.name!r} is not partitioned; declare it partitioned=True "
                    "or drop partition_key=")
            validate_name("partition_key", opts.partition_key)
        for label, value in (("delay", opts.delay), ("timeout", opts.timeout)):
            if value is not None and not (isinstance(value, (int, float))
                                          and math.isfinite(value) and value >= 0):
                raise ConfigurationError(f"{label} must be a non-negative number of seconds")

    def _bound(self) -> App:
        """The App to enqueue through; refuses a partitioned queue's keyless enqueue (the
        queue's own options, unlike those from .options(), were never checked)."""
        if self.app is None:
            raise ConfigurationError(f"queue {self.name!r} is not bound to an App; "
                                     "create it with app.queue(...)")
        if self.partitioned and self.opts.partition_key is None:
            self.check_options(self.opts)  # raises, saying how to give the key
        return self.app

    def enqueue(self, fn: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> WorkflowHandle:
        """Queue ``fn(*args, **kwargs)`` for a worker; returns its handle at once."""
        return self._bound()._enqueue(self, self.opts, fn, args, kwargs)

    def enqueue_many(self, fn: Callable[..., Any] | str,
                     calls: Iterable[Sequence[Any] | dict[str, Any]]) -> list[WorkflowHandle]:
        """Queue many calls of ``fn`` in one round trip. Each item is a tuple/list of positional
        arguments or a dict of keyword arguments."""
        return self._bound()._enqueue_many(self, self.opts, fn, list(calls))
