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
from .checkpoints import (
    check_deadline,
    ensure_not_cancelled,
    in_checkpointed_transaction,
    record_checkpoint,
)
from .errors import WorkflowCancelled
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
