"""Handles on workflows and waiting for their results.

A handle is an id and the Runtime to read it through; waiting polls the recorded outcome with a
growing pause (2 ms to 250 ms), cut short when a run of this process finishes.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from . import management, serialization
from .errors import (
    MaxRecoveryAttemptsExceeded,
    UnknownWorkflow,
    WorkflowCancelled,
    WorkflowFailed,
    WorkflowTimeout,
)
from .records import Status, WorkflowStatus

if TYPE_CHECKING:
    from .runtime import Runtime

R = TypeVar("R")


class WorkflowHandle(Generic[R]):
    """A started or enqueued workflow: its id, its status, and a way to wait for its result.

    ``WorkflowHandle[R]``: ``result()`` returns the workflow's ``R`` (its return type, when
    the handle came from the function itself; ``Any`` when from a name or an id)."""

    def __init__(self, rt: Runtime, workflow_id: str) -> None:
        self.rt = rt
        self.workflow_id = workflow_id

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.workflow_id!r})"

    def status(self) -> WorkflowStatus:
        """The workflow's current record (raises UnknownWorkflow if it does not exist)."""
        found = management.get_status(self.rt.db, self.rt.serializer, self.workflow_id)
        if found is None:
            raise UnknownWorkflow(f"no workflow has id {self.workflow_id!r}")
        return found

    def get_status(self) -> WorkflowStatus:
        """Deprecated old name of :meth:`status` (goes in the next release)."""
        warnings.warn(
            "WorkflowHandle.get_status() is deprecated and will be removed in the "
            "next release; use status()",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.status()

    def result(self, timeout: float | None = None) -> R:
        """Wait for the workflow to end; return its output or raise its error.

        A failed workflow raises its own exception, or WorkflowFailed when that exception's
        type cannot be rebuilt in this process. Raises WorkflowTimeout after ``timeout``
        seconds (the workflow goes on), MaxRecoveryAttemptsExceeded or WorkflowCancelled for
        those endings.
        """
        return cast(R, wait_result(self.rt, self.workflow_id, timeout))

    def get_result(self, timeout: float | None = None) -> R:
        """Deprecated old name of :meth:`result` (goes in the next release)."""
        warnings.warn(
            "WorkflowHandle.get_result() is deprecated and will be removed in the "
            "next release; use result()",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.result(timeout)


def outcome_value(rt: Runtime, workflow_id: str, row: dict[str, Any]) -> Any:
    status = Status(row["status"])
    if status is Status.SUCCESS:
        return serialization.loads_value(rt.serializer, row["serializer"], row["output"])
    if status is Status.ERROR:
        if not row["error"]:
            raise WorkflowFailed("unknown error", "no error was recorded", workflow_id=workflow_id)
        error = serialization.loads_error(row["error"])
        if isinstance(error, WorkflowFailed) and error.workflow_id is None:
            # Its own type could not be rebuilt here: say which workflow failed.
            error = WorkflowFailed(
                error.error_type, error.message, error.traceback_text, workflow_id=workflow_id
            )
        raise error
    if status is Status.CANCELLED:
        raise WorkflowCancelled(workflow_id)
    raise MaxRecoveryAttemptsExceeded(workflow_id, row.get("max_recovery_attempts"))


def wait_result(rt: Runtime, workflow_id: str, timeout: float | None) -> Any:
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.002
    while True:
        row = rt.db.retrying(
            lambda: rt.db.fetchone("get_workflow_outcome", {"workflow_id": workflow_id})
        )
        if row is None:
            raise UnknownWorkflow(f"no workflow has id {workflow_id!r}")
        if Status(row["status"]).terminal:
            return outcome_value(rt, workflow_id, row)
        if deadline is not None and time.monotonic() >= deadline:
            raise WorkflowTimeout(
                f"workflow {workflow_id} is still {row['status']} after {timeout}s"
            )
        wait = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
        rt.completions.wait(workflow_id, wait)
        delay = min(delay * 2, 0.25)
