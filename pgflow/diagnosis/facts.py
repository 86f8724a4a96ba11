"""The facts of one instant that :func:`pgflow.diagnosis.diagnose` reads (what
:mod:`pgflow.explain` gathers from the database), the :class:`Reason` it returns, and the
helpers every rule shares: times and spans in words, the version rule of the claim."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

# How many workflows a reason names (ids), at most; the numbers keep the full count.
NAMED = 5
SLEEP_STEP = "pgflow.sleep"


@dataclass(frozen=True)
class Reason:
    """One thing that holds a workflow back (or says where it is): ``code`` for scripts, a
    sentence for people, and the numbers in that sentence."""

    code: str
    text: str
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkflowFacts:
    workflow_id: str
    name: str
    status: str
    queue_name: str | None
    priority: int
    partition_key: str | None
    app_version: str | None
    executor_id: str | None
    started_at: datetime | None
    forked_from: str | None
    not_before: datetime | None
    updated_at: datetime
    completed_at: datetime | None


@dataclass(frozen=True)
class QueueFacts:
    """A queue's limits as its workers last declared them (``declared`` False: none did)."""

    name: str
    declared: bool
    concurrency: int | None = None
    worker_concurrency: int | None = None
    rate_limit: int | None = None
    rate_per_seconds: float | None = None
    priority_enabled: bool = False
    partitioned: bool = False
    strict_versions: bool = False
    paused_at: datetime | None = None  # set while an operator has paused the queue


@dataclass(frozen=True)
class Running:
    """A PENDING workflow holding a slot of the queue (or key)."""

    workflow_id: str
    executor_id: str | None
    started_at: datetime | None


@dataclass(frozen=True)
class ExecutorFacts:
    """An executor's row: ``alive`` by the heartbeat timeout; ``knows_name`` whether its
    version registered the workflow's name; ``running_here`` its PENDING workflows of the
    queue (of the key, on a partitioned queue)."""

    executor_id: str
    hostname: str
    pid: int
    app_version: str | None
    kind: str
    queues: tuple[str, ...]
    heartbeat_at: datetime
    alive: bool
    knows_name: bool
    running_here: int = 0


@dataclass(frozen=True)
class Checkpoint:
    """The latest checkpoint; ``wake_at`` the wake-up time a sleep recorded."""

    step_id: int
    name: str
    completed_at: datetime
    wake_at: datetime | None = None


@dataclass(frozen=True)
class RecvWait:
    """A ``recv`` that found no message and waits (recorded on the workflow's row): its step,
    its topic ('' for none), since when, and until when (its timeout)."""

    step_id: int
    topic: str
    since: datetime
    until: datetime | None = None


@dataclass(frozen=True)
class Facts:
    """Everything :func:`diagnose` reads, at one instant (``now``, the database's time)."""

    now: datetime
    heartbeat_timeout: float
    workflow: WorkflowFacts
    queue: QueueFacts | None = None
    running: tuple[Running, ...] = ()  # the first few, longest running first
    running_total: int = 0
    rate_used: int | None = None
    rate_next_slot: datetime | None = None
    executors: tuple[ExecutorFacts, ...] = ()
    higher_priority_ahead: int = 0
    earlier_ahead: int = 0
    last_checkpoint: Checkpoint | None = None
    messages: dict[str, int] = field(default_factory=dict)  # unread, by topic
    name_known: bool | None = None  # by some registered version (None: none registered)
    recv_wait: RecvWait | None = None


# -- text helpers ------------------------------------------------------------------------------


def at(value: datetime) -> str:
    """A time in UTC to the second."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def span(seconds: float) -> str:
    """``850ms``, ``12s``, ``4m05s``, ``2h03m``, ``3d04h``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    return f"{int(seconds // 86400)}d{int(seconds % 86400 // 3600):02d}h"


def elapsed(now: datetime, then: datetime | None) -> float:
    return 0.0 if then is None else (now - then).total_seconds()


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def versions_of(executors: list[ExecutorFacts]) -> list[str]:
    return sorted({e.app_version or "(none)" for e in executors})


def started(w: WorkflowFacts) -> bool:
    """Whether it has checkpoints of some version's code (then only that version runs it)."""
    return w.started_at is not None or w.forked_from is not None


def may_run(e: ExecutorFacts, w: WorkflowFacts, strict: bool) -> bool:
    """The version rule of the claim: a started row only on its own version; a never-started
    one on any version that knows its name, unless the queue is strict."""
    if w.app_version is None or e.app_version == w.app_version:
        return True
    return not strict and not started(w)
