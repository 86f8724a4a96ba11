"""Context variables for the running workflow: its id, owner, attempt and next step number."""

from __future__ import annotations

import contextvars
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from .errors import PgflowError

if TYPE_CHECKING:
    import psycopg

    from .runtime import Runtime


@dataclass
class RecordedStep:
    """A checkpoint loaded at the start of a replay."""

    name: str
    output: str | None
    error: str | None
    child_workflow_id: str | None


@dataclass
class WorkflowContext:
    """What a running workflow's steps need to checkpoint themselves."""

    rt: Runtime
    workflow_id: str
    name: str
    executor_id: str
    attempt: int
    # The token of the claim (or adoption, or inline start) this run holds: every write is
    # fenced by it. Random per claim, so not even a claim the server forgot can be repeated.
    fence: UUID | None
    serializer_name: str  # the row's; the object is rt.serializer
    recorded: dict[int, RecordedStep] = field(default_factory=dict)
    deadline_monotonic: float | None = None
    deadline: datetime | None = None  # the database's deadline (children inherit it)
    queue_name: str | None = None  # set when a worker claimed it from a queue
    next_step: int = 1
    in_step: bool = False
    # The attempt the running step is on (recorded with its checkpoint; None outside a step).
    step_attempts: int | None = None
    # Set when this workflow may have been cancelled since the last look (a NOTIFY about it
    # came); ``listening``: the process's LISTEN connection is up, so one would come. Without
    # both, each step looks in the database before its body runs (checkpoints.ensure_not_cancelled).
    cancel_hint: threading.Event | None = None
    listening: threading.Event | None = None

    def take_step_id(self) -> int:
        step_id = self.next_step
        self.next_step += 1
        return step_id

    def seconds_left(self) -> float | None:
        if self.deadline_monotonic is None:
            return None
        return self.deadline_monotonic - time.monotonic()


_current: contextvars.ContextVar[WorkflowContext | None] = contextvars.ContextVar(
    "pgflow_workflow", default=None
)
_transaction: contextvars.ContextVar[psycopg.Cursor[Any] | None] = contextvars.ContextVar(
    "pgflow_transaction", default=None
)


def current() -> WorkflowContext | None:
    """The running workflow's context, or None outside a workflow."""
    return _current.get()


def enter(ctx: WorkflowContext | None) -> contextvars.Token[WorkflowContext | None]:
    return _current.set(ctx)


def leave(token: contextvars.Token[WorkflowContext | None]) -> None:
    _current.reset(token)


def enter_transaction(cur: psycopg.Cursor[Any] | None) -> contextvars.Token[Any]:
    return _transaction.set(cur)


def leave_transaction(token: contextvars.Token[Any]) -> None:
    _transaction.reset(token)


def in_transaction() -> bool:
    return _transaction.get() is not None


def workflow_id() -> str:
    """The id of the workflow this code runs in (raises outside a workflow)."""
    ctx = _current.get()
    if ctx is None:
        raise PgflowError("pgflow.workflow_id() was called outside a workflow")
    return ctx.workflow_id


def db() -> psycopg.Cursor[Any]:
    """A cursor on the running ``@app.transaction`` step's transaction.

    Its work commits together with the step's checkpoint, exactly once.
    """
    cur = _transaction.get()
    if cur is None:
        raise PgflowError(
            "pgflow.db() is only available inside a function decorated with @app.transaction"
        )
    return cur
