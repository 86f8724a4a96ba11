"""Step and transaction wrappers: checkpoint lookup, the name check, retries, the record.

Inside a workflow a step first looks up its checkpoint (loaded once at the start of a replay,
so a fresh run pays no lookup); a recorded step returns its output (or raises its error)
without running. Otherwise it runs, with retries, and writes its checkpoint in one fenced
INSERT. A transaction step runs its body and writes its checkpoint in one Postgres transaction.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import structlog

from . import attempts, context, metrics, serialization, tracing, user_sql
from .errors import FencedOut, WorkflowCancelled
from .redaction import redact
from .replay import replay

if TYPE_CHECKING:
    import psycopg

    from .context import WorkflowContext
    from .registry import StepDef
    from .runtime import Runtime

log = structlog.get_logger("pgflow")


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more attempts after the first, waiting ``interval * backoff**n`` (capped)."""

    retries: int = 0
    interval: float = 1.0
    backoff: float = 2.0
    max_interval: float = 60.0
    # Seconds one attempt may run (attempts.run_attempt); None: no limit.
    time_limit: float | None = None


def retry_delay(policy: RetryPolicy, failures: int) -> float:
    """Seconds to wait after the ``failures``-th failed attempt (pure; 1-based)."""
    if failures < 1:
        return 0.0
    delay = policy.interval * (policy.backoff ** (failures - 1))
    return float(min(max(delay, 0.0), policy.max_interval))


def _with_retries(
    policy: RetryPolicy,
    ctx: WorkflowContext | None,
    body: Callable[[], Any],
    name: str,
    *,
    counted: bool = False,
) -> Any:
    """Call ``body`` until it succeeds or the policy's retries are spent; every retry is one
    ``step_retrying`` warning. ``counted``: keep the attempt on ``ctx`` for the checkpoint."""
    failures = 0
    while True:
        if counted and ctx is not None:
            ctx.step_attempts = failures + 1
        try:
            return body()
        except Exception as exc:
            failures += 1
            if failures > policy.retries:
                raise
            delay = retry_delay(policy, failures)
            if ctx is not None:
                left = ctx.seconds_left()
                if left is not None and left < delay:
                    raise WorkflowCancelled(ctx.workflow_id, "past its deadline") from None
            metrics.step_retried(name)
            tracing.step_retried(name, failures, exc, counted)  # tracing: an event on its span
            log.warning(
                "step_retrying",
                step=name,
                attempt=failures,
                max_attempts=policy.retries + 1,
                error=redact(f"{type(exc).__name__}: {exc}"),
                error_at=_where(exc),
                next_delay_s=round(delay, 3),
            )
            time.sleep(delay)


def _where(exc: BaseException) -> str | None:
    """``file:line`` of the frame that raised ``exc`` (the step's own code, usually)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None


def check_deadline(ctx: WorkflowContext) -> None:
    left = ctx.seconds_left()
    if left is not None and left <= 0:
        raise WorkflowCancelled(ctx.workflow_id, "past its deadline")


def call_step(
    rt: Runtime,
    step: StepDef,
    policy: RetryPolicy,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run a ``@app.step`` or ``@app.transaction`` function, durably when inside a workflow."""
    ctx = context.current()
    if ctx is None or ctx.in_step:
        return _run_unrecorded(rt, step, policy, ctx, args, kwargs)
    step_id = ctx.take_step_id()
    done, output = replay(ctx, step_id, step.name)
    if done:
        return output
    check_deadline(ctx)
    ensure_not_cancelled(ctx)
    run = _run_transaction if step.kind == "transaction" else _run_step
    # tracing: the step's span (its attempts and its checkpoint), a child of the workflow's
    return tracing.run_step(
        ctx.workflow_id,
        step_id,
        step.name,
        step.kind,
        lambda: run(step, policy, ctx, step_id, args, kwargs),
    )


def _run_unrecorded(
    rt: Runtime,
    step: StepDef,
    policy: RetryPolicy,
    ctx: WorkflowContext | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Outside a workflow (or nested in another step): a plain call with retries; a
    transaction still gets its own transaction (or joins the enclosing one)."""
    if step.kind == "transaction" and context.in_transaction() is False:

        def body() -> Any:
            with user_sql.unwrapped(), rt.db.connection() as conn, conn.transaction():
                return _call_in_transaction(rt, conn, step, args, kwargs, policy.time_limit)

        return _with_retries(policy, ctx, body, step.name)
    return _with_retries(policy, ctx, _attempt(rt, step, policy, args, kwargs), step.name)


def _attempt(
    rt: Runtime, step: StepDef, policy: RetryPolicy, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Callable[[], Any]:
    """One attempt of a plain step's body: a call, bounded by its time_limit if it has one."""

    def call() -> Any:
        return step.fn(*args, **kwargs)

    limit = policy.time_limit
    if limit is None:
        return call
    return lambda: attempts.run_attempt(call, limit, step.name, rt.abandoned_bodies)


def _call_in_transaction(
    rt: Runtime,
    conn: psycopg.Connection[Any],
    step: StepDef,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    time_limit: float | None = None,
) -> Any:
    """Call a transaction step's function on ``conn``'s open transaction (``pgflow.db()``),
    with the server's default planner settings for the user's SQL (query allow_scans).
    Its own psycopg errors leave wrapped for user_sql.unwrapped (pgflow's boundary must not
    translate them).

    ``time_limit``: the body shares its connection with the checkpoint, so it is not
    abandoned on another thread: the server cancels any of its statements that runs past the
    limit (statement_timeout, for this transaction only), and an attempt that took longer in
    all is rolled back; both raise StepTimeLimitExceeded."""
    rt.db.execute(conn, "allow_scans")
    if time_limit is None:
        return user_sql.run_body(conn, lambda: step.fn(*args, **kwargs))
    row = rt.db.execute(
        conn, "limit_statements", {"timeout": f"{math.ceil(time_limit * 1000)}ms"}
    ).fetchone()
    previous = row["previous"]  # type: ignore[index]
    began = time.monotonic()
    try:
        result = user_sql.run_body(conn, lambda: step.fn(*args, **kwargs))
    except user_sql.UserSQLFailure as failure:
        # 57014: query_canceled, here by the statement_timeout set above.
        if (
            getattr(failure.error, "sqlstate", None) == "57014"
            and time.monotonic() - began >= time_limit
        ):
            raise attempts.time_limit_exceeded(
                step.name, time_limit, "its statement was cancelled"
            ) from failure.error
        raise
    if time.monotonic() - began > time_limit:
        raise attempts.time_limit_exceeded(step.name, time_limit, "its work was rolled back")
    rt.db.execute(conn, "restore_statement_timeout", {"timeout": previous}).fetchone()
    return result


def _run_step(
    step: StepDef,
    policy: RetryPolicy,
    ctx: WorkflowContext,
    step_id: int,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    started = datetime.now(timezone.utc)
    began = time.monotonic()
    ok = False
    ctx.in_step = True
    try:
        try:
            result = _with_retries(
                policy, ctx, _attempt(ctx.rt, step, policy, args, kwargs), step.name, counted=True
            )
        except Exception as exc:
            ctx.in_step = False
            record_checkpoint(
                ctx,
                step_id,
                step.name,
                error=serialization.dumps_error(exc),
                started_at=started,
                after_body=True,
            )
            raise
        finally:
            ctx.in_step = False
        try:
            output = serialization.dumps_value(
                ctx.rt.serializer,
                result,
                max_bytes=ctx.rt.settings.max_payload_bytes,
                what=f"output of step {step.name!r}",
            )
        except Exception as exc:
            record_checkpoint(
                ctx,
                step_id,
                step.name,
                error=serialization.dumps_error(exc),
                started_at=started,
                after_body=True,
            )
            raise
        # Kept even if the workflow was cancelled while the body ran: the body has run.
        record_checkpoint(
            ctx, step_id, step.name, output=output, started_at=started, after_body=True
        )
        ok = True
        return result
    finally:
        ctx.step_attempts = None
        metrics.step_finished(step.name, ok, time.monotonic() - began)


def _run_transaction(
    step: StepDef,
    policy: RetryPolicy,
    ctx: WorkflowContext,
    step_id: int,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    started = datetime.now(timezone.utc)
    rt = ctx.rt

    def body(conn: psycopg.Connection[Any]) -> tuple[str | None, Any]:
        ctx.in_step = True
        try:
            result = _call_in_transaction(rt, conn, step, args, kwargs, policy.time_limit)
        finally:
            ctx.in_step = False
        return serialization.dumps_value(
            rt.serializer,
            result,
            max_bytes=rt.settings.max_payload_bytes,
            what=f"output of transaction step {step.name!r}",
        ), result

    def attempt() -> Any:
        with user_sql.unwrapped():
            return in_checkpointed_transaction(ctx, step_id, step.name, body, started)

    began = time.monotonic()
    ok = False
    try:
        value = _with_retries(policy, ctx, attempt, step.name, counted=True)
        ok = True
        return value
    except Exception as exc:
        record_checkpoint(
            ctx, step_id, step.name, error=serialization.dumps_error(exc), started_at=started
        )
        raise
    finally:
        ctx.step_attempts = None
        metrics.step_finished(step.name, ok, time.monotonic() - began)


def _checkpoint_params(
    ctx: WorkflowContext,
    step_id: int,
    name: str,
    output: str | None,
    error: str | None,
    child_workflow_id: str | None,
    started_at: datetime | None,
    after_body: bool = False,
) -> dict[str, Any]:
    return {
        "workflow_id": ctx.workflow_id,
        "executor_id": ctx.executor_id,
        "fence": ctx.fence,
        "step_id": step_id,
        "name": name,
        "output": output,
        "error": error,
        "child_workflow_id": child_workflow_id,
        "started_at": started_at,
        "attempts": ctx.step_attempts,
        "after_body": after_body,
    }


def record_checkpoint(
    ctx: WorkflowContext,
    step_id: int,
    name: str,
    *,
    output: str | None = None,
    error: str | None = None,
    child_workflow_id: str | None = None,
    started_at: datetime | None = None,
    after_body: bool = False,
) -> None:
    """Write one checkpoint, fenced; raise FencedOut / WorkflowCancelled when not the owner.
    ``after_body``: the record of a step body that has run, kept if the workflow was
    cancelled meanwhile (still under this run's fence).

    Retried across lost connections; a retry that finds its own earlier write succeeded.
    A checkpoint of that step written by another run (another fence) means that run owns the
    workflow: this one is fenced out, whoever it is, and never continues past it.
    """
    rt = ctx.rt
    params = _checkpoint_params(
        ctx, step_id, name, output, error, child_workflow_id, started_at, after_body
    )
    if rt.db.retrying(lambda: rt.db.run("record_step", params)):
        return
    existing = rt.db.retrying(
        lambda: rt.db.fetchone("get_step", {"workflow_id": ctx.workflow_id, "step_id": step_id})
    )
    if existing is not None and written_by(ctx, existing, name):
        # Our own write whose reply was lost; we may go on only while we still own it.
        ensure_owner(ctx)
        return
    metrics.write_fenced("checkpoint")
    raise _fenced_error(ctx)


def written_by(ctx: WorkflowContext, checkpoint: dict[str, Any], name: str) -> bool:
    """Whether this run wrote ``checkpoint``: its fence is ours (a fence is drawn per claim,
    so no other run, on this executor or any, can hold it)."""
    return ctx.fence is not None and checkpoint["fence"] == ctx.fence and checkpoint["name"] == name


NOT_YET = object()


def in_checkpointed_transaction(
    ctx: WorkflowContext,
    step_id: int,
    name: str,
    body: Callable[[psycopg.Connection[Any]], tuple[str | None, Any] | None],
    started_at: datetime | None = None,
) -> Any:
    """Run ``body`` and write its checkpoint in ONE transaction, fenced. ``body`` returns
    ``(checkpoint output, value)``, or None when there is nothing to record yet (then this
    returns ``NOT_YET`` and nothing is written).

    Retried on a lost connection. The loss rolled the transaction back, unless it came after
    the commit: a retry first looks for the checkpoint such a commit wrote (ours only while we
    still own the workflow).
    """
    rt = ctx.rt
    started = started_at or datetime.now(timezone.utc)
    tries = 0

    def attempt() -> Any:
        nonlocal tries
        tries += 1
        if tries > 1:
            rec = rt.db.fetchone(
                "recorded_output", {"workflow_id": ctx.workflow_id, "step_id": step_id}
            )
            if rec is not None and written_by(ctx, rec, name):
                ensure_owner(ctx)
                return serialization.loads_value(rt.serializer, ctx.serializer_name, rec["output"])
        with rt.db.connection() as conn, conn.transaction():
            got = body(conn)
            if got is None:
                return NOT_YET
            output, value = got
            record_in_transaction(ctx, conn, step_id, name, output, started)
            return value

    return rt.db.retrying(attempt)


def record_in_transaction(
    ctx: WorkflowContext,
    conn: psycopg.Connection[Any],
    step_id: int,
    name: str,
    output: str | None,
    started_at: datetime | None,
) -> None:
    """Write a checkpoint on ``conn``'s open transaction, fenced; raise FencedOut or
    WorkflowCancelled when not the owner, which rolls back the transaction's other work."""
    if not ctx.rt.db.execute(
        conn, "record_step", _checkpoint_params(ctx, step_id, name, output, None, None, started_at)
    ).rowcount:
        metrics.write_fenced("checkpoint")
        raise _fenced_error(ctx, conn)


def ensure_not_cancelled(ctx: WorkflowContext) -> None:
    """Before a step body runs: raise WorkflowCancelled (or FencedOut) when the workflow is
    no longer this run's to go on with.

    A cancel NOTIFYs the workflow's id; the run watches for it (workflows.execute), so the
    common case costs no round trip: the database is asked only when a notification came
    (a cancel, or a message: the same channel), when none could (the listener is away;
    after it reconnects every watcher is woken), and for a run's first step (a cancel before
    the watch began). A cancel from this process wakes the watchers before it returns."""
    hint, listening = ctx.cancel_hint, ctx.listening
    if hint is not None and listening is not None and listening.is_set() and not hint.is_set():
        return
    if hint is not None:
        hint.clear()  # before the look: a NOTIFY that comes after it sets it again
    ensure_owner(ctx)


def ensure_owner(ctx: WorkflowContext) -> None:
    """Raise WorkflowCancelled or FencedOut when this run no longer owns its workflow (a
    waiting workflow checks when woken, so a cancel reaches it without waiting for a step)."""
    db = ctx.rt.db
    owner = db.retrying(lambda: db.fetchone("owner_of", {"workflow_id": ctx.workflow_id}))
    if (
        owner is None
        or owner["status"] != "PENDING"
        or ctx.fence is None
        or owner["fence"] != ctx.fence
    ):
        raise _fenced_error(ctx)


def _fenced_error(
    ctx: WorkflowContext, conn: psycopg.Connection[Any] | None = None
) -> BaseException:
    db = ctx.rt.db
    if conn is not None:
        # On the session the caller holds: a thread never waits for a second one while
        # holding one, so threads sharing a small pool cannot deadlock.
        owner = db.execute(conn, "owner_of", {"workflow_id": ctx.workflow_id}).fetchone()
    else:
        owner = db.retrying(lambda: db.fetchone("owner_of", {"workflow_id": ctx.workflow_id}))
    if owner is not None and owner["status"] == "CANCELLED":
        return WorkflowCancelled(ctx.workflow_id)
    return FencedOut(ctx.workflow_id)
