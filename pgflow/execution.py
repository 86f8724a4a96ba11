"""Running a workflow this process owns (started here, claimed or adopted): execute its body
under its context, then write its outcome (fenced) or hand it back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from . import context, management, serialization, tracing
from .checkpoints import check_deadline
from .context import WorkflowContext
from .db.notify import message_channel
from .errors import (
    DatabaseUnavailable,
    FencedOut,
    SerializationError,
    WorkflowCancelled,
    WorkflowParked,
)
from .handles import wait_result
from .outcomes import failed, finish, hand_back, outcome, owner_of_run
from .records import Claimed, Outcome, Status
from .replay import load_recorded

if TYPE_CHECKING:
    from .registry import WorkflowDef
    from .runtime import Runtime

log = structlog.get_logger("pgflow")

# Seconds an interrupted run waits for the database to hand its workflow back (the interrupt
# should not wait out an outage; deregistration or expiry releases the workflow otherwise).
CRASH_HAND_BACK_PATIENCE = 5.0


# -- running -----------------------------------------------------------------------------------


def make_context(rt: Runtime, claimed: Claimed) -> WorkflowContext:
    ctx = WorkflowContext(
        rt=rt,
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
        ctx.recorded = load_recorded(rt.db, claimed.workflow_id)
    return ctx


def execute(
    rt: Runtime,
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
                _row_serializer(rt, claimed.serializer_name), claimed.inputs
            )
        except SerializationError as exc:
            # Inputs this app will not read (a pickled row in a JSON app): it can never run
            # here, and left PENDING it would be stuck; it ends ERROR, saying why.
            log.warning("workflow_inputs_refused", workflow_id=claimed.workflow_id, error=str(exc))
            return failed(claimed, Status.ERROR, exc), None, exc
    ctx = make_context(rt, claimed)
    if on_start is not None:
        on_start(ctx)
    stop_watching = _watch_for_cancel(rt, ctx)
    token = context.enter(ctx)
    structlog.contextvars.bind_contextvars(
        workflow_id=claimed.workflow_id, workflow_name=claimed.name
    )
    try:
        return _run_body(rt, claimed, wf, ctx, args, kwargs)
    finally:
        stop_watching()
        context.leave(token)
        structlog.contextvars.unbind_contextvars("workflow_id", "workflow_name")


def _run_body(
    rt: Runtime,
    claimed: Claimed,
    wf: WorkflowDef,
    ctx: WorkflowContext,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[Outcome | None, Any, BaseException | None]:
    """The body under the run's context; exceptions become the outcome (a lost database
    goes up, for a hand-back)."""
    started = time.monotonic()
    log.info("workflow_started", queue=claimed.queue_name, attempt=claimed.attempt)
    try:
        check_deadline(ctx)
        result = tracing.run_workflow(claimed, wf.fn, args, kwargs)  # tracing: the run's span
        try:
            output = serialization.dumps_value(
                rt.serializer,
                result,
                max_bytes=rt.settings.max_payload_bytes,
                what=f"output of workflow {wf.name!r}",
            )
        except Exception as exc:  # an unserializable result fails the workflow, clearly
            _log_failed(exc, started)
            return failed(claimed, Status.ERROR, exc, started), None, exc
        log.info("workflow_succeeded", duration_ms=_ms_since(started))
        return outcome(claimed, Status.SUCCESS, output=output, started=started), result, None
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
            management.cancel_tree(rt.db, [claimed.workflow_id], include_roots=False)
        return failed(claimed, Status.CANCELLED, exc, started), None, exc
    except Exception as exc:
        _log_failed(exc, started)
        return failed(claimed, Status.ERROR, exc, started), None, exc


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


def _watch_for_cancel(rt: Runtime, ctx: WorkflowContext) -> Callable[[], None]:
    """Watch for a NOTIFY about this workflow while it runs (a cancel sends one), so that each
    step's cancel check costs a round trip only when one came (checkpoints.ensure_not_cancelled).
    Returns the call that ends the watch."""
    notes = rt.notifications
    watch = notes.watch(message_channel(rt.db.schema), ctx.workflow_id)
    hint = watch.__enter__()
    hint.set()  # a cancel may have come before the watch began: the first step looks
    ctx.cancel_hint, ctx.listening = hint, notes.connected

    def stop() -> None:
        watch.__exit__(None, None, None)

    return stop


def _row_serializer(rt: Runtime, name: str) -> serialization.Serializer:
    # Refuses a pickled row in a JSON-configured app, saying why.
    return serialization.serializer_for_row(rt.serializer, name)


def run_claimed(
    rt: Runtime,
    claimed: Claimed,
    wf: WorkflowDef | None = None,
    args: tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    *,
    reraise: bool = False,
) -> Any:
    """Run a claimed workflow to its end and write the outcome (fenced)."""
    if wf is None:
        wf = rt.registry.workflow(claimed.name)
    try:
        outcome, result, exc = execute(rt, claimed, wf, args, kwargs)
    except DatabaseUnavailable as lost:
        # Only a patience-bounded wait gives up on the database: the workflow is not failed
        # but handed back (uncharged) once the server answers, for any executor to adopt.
        log.warning("workflow_handed_back", workflow_id=claimed.workflow_id, error=str(lost))
        hand_back(rt, claimed)
        outcome, result, exc = None, None, lost
    except BaseException as crash:
        # KeyboardInterrupt, SystemExit...: this run stops, the process may not. Left PENDING
        # under a live executor nobody would recover it: hand it back, charged like a crash.
        log.warning("workflow_interrupted", workflow_id=claimed.workflow_id, error=repr(crash))
        hand_back(rt, claimed, charge=True, patience=CRASH_HAND_BACK_PATIENCE)
        raise
    if outcome is not None:
        written = finish(rt, [outcome])
        if claimed.workflow_id not in written:
            exc = FencedOut(claimed.workflow_id)
            outcome = None
    if outcome is None and reraise:
        # Adopted elsewhere (or cancelled meanwhile): the recorded outcome is the answer.
        return wait_result(rt, claimed.workflow_id, None)
    if reraise and exc is not None:
        raise exc
    return result
