"""Plain records: workflow states, workflow status rows and step records handed to users; the
claimed row a run starts from and the outcome it ends with."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


class Status(str, enum.Enum):
    """A workflow's state. The last four are terminal."""

    ENQUEUED = "ENQUEUED"
    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"
    MAX_RECOVERY_ATTEMPTS_EXCEEDED = "MAX_RECOVERY_ATTEMPTS_EXCEEDED"

    @property
    def terminal(self) -> bool:
        return self not in (Status.ENQUEUED, Status.PENDING)

    def __str__(self) -> str:
        return self.value


TERMINAL_STATUSES = tuple(s.value for s in Status if s.terminal)


@dataclass(frozen=True)
class WorkflowStatus:
    """One workflow as recorded in Postgres (``inputs``/``output``/``error`` decoded)."""

    workflow_id: str
    name: str
    status: Status
    queue_name: str | None
    dedup_id: str | None
    priority: int
    partition_key: str | None
    parent_workflow_id: str | None
    executor_id: str | None
    app_version: str | None
    recovery_attempts: int
    inputs: Any
    output: Any
    error: Any
    created_at: datetime
    started_at: datetime | None
    updated_at: datetime
    deadline: datetime | None
    max_recovery_attempts: int | None = None
    attempt: int = 0
    forked_from: str | None = None


@dataclass(frozen=True)
class StepRecord:
    """One recorded step of a workflow."""

    step_id: int
    name: str
    output: Any
    error: Any
    child_workflow_id: str | None
    started_at: datetime | None
    completed_at: datetime | None
    attempts: int | None = None  # attempts a retried step made (None: not a step run)


@dataclass(frozen=True)
class Claimed:
    """A workflow row an executor has just come to own (started, claimed or adopted).

    ``executor_id`` is the owner it was taken under: the run writes as that owner to its end,
    whatever executor the App holds by then."""

    workflow_id: str
    name: str
    serializer_name: str  # the row's (rows may predate the app's serializer setting)
    inputs: str
    attempt: int
    fence: UUID | None = None
    executor_id: str | None = None
    recovery_attempts: int = 0
    deadline: datetime | None = None
    db_now: datetime | None = None
    forked_from: str | None = None
    queue_name: str | None = None
    trace_context: str | None = None  # tracing: the enqueuer's context, carried by the row

    @classmethod
    def from_row(cls, row: dict[str, Any], executor_id: str | None = None) -> Claimed:
        return cls(
            workflow_id=row["workflow_id"],
            name=row["name"],
            serializer_name=row["serializer"],
            inputs=row["inputs"],
            attempt=row["attempt"],
            fence=row.get("fence"),
            executor_id=executor_id or row.get("executor_id"),
            recovery_attempts=row.get("recovery_attempts", 0),
            deadline=row.get("deadline"),
            db_now=row.get("db_now"),
            forked_from=row.get("forked_from"),
            queue_name=row.get("queue_name"),
            trace_context=row.get("trace_context"),
        )


@dataclass(frozen=True)
class Outcome:
    """How one run ended, for the final write (as ``executor_id``, the run's owner)."""

    workflow_id: str
    fence: UUID | None
    status: Status
    output: str | None = None
    error: str | None = None
    executor_id: str | None = None
    # For the metrics: what ran, where from, and for how long (seconds of this run).
    name: str = ""
    queue_name: str | None = None
    seconds: float | None = None
