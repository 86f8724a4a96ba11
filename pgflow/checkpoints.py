"""The checkpoint protocol: a step's record written fenced (alone, or in the transaction of
the step's own work), and the ownership checks a run makes before going on (cancelled, fenced
out, past its deadline).

A checkpoint INSERT carries the run's fence; it lands only while the workflow is PENDING under
that fence. A write that lands nothing means another run owns the workflow (or it was
cancelled): this run raises FencedOut (or WorkflowCancelled) and writes nothing more. A write
whose reply was lost is recognised on retry by its fence.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import metrics, serialization
from .errors import FencedOut, WorkflowCancelled

if TYPE_CHECKING:
    import psycopg

    from .context import WorkflowContext


def check_deadline(ctx: WorkflowContext) -> None:
    left = ctx.seconds_left()
    if left is not None and left <= 0:
        raise WorkflowCancelled(ctx.workflow_id, "past its deadline")


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
