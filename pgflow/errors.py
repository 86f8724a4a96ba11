"""The one pgflow error tree.

Every error pgflow raises derives from :class:`PgflowError`, except the two signals that must not
be swallowed by a user's ``except Exception``: cancellation and fencing derive from
``BaseException`` so that they unwind a workflow whatever its body catches.
"""

from __future__ import annotations


class PgflowError(Exception):
    """Base class of every pgflow error."""


class ConfigurationError(PgflowError):
    """A setting is missing or invalid; the message names the setting and the fix."""


class InvalidValue(ConfigurationError, ValueError):
    """A value given to a start or an enqueue (an id, key, priority, timeout, delay...) is out
    of what the database can store and claim; the message says what and the allowed range."""


class DatabaseError(PgflowError):
    """The database refused or failed an operation (translated from psycopg)."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached. The message names the host, never the password."""


class ConnectionRejected(DatabaseError):
    """The server refused a process's first connection for a reason waiting will not fix: a
    wrong password, an unknown database or role, no pg_hba.conf entry. Raised at once, not
    retried; the message gives the server's reason and the host, never the password."""


class SchemaNotMigrated(DatabaseError):
    """pgflow's tables are missing or older than this version: run ``pgflow migrate``."""


class PermissionDenied(DatabaseError):
    """The database role lacks a privilege pgflow needs."""


class TransactionControlError(PgflowError):
    """An ``@app.transaction`` body tried to end, or returned with an aborted, transaction.

    pgflow commits the body together with its checkpoint; the body must not commit, roll back
    or begin (savepoints are fine)."""


class SerializationError(PgflowError, TypeError):
    """A value cannot be stored: the message names the argument or step and the fix."""


class Deduplicated(PgflowError):
    """An active workflow already holds this deduplication id on this queue.

    ``existing_workflow_id`` is the id of that workflow.
    """

    def __init__(self, queue: str, dedup_id: str, existing_workflow_id: str | None) -> None:
        self.queue = queue
        self.dedup_id = dedup_id
        self.existing_workflow_id = existing_workflow_id
        super().__init__(
            f"queue {queue!r} already has an active workflow with dedup_id {dedup_id!r} "
            f"({existing_workflow_id}); wait for it to finish or use another dedup_id"
        )


class UnknownWorkflow(PgflowError, LookupError):
    """No workflow has this id."""


class WorkflowConflict(PgflowError):
    """A workflow id already names a workflow of another function: one id is one execution.

    ``existing_name`` is the function recorded under ``workflow_id``; ``requested_name`` the one
    that was started or enqueued with the same id.
    """

    def __init__(self, workflow_id: str, existing_name: str, requested_name: str) -> None:
        self.workflow_id = workflow_id
        self.existing_name = existing_name
        self.requested_name = requested_name
        super().__init__(
            f"workflow id {workflow_id!r} already belongs to a workflow of {existing_name!r}, "
            f"not {requested_name!r}; start {requested_name!r} under another workflow id"
        )


class UnregisteredFunction(PgflowError, LookupError):
    """A workflow or step name is not registered in this application."""


class NonDeterminism(PgflowError):
    """Replay met a different step than the one recorded at the same position."""


class WorkflowFailed(PgflowError):
    """A recorded error whose own type cannot be rebuilt in this process.

    ``handle.result()`` of a workflow that ended in ERROR raises the workflow's own exception
    when its class is importable here (already imported, an ``Exception``, rebuildable from
    its recorded args); otherwise, and when no error was recorded, it raises this. A recorded
    step error replayed under the same conditions raises it too.

    ``error_type`` is the original type's dotted name, ``message`` its text,
    ``traceback_text`` the traceback formatted where it was raised (or ``None``) and
    ``workflow_id`` the failed workflow (``None`` when read outside a result, e.g. a step's
    record).

    >>> try:
    ...     handle.result()
    ... except pgflow.WorkflowFailed as exc:
    ...     print(exc.error_type, exc.message)
    """

    def __init__(
        self,
        error_type: str,
        message: str,
        traceback_text: str | None = None,
        workflow_id: str | None = None,
    ) -> None:
        self.error_type = error_type
        self.message = message
        self.traceback_text = traceback_text
        self.workflow_id = workflow_id
        text = f"{error_type}: {message}"
        super().__init__(
            text if workflow_id is None else f"workflow {workflow_id} failed with {text}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.error_type, self.message, self.traceback_text, self.workflow_id))


class MaxRecoveryAttemptsExceeded(PgflowError):
    """A workflow crashed its process more often than its ``max_recovery_attempts``."""

    def __init__(self, workflow_id: str, max_recovery_attempts: int | None = None) -> None:
        self.workflow_id = workflow_id
        self.max_recovery_attempts = max_recovery_attempts
        limit = f" of {max_recovery_attempts}" if max_recovery_attempts is not None else ""
        super().__init__(
            f"workflow {workflow_id} exceeded its maximum{limit} recovery attempts "
            "(it was running each time its process died); fix the cause, then "
            "`pgflow workflows resume` it"
        )


class WorkflowTimeout(PgflowError, TimeoutError):
    """Waiting for a result took longer than the caller's timeout (the workflow goes on)."""


class StepTimeLimitExceeded(PgflowError):
    """An attempt of a step ran past its ``time_limit`` and was abandoned.

    An ordinary step error: the step's retries apply, and the workflow may catch it."""


class WorkflowCancelled(BaseException):
    """Raised inside a workflow (and to its waiters) once it is cancelled or past its deadline.

    Derives from ``BaseException`` so a workflow's ``except Exception`` does not swallow it.
    """

    def __init__(self, workflow_id: str, reason: str = "cancelled") -> None:
        self.workflow_id = workflow_id
        self.reason = reason
        super().__init__(f"workflow {workflow_id} was {reason}")


class WorkflowParked(BaseException):
    """A queued workflow went back to its queue to sleep (its thread is free for other work).

    Not an error: the worker writes no outcome, and the workflow is claimed again, from its
    checkpoints, at its wake-up time. Derives from ``BaseException`` so it unwinds the body.
    """

    def __init__(self, workflow_id: str, seconds: float) -> None:
        self.workflow_id = workflow_id
        self.seconds = seconds
        super().__init__(f"workflow {workflow_id} sleeps {seconds:.0f}s back on its queue")


class FencedOut(BaseException):
    """This process no longer owns the workflow (it was adopted elsewhere): abandon it.

    Derives from ``BaseException``: nothing in user code may catch it and go on writing.
    """

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        super().__init__(
            f"workflow {workflow_id} is now owned by another executor; this run was abandoned"
        )
