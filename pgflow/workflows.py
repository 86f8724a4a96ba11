"""Start, run and finish workflows; children; handles; fencing of the final write."""

from __future__ import annotations

import os
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast
from uuid import UUID

import structlog

from . import context, management, metrics, serialization, tracing
from .context import RecordedStep, WorkflowContext
from .db.errors import is_id_taken
from .db.notify import message_channel, queue_channel
from .errors import (
    ConfigurationError,
    DatabaseUnavailable,
    Deduplicated,
    FencedOut,
    MaxRecoveryAttemptsExceeded,
    NonDeterminism,
    PgflowError,
    SerializationError,
    UnknownWorkflow,
    WorkflowCancelled,
    WorkflowConflict,
    WorkflowFailed,
    WorkflowParked,
    WorkflowTimeout,
)
from .limits import to_ms
from .records import Status, WorkflowStatus
from .registry import recovery_limit
from .steps import check_deadline, record_checkpoint

if TYPE_CHECKING:
    from .app import App
    from .db.pool import Database
    from .registry import WorkflowDef

log = structlog.get_logger("pgflow")

R = TypeVar("R")

# Seconds an interrupted run waits for the database to hand its workflow back (the interrupt
# should not wait out an outage; deregistration or expiry releases the workflow otherwise).
CRASH_HAND_BACK_PATIENCE = 5.0


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


# -- handles -----------------------------------------------------------------------------------


class WorkflowHandle(Generic[R]):
    """A started or enqueued workflow: its id, its status, and a way to wait for its result.

    ``WorkflowHandle[R]``: ``result()`` returns the workflow's ``R`` (its return type, when
    the handle came from the function itself; ``Any`` when from a name or an id)."""

    def __init__(self, app: App, workflow_id: str) -> None:
        self.app = app
        self.workflow_id = workflow_id

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.workflow_id!r})"

    def status(self) -> WorkflowStatus:
        """The workflow's current record (raises UnknownWorkflow if it does not exist)."""
        found = self.app.retrieve_status(self.workflow_id)
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
        return cast(R, wait_result(self.app, self.workflow_id, timeout))

    def get_result(self, timeout: float | None = None) -> R:
        """Deprecated old name of :meth:`result` (goes in the next release)."""
        warnings.warn(
            "WorkflowHandle.get_result() is deprecated and will be removed in the "
            "next release; use result()",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.result(timeout)


def outcome_value(app: App, workflow_id: str, row: dict[str, Any]) -> Any:
    status = Status(row["status"])
    if status is Status.SUCCESS:
        return serialization.loads_value(app.serializer, row["serializer"], row["output"])
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


def wait_result(app: App, workflow_id: str, timeout: float | None) -> Any:
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.002
    while True:
        row = app.db.retrying(
            lambda: app.db.fetchone("get_workflow_outcome", {"workflow_id": workflow_id})
        )
        if row is None:
            raise UnknownWorkflow(f"no workflow has id {workflow_id!r}")
        if Status(row["status"]).terminal:
            return outcome_value(app, workflow_id, row)
        if deadline is not None and time.monotonic() >= deadline:
            raise WorkflowTimeout(
                f"workflow {workflow_id} is still {row['status']} after {timeout}s"
            )
        wait = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
        app.completions.wait(workflow_id, wait)
        delay = min(delay * 2, 0.25)


class Completions:
    """In-process wake-ups for waiters of workflows that finish in this process."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    def wait(self, workflow_id: str, seconds: float) -> None:
        with self._cond:
            start = self._generation
            self._cond.wait_for(lambda: self._generation != start, timeout=seconds)

    def notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()


# -- starting ----------------------------------------------------------------------------------


def new_workflow_id() -> str:
    return str(uuid.uuid4())


def new_workflow_ids(n: int) -> list[str]:
    """``n`` random (version 4) UUIDs as text, from one read of the OS's random source.

    ``str(uuid.uuid4())`` per id cost 5 µs on the benchmark machine (a system call and a UUID
    object each), a fifth of enqueue_many's client time; this costs 1 µs per id.
    """
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = bytes([b & 0x0F | 0x40 for b in raw[6::16]])  # version 4
    raw[8::16] = bytes([b & 0x3F | 0x80 for b in raw[8::16]])  # RFC 4122 variant
    h = raw.hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-"
        f"{h[i + 20 : i + 32]}"
        for i in range(0, 32 * n, 32)
    ]


def start(
    app: App,
    wf: WorkflowDef,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    workflow_id: str | None = None,
    timeout: float | None = None,
    run: str = "thread",
) -> tuple[WorkflowHandle[Any], Any]:
    """Start ``wf`` durably. ``run`` is "inline" (this thread; the result is returned) or
    "thread" (a new thread). Inside a workflow the new one is its child, recorded as a step.

    Returns the handle and, for "inline", the result.
    """
    parent = context.current()
    if parent is not None and parent.in_step:
        parent = None  # a workflow called from inside a step is not a checkpointed child
    step_id = None
    if parent is not None:
        step_id = parent.take_step_id()
        rec = parent.recorded.get(step_id)
        if rec is not None:
            if rec.name != wf.name:
                raise NonDeterminism(
                    f"workflow {parent.workflow_id} ({parent.name}) recorded step {step_id} as "
                    f"{rec.name!r} but the code now starts workflow {wf.name!r} there"
                )
            workflow_id = rec.child_workflow_id or workflow_id
        check_deadline(parent)
        if workflow_id is None:
            workflow_id = f"{parent.workflow_id}-{step_id}"
    if workflow_id is None:
        workflow_id = new_workflow_id()
    inputs = serialization.dumps_inputs(
        app.serializer,
        args,
        kwargs,
        max_bytes=app.settings.max_payload_bytes,
        what=f"workflow {wf.name!r}",
    )
    if timeout is None:
        timeout = wf.timeout
    # A child's deadline is the sooner of its own timeout and its parent's deadline.
    deadline = parent.deadline if parent is not None else None
    # Read once: the run keeps this owner to its end (the App's may be replaced meanwhile).
    executor = app.executor
    executor.ensure_registered()
    executor_id = executor.executor_id
    fence = uuid.uuid4()
    carried = tracing.capture()  # tracing: the caller's span, the run's parent (here or adopted)
    params = {
        "workflow_id": workflow_id,
        "name": wf.name,
        "parent_workflow_id": parent.workflow_id if parent else None,
        "executor_id": executor_id,
        "app_version": app.app_version,
        "max_recovery_attempts": _max_attempts(app, wf),
        "serializer": app.serializer.name,
        "inputs": inputs,
        "timeout_ms": to_ms("timeout", timeout),
        "deadline": deadline,
        "fence": fence,
        "trace_context": carried,
    }
    tries = 0

    def insert() -> dict[str, Any] | None:
        nonlocal tries
        tries += 1
        found = app.db.fetchone("insert_workflow", params)
        if found is None and tries > 1:
            # A retry after a lost reply: the first INSERT may have landed, as ours (our fence
            # is on it only if nobody has claimed or adopted it since).
            mine = app.db.fetchone("get_workflow", {"workflow_id": workflow_id})
            if mine is not None and mine["status"] == "PENDING" and mine["fence"] == fence:
                return {"attempt": 1, "deadline": mine["deadline"], "db_now": None, "owned": True}
        return found

    row = app.db.retrying(insert)
    if row is None:
        check_same_function(app.db, workflow_id, wf.name)
    claimed: Claimed | None = None
    if row is not None and row["owned"]:
        claimed = Claimed(
            workflow_id=workflow_id,
            name=wf.name,
            serializer_name=app.serializer.name,
            inputs=inputs,
            attempt=row["attempt"],
            fence=fence,
            executor_id=executor_id,
            deadline=row["deadline"],
            db_now=row["db_now"],
            trace_context=carried,
        )
    if parent is not None and step_id is not None and step_id not in parent.recorded:
        _record_child(parent, step_id, wf.name, workflow_id)
    if claimed is None:
        claimed = try_adopt(app, workflow_id, executor_id)
    handle: WorkflowHandle[Any] = WorkflowHandle(app, workflow_id)
    if claimed is None:
        # Someone else runs it (or it is done): the handle waits on the recorded outcome.
        if run == "inline":
            return handle, handle.result()
        return handle, None
    if run == "inline":
        return handle, run_claimed(app, claimed, wf, args, kwargs, reraise=True)
    app.spawn(lambda: run_claimed(app, claimed, wf, args, kwargs))
    return handle, None


def check_same_function(db: Database, workflow_id: str, name: str) -> None:
    """An id already taken is the same execution only when it runs the same function; a
    different one raises WorkflowConflict (DBOS does the same) rather than hand back another
    function's result."""
    found = db.retrying(lambda: db.fetchone("workflow_name", {"workflow_id": workflow_id}))
    if found is not None and found["name"] != name:
        raise WorkflowConflict(workflow_id, found["name"], name)


def _record_child(parent: WorkflowContext, step_id: int, name: str, child_id: str) -> None:
    """Checkpoint a child in its parent. A parent cancelled meanwhile cancels the child it has
    just created too, so nothing of a cancelled tree runs on."""
    try:
        record_checkpoint(parent, step_id, name, child_workflow_id=child_id)
    except WorkflowCancelled:
        management.cancel_tree(parent.app.db, [child_id])
        raise


def try_adopt(app: App, workflow_id: str, executor_id: str) -> Claimed | None:
    """Take over an ownerless PENDING workflow of this version (after its owner died), as
    ``executor_id`` (a registered executor of this process)."""
    row = app.db.retrying(
        lambda: app.db.fetchone(
            "adopt_workflow",
            {
                "workflow_id": workflow_id,
                "executor_id": executor_id,
                "app_version": app.app_version,
            },
        )
    )
    if row is None:
        return None
    metrics.adopted(row.get("queue_name"), row["name"])
    return Claimed.from_row(row, executor_id)


def _max_attempts(app: App, wf: WorkflowDef) -> int | None:
    return recovery_limit(wf.max_recovery_attempts, app.settings.max_recovery_attempts)


# -- running -----------------------------------------------------------------------------------


def load_recorded(app: App, workflow_id: str) -> dict[int, RecordedStep]:
    rows = app.db.retrying(lambda: app.db.fetchall("list_steps", {"workflow_id": workflow_id}))
    return {
        r["step_id"]: RecordedStep(r["name"], r["output"], r["error"], r["child_workflow_id"])
        for r in rows
    }


def owner_of_run(claimed: Claimed) -> str:
    """The executor a run writes as: the one it was started, claimed or adopted under."""
    if claimed.executor_id is None:
        raise ValueError(f"workflow {claimed.workflow_id} was claimed without an executor id")
    return claimed.executor_id


def _outcome(
    claimed: Claimed,
    status: Status,
    *,
    output: str | None = None,
    error: str | None = None,
    started: float | None = None,
) -> Outcome:
    return Outcome(
        claimed.workflow_id,
        claimed.fence,
        status,
        output=output,
        error=error,
        executor_id=owner_of_run(claimed),
        name=claimed.name,
        queue_name=claimed.queue_name,
        seconds=None if started is None else time.monotonic() - started,
    )


def _failed(
    claimed: Claimed, status: Status, exc: BaseException, started: float | None = None
) -> Outcome:
    return _outcome(claimed, status, error=serialization.dumps_error(exc), started=started)


def make_context(app: App, claimed: Claimed) -> WorkflowContext:
    ctx = WorkflowContext(
        app=app,
        workflow_id=claimed.workflow_id,
        name=claimed.name,
        executor_id=owner_of_run(claimed),
        attempt=claimed.attempt,
        fence=claimed.fence,
        serializer_name=claimed.serializer_name,
        deadline=claimed.deadline,
        queue_name=claimed.queue_name,
    )
    if claimed.deadline is not None and claimed.db_now is not None:
        ctx.deadline_monotonic = (
            time.monotonic() + (claimed.deadline - claimed.db_now).total_seconds()
        )
    # A first run has no checkpoints; a recovered, re-claimed or forked one loads them once.
    if claimed.attempt > 1 or claimed.forked_from is not None:
        ctx.recorded = load_recorded(app, claimed.workflow_id)
    return ctx


def execute(
    app: App,
    claimed: Claimed,
    wf: WorkflowDef,
    args: tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    on_start: Callable[[WorkflowContext], None] | None = None,
) -> tuple[Outcome | None, Any, BaseException | None]:
    """Run the body. Returns the outcome to write (None when abandoned), the result, and the
    exception to give a caller. ``on_start`` sees the context (the worker's watchdog)."""
    if args is None or kwargs is None:
        try:
            args, kwargs = serialization.loads_inputs(
                _row_serializer(app, claimed.serializer_name), claimed.inputs
            )
        except SerializationError as exc:
            # Inputs this app will not read (a pickled row in a JSON app): it can never run
            # here, and left PENDING it would be stuck; it ends ERROR, saying why.
            log.warning("workflow_inputs_refused", workflow_id=claimed.workflow_id, error=str(exc))
            return _failed(claimed, Status.ERROR, exc), None, exc
    ctx = make_context(app, claimed)
    if on_start is not None:
        on_start(ctx)
    stop_watching = _watch_for_cancel(app, ctx)
    token = context.enter(ctx)
    structlog.contextvars.bind_contextvars(
        workflow_id=claimed.workflow_id, workflow_name=claimed.name
    )
    started = time.monotonic()
    log.info("workflow_started", queue=claimed.queue_name, attempt=claimed.attempt)
    try:
        check_deadline(ctx)
        result = tracing.run_workflow(claimed, wf.fn, args, kwargs)  # tracing: the run's span
        try:
            output = serialization.dumps_value(
                app.serializer,
                result,
                max_bytes=app.settings.max_payload_bytes,
                what=f"output of workflow {wf.name!r}",
            )
        except Exception as exc:  # an unserializable result fails the workflow, clearly
            _log_failed(exc, started)
            return _failed(claimed, Status.ERROR, exc, started), None, exc
        log.info("workflow_succeeded", duration_ms=_ms_since(started))
        return _outcome(claimed, Status.SUCCESS, output=output, started=started), result, None
    except FencedOut as exc:
        log.warning("workflow_fenced_out", reason="adopted by another executor")
        return None, None, exc
    except WorkflowParked as exc:
        log.info("workflow_parked", seconds=round(exc.seconds, 3))
        return None, None, exc
    except DatabaseUnavailable:
        # Not the workflow's failure: the caller hands it back for another run.
        raise
    except WorkflowCancelled as exc:
        if exc.reason != "cancelled":
            # Past its deadline: its children go with it (a cancel() did that already).
            management.cancel_tree(app.db, [claimed.workflow_id], include_roots=False)
        return _failed(claimed, Status.CANCELLED, exc, started), None, exc
    except Exception as exc:
        _log_failed(exc, started)
        return _failed(claimed, Status.ERROR, exc, started), None, exc
    finally:
        stop_watching()
        context.leave(token)
        structlog.contextvars.unbind_contextvars("workflow_id", "workflow_name")


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _log_failed(exc: BaseException, started: float) -> None:
    # At error level with its traceback (exc_info; the log processors redact passwords).
    log.error(
        "workflow_failed",
        error=f"{type(exc).__name__}: {exc}",
        duration_ms=_ms_since(started),
        exc_info=exc,
    )


def _watch_for_cancel(app: App, ctx: WorkflowContext) -> Callable[[], None]:
    """Watch for a NOTIFY about this workflow while it runs (a cancel sends one), so that each
    step's cancel check costs a round trip only when one came (steps.ensure_not_cancelled).
    Returns the call that ends the watch."""
    notes = app.notifications
    watch = notes.watch(message_channel(app.db.schema), ctx.workflow_id)
    hint = watch.__enter__()
    hint.set()  # a cancel may have come before the watch began: the first step looks
    ctx.cancel_hint, ctx.listening = hint, notes.connected

    def stop() -> None:
        watch.__exit__(None, None, None)

    return stop


def _row_serializer(app: App, name: str) -> serialization.Serializer:
    # Refuses a pickled row in a JSON-configured app, saying why.
    return serialization.serializer_for_row(app.serializer, name)


def finish(app: App, outcomes: list[Outcome], executor_id: str | None = None) -> set[str]:
    """Write final statuses, fenced, one statement per owner (each outcome's own
    ``executor_id``, else ``executor_id``); return the ids actually written."""
    by_owner: dict[str, list[Outcome]] = {}
    for o in outcomes:
        owner = o.executor_id or executor_id
        if owner is None:
            raise ValueError(f"the outcome of workflow {o.workflow_id} names no executor")
        by_owner.setdefault(owner, []).append(o)
    written: set[str] = set()
    for owner, batch in by_owner.items():
        params = {
            "executor_id": owner,
            "workflow_ids": [o.workflow_id for o in batch],
            "fences": [o.fence for o in batch],
            "statuses": [o.status.value for o in batch],
            "outputs": [o.output for o in batch],
            "errors": [o.error for o in batch],
        }
        written.update(r["workflow_id"] for r in _finish_batch(app, params))
    if outcomes:
        app.completions.notify()
        _count_finished(outcomes, written)
    return written


def _count_finished(outcomes: list[Outcome], written: set[str]) -> None:
    refused = 0
    for o in outcomes:
        if o.workflow_id in written:
            metrics.workflow_finished(o.queue_name, o.name, o.status.value, o.seconds)
        else:
            refused += 1
    metrics.write_fenced("final", refused)


def _finish_batch(app: App, params: dict[str, Any]) -> list[dict[str, Any]]:
    return app.db.retrying(lambda: app.db.fetchall("finish_workflows", params))


def run_claimed(
    app: App,
    claimed: Claimed,
    wf: WorkflowDef | None = None,
    args: tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    *,
    reraise: bool = False,
) -> Any:
    """Run a claimed workflow to its end and write the outcome (fenced)."""
    if wf is None:
        wf = app.registry.workflow(claimed.name)
    try:
        outcome, result, exc = execute(app, claimed, wf, args, kwargs)
    except DatabaseUnavailable as lost:
        # Only a patience-bounded wait gives up on the database: the workflow is not failed
        # but handed back (uncharged) once the server answers, for any executor to adopt.
        log.warning("workflow_handed_back", workflow_id=claimed.workflow_id, error=str(lost))
        hand_back(app, claimed)
        outcome, result, exc = None, None, lost
    except BaseException as crash:
        # KeyboardInterrupt, SystemExit...: this run stops, the process may not. Left PENDING
        # under a live executor nobody would recover it: hand it back, charged like a crash.
        log.warning("workflow_interrupted", workflow_id=claimed.workflow_id, error=repr(crash))
        hand_back(app, claimed, charge=True, patience=CRASH_HAND_BACK_PATIENCE)
        raise
    if outcome is not None:
        written = finish(app, [outcome])
        if claimed.workflow_id not in written:
            exc = FencedOut(claimed.workflow_id)
            outcome = None
    if outcome is None and reraise:
        # Adopted elsewhere (or cancelled meanwhile): the recorded outcome is the answer.
        return wait_result(app, claimed.workflow_id, None)
    if reraise and exc is not None:
        raise exc
    return result


def hand_back(
    app: App, claimed: Claimed, *, charge: bool = False, patience: float | None = None
) -> None:
    """Release one workflow this process owns but will not run on (uncharged unless
    ``charge``). With ``patience``, gives up quietly when the database stays away that long:
    the executor's deregistration, or its expiry, releases the workflow then."""
    try:
        app.db.retrying(
            lambda: app.db.fetchall(
                "release_executor_work",
                {
                    "executor_ids": [owner_of_run(claimed)],
                    "charge": charge,
                    "channel": notify_channel(app.db.schema),
                    "workflow_ids": [claimed.workflow_id],
                },
            ),
            patience=patience,
        )
    except PgflowError as exc:
        if patience is None:
            raise
        log.warning("hand_back_failed", workflow_id=claimed.workflow_id, error=str(exc))
    app.completions.notify()


# -- enqueueing --------------------------------------------------------------------------------


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel of one schema (namespaced, so two apps never cross)."""
    return queue_channel(schema)


def enqueue(
    app: App, queue: Any, opts: Any, wf: WorkflowDef, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> WorkflowHandle[Any]:
    """INSERT one ENQUEUED row and NOTIFY the workers; nothing runs here."""
    inputs = serialization.dumps_inputs(
        app.serializer,
        args,
        kwargs,
        max_bytes=app.settings.max_payload_bytes,
        what=f"workflow {wf.name!r}",
    )
    parent = context.current()
    if parent is not None and parent.in_step:
        parent = None
    workflow_id = opts.workflow_id
    step_id = None
    if parent is not None:
        step_id = parent.take_step_id()
        rec = parent.recorded.get(step_id)
        if rec is not None:
            if rec.name != wf.name:
                raise NonDeterminism(
                    f"workflow {parent.workflow_id} ({parent.name}) recorded step {step_id} as "
                    f"{rec.name!r} but the code now enqueues workflow {wf.name!r} there"
                )
            if rec.error is not None:
                raise serialization.loads_error(rec.error)  # refused the first time too
            return WorkflowHandle(app, rec.child_workflow_id or "")
        workflow_id = workflow_id or f"{parent.workflow_id}-{step_id}"
    workflow_id = workflow_id or new_workflow_id()
    timeout = opts.timeout if opts.timeout is not None else wf.timeout
    params = {
        "workflow_id": workflow_id,
        "name": wf.name,
        "queue_name": queue.name,
        "dedup_id": opts.dedup_id,
        "priority": opts.priority or 0,
        "partition_key": opts.partition_key,
        "parent_workflow_id": parent.workflow_id if parent else None,
        "app_version": app.app_version,
        "max_recovery_attempts": _max_attempts(app, wf),
        "serializer": app.serializer.name,
        "inputs": inputs,
        "timeout_ms": to_ms("timeout", timeout),
        "deadline": parent.deadline if parent is not None else None,
        "delay_ms": to_ms("delay", opts.delay or 0),
        "channel": notify_channel(app.db.schema),
        "trace_context": tracing.capture(),  # tracing: the enqueuer's span, for the run's parent
    }
    try:
        insert_enqueued(app.db, params)
    except (Deduplicated, WorkflowConflict) as refused:
        if parent is not None and step_id is not None:
            # Checkpointed, so a replay takes the same path without touching the queue (the
            # dedup id may be free by then).
            record_checkpoint(parent, step_id, wf.name, error=serialization.dumps_error(refused))
        raise
    if parent is not None and step_id is not None:
        _record_child(parent, step_id, wf.name, workflow_id)
    return WorkflowHandle(app, workflow_id)


def insert_enqueued(db: Database, params: dict[str, Any]) -> None:
    """Run ``enqueue_workflow``; a dedup clash raises Deduplicated naming the holder, an id
    taken by another function WorkflowConflict (the same function's: the existing one stands)."""
    try:
        row = db.retrying(lambda: db.fetchone("enqueue_workflow", params))
    except Deduplicated:
        existing = db.fetchone(
            "find_active_dedup",
            {"queue_name": params["queue_name"], "dedup_id": params["dedup_id"]},
        )
        raise Deduplicated(
            params["queue_name"], params["dedup_id"], existing["workflow_id"] if existing else None
        ) from None
    if row is None:
        check_same_function(db, params["workflow_id"], params["name"])


def enqueue_many(
    app: App, queue: Any, opts: Any, wf: WorkflowDef, calls: list[Any]
) -> list[WorkflowHandle[Any]]:
    """Queue many calls of one workflow in one statement (all or nothing on a dedup clash)."""
    if context.current() is not None and not context.current().in_step:  # type: ignore[union-attr]
        raise ConfigurationError(
            "enqueue_many is not available inside a workflow; "
            "enqueue children one by one so each is recorded"
        )
    if opts.workflow_id is not None or opts.dedup_id is not None:
        raise ConfigurationError("enqueue_many takes no workflow_id or dedup_id option")
    inputs = []
    for i, call in enumerate(calls):
        args, kwargs = ((), call) if isinstance(call, dict) else (tuple(call), {})
        inputs.append(
            serialization.dumps_inputs(
                app.serializer,
                args,
                kwargs,
                max_bytes=app.settings.max_payload_bytes,
                what=f"workflow {wf.name!r} (item {i})",
            )
        )
    ids = new_workflow_ids(len(calls))
    timeout = opts.timeout if opts.timeout is not None else wf.timeout
    params = {
        "workflow_ids": ids,
        "inputs": inputs,
        "priority": opts.priority or 0,
        "partition_key": opts.partition_key,
        "name": wf.name,
        "queue_name": queue.name,
        "app_version": app.app_version,
        "max_recovery_attempts": _max_attempts(app, wf),
        "serializer": app.serializer.name,
        "timeout_ms": to_ms("timeout", timeout),
        "delay_ms": to_ms("delay", opts.delay or 0),
        "channel": notify_channel(app.db.schema),
        "trace_context": tracing.capture(),  # tracing: the enqueuer's span, for the run's parent
    }
    if ids:
        insert_batch(app.db, params)
    return [WorkflowHandle(app, i) for i in ids]


def insert_batch(db: Database, params: dict[str, Any]) -> None:
    """Run ``enqueue_batch``, again while the database is unreachable.

    Its ids are fresh and the statement is all or nothing, so a retry that finds them taken
    means an earlier try committed and only its reply was lost: the batch is in, once.
    """
    tries = 0

    def attempt() -> None:
        nonlocal tries
        tries += 1
        with db.connection() as conn:
            try:
                db.execute(conn, "enqueue_batch", params)
            except Exception as exc:
                if not (tries > 1 and is_id_taken(exc)):
                    raise

    db.retrying(attempt)
