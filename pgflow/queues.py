"""Queues: ``Queue`` (its flow control, per-enqueue options and enqueueing through the Runtime
of the App that declared it), ``Rate`` and ``EnqueueOptions``, with their validation."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from . import enqueue as enqueueing
from .errors import ConfigurationError
from .limits import (
    MAX_INT4,
    MAX_NAME_BYTES,
    check_id,
    check_priority,
    check_seconds,
    validate_name,
)
from .options import EnqueueOptions, Rate

if TYPE_CHECKING:
    from .handles import WorkflowHandle
    from .runtime import Runtime

MAX_NAME = MAX_NAME_BYTES

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["MAX_NAME", "EnqueueOptions", "Queue", "Rate", "priority_flag", "validate_name"]


@dataclass(frozen=True)
class Queue:
    """A named queue with its flow control. Create with ``app.queue(...)``."""

    name: str
    concurrency: int | None = None
    worker_concurrency: int | None = None
    rate_limit: Rate | None = None
    # Whether enqueues may give .options(priority=N) (claims order by it).
    priority_enabled: bool = False
    partitioned: bool = False
    # Claim only rows of the worker's own version, even never-started ones (None: the app's
    # strict_versions setting).
    strict_versions: bool | None = None
    # The Runtime of the App that declared it (enqueues go through it).
    runtime: Runtime | None = field(default=None, compare=False, repr=False)
    opts: EnqueueOptions = field(default_factory=EnqueueOptions, compare=False, repr=False)

    def __post_init__(self) -> None:
        validate_name("queue name", self.name)
        for label, value in (
            ("concurrency", self.concurrency),
            ("worker_concurrency", self.worker_concurrency),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT4
            ):
                raise ConfigurationError(
                    f"queue {self.name!r}: {label} must be a positive "
                    f"integer or None, not {value!r}"
                )
        if self.rate_limit is not None and not isinstance(self.rate_limit, Rate):
            raise ConfigurationError(f"queue {self.name!r}: rate_limit must be pgflow.Rate(...)")

    def options(
        self,
        *,
        workflow_id: str | None = None,
        dedup_id: str | None = None,
        priority: int | None = None,
        partition_key: str | None = None,
        delay: float | None = None,
        timeout: float | None = None,
    ) -> Queue:
        """The same queue with options for the next enqueue, e.g.
        ``payments.options(dedup_id="order-7", delay=30).enqueue(checkout, 7)``."""
        opts = EnqueueOptions(workflow_id, dedup_id, priority, partition_key, delay, timeout)
        self.check_options(opts)
        return replace(self, opts=opts)

    def check_options(self, opts: EnqueueOptions) -> None:
        """Refuse options this queue cannot take, or values the database cannot store and
        claim (:mod:`pgflow.limits`)."""
        if opts.workflow_id is not None:
            check_id("workflow_id", opts.workflow_id)
        if opts.dedup_id is not None:
            check_id("dedup_id", opts.dedup_id)
        if opts.priority is not None:
            if not self.priority_enabled:
                raise ConfigurationError(
                    f"queue {self.name!r} was not declared with priority_enabled=True; "
                    "declare it so, or drop priority="
                )
            check_priority(opts.priority)
        if self.partitioned and opts.partition_key is None:
            # No claim would ever take a keyless row of a partitioned queue.
            raise ConfigurationError(
                f"queue {self.name!r} is partitioned: enqueue with .options(partition_key=...)"
            )
        if opts.partition_key is not None:
            if not self.partitioned:
                raise ConfigurationError(
                    f"queue {self.name!r} is not partitioned; declare it partitioned=True "
                    "or drop partition_key="
                )
            check_id("partition_key", opts.partition_key)
        check_seconds("delay", opts.delay)
        check_seconds("timeout", opts.timeout)

    def _bound(self) -> Runtime:
        """The Runtime to enqueue through; refuses a partitioned queue's keyless enqueue (the
        queue's own options, unlike those from .options(), were never checked)."""
        if self.runtime is None:
            raise ConfigurationError(
                f"queue {self.name!r} is not bound to an App; create it with app.queue(...)"
            )
        if self.partitioned and self.opts.partition_key is None:
            self.check_options(self.opts)  # raises, saying how to give the key
        return self.runtime

    @overload
    def enqueue(self, fn: str, /, *args: Any, **kwargs: Any) -> WorkflowHandle[Any]: ...
    @overload
    def enqueue(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> WorkflowHandle[R]: ...

    def enqueue(
        self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        """Queue ``fn(*args, **kwargs)`` for a worker; returns its handle at once.

        ``fn`` is the workflow function (a type checker then checks the arguments, and the
        handle's ``result()`` has the workflow's return type) or its registered name."""
        rt = self._bound()
        wf = rt.registry.resolve(fn)
        return enqueueing.enqueue(rt, self.name, self.opts, wf, args, kwargs)

    @overload
    def enqueue_many(
        self,
        fn: str,
        calls: Iterable[Sequence[Any] | dict[str, Any]],
    ) -> list[WorkflowHandle[Any]]: ...
    @overload
    def enqueue_many(
        self,
        fn: Callable[..., R],
        calls: Iterable[Sequence[Any] | dict[str, Any]],
    ) -> list[WorkflowHandle[R]]: ...

    def enqueue_many(
        self,
        fn: Callable[..., Any] | str,
        calls: Iterable[Sequence[Any] | dict[str, Any]],
    ) -> list[WorkflowHandle[Any]]:
        """Queue many calls of ``fn`` in one round trip. Each item is a tuple/list of positional
        arguments or a dict of keyword arguments."""
        rt = self._bound()
        wf = rt.registry.resolve(fn)
        return enqueueing.enqueue_many(rt, self.name, self.opts, wf, list(calls))


def priority_flag(queue: str, priority_enabled: bool | None, priority: bool | None) -> bool:
    """The queue's priority flag from ``priority_enabled=``, or from ``priority=``, its old
    name (deprecated: ``.options(priority=N)`` is the per-enqueue value)."""
    if priority is None:
        return bool(priority_enabled)
    if priority_enabled is not None:
        raise ConfigurationError(
            f"queue {queue!r}: give priority_enabled= only (priority= is its deprecated old name)"
        )
    warnings.warn(
        "app.queue(..., priority=) is deprecated and will be removed in the next "
        "release; use priority_enabled=",
        DeprecationWarning,
        stacklevel=3,
    )
    return bool(priority)
