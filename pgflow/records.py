"""Plain records handed to users: workflow states, workflow status rows and step records."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any


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
