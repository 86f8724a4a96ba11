"""Workflow rows: the one builder of their columns, and putting them on a queue.

Every path that writes a ``workflow_status`` row (a start in this process, an enqueue, a batch,
a Client's enqueue by name, a schedule's ticks) builds its parameters with
:func:`workflow_row`, so the rules for versions, recovery limits, timeouts, delays and the
NOTIFY channel are written once.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any

from . import context, management, serialization, tracing
from .checkpoints import record_checkpoint
from .db.errors import is_id_taken
from .db.notify import queue_channel
from .errors import ConfigurationError, Deduplicated, WorkflowCancelled, WorkflowConflict
from .handles import WorkflowHandle
from .limits import to_ms
from .registry import RecoveryLimit, recovery_limit
from .replay import child_step

if TYPE_CHECKING:
    from .context import WorkflowContext
    from .db.pool import Database
    from .options import EnqueueOptions
    from .registry import WorkflowDef
    from .runtime import Runtime


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel of one schema (namespaced, so two apps never cross)."""
    return queue_channel(schema)


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


def workflow_row(
    rt: Runtime,
    name: str,
    *,
    app_version: str | None,
    max_recovery_attempts: RecoveryLimit,
    timeout: float | None,
    queue_name: str | None = None,
    priority: int | None = None,
    partition_key: str | None = None,
    delay: float | None = None,
    **columns: Any,
) -> dict[str, Any]:
    """The parameters of a statement that writes workflow rows: the workflow's ``name``, the
    version it is bound to (None: any version that knows the name), its recovery limit (the
    app's setting when not given), the serializer of its inputs and its timeout; with a
    ``queue_name``, its place in the queue (priority, partition key, delay and the channel to
    wake workers on). ``columns``: the statement's own (ids, inputs, parent, owner...)."""
    row: dict[str, Any] = {
        "name": name,
        "app_version": app_version,
        "max_recovery_attempts": recovery_limit(
            max_recovery_attempts, rt.settings.max_recovery_attempts
        ),
        "serializer": rt.serializer.name,
        "timeout_ms": to_ms("timeout", timeout),
        # tracing: the caller's span (enqueuer or starter), the run's parent
        "trace_context": tracing.capture(),
        **columns,
    }
    if queue_name is not None:
        row.update(
            queue_name=queue_name,
            priority=priority or 0,
            partition_key=partition_key,
            delay_ms=to_ms("delay", delay or 0),
            channel=notify_channel(rt.db.schema),
        )
    return row


def enqueue(
    rt: Runtime,
    queue_name: str,
    opts: EnqueueOptions,
    wf: WorkflowDef,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> WorkflowHandle[Any]:
    """INSERT one ENQUEUED row and NOTIFY the workers; nothing runs here. Inside a workflow
    the new one is its child, recorded as a step (a replay returns the same child)."""
    inputs = serialization.dumps_inputs(
        rt.serializer,
        args,
        kwargs,
        max_bytes=rt.settings.max_payload_bytes,
        what=f"workflow {wf.name!r}",
    )
    parent, step_id, rec = child_step(wf.name, "enqueues workflow")
    workflow_id = opts.workflow_id
    if rec is not None:
        if rec.error is not None:
            raise serialization.loads_error(rec.error)  # refused the first time too
        return WorkflowHandle(rt, rec.child_workflow_id or "")
    if parent is not None:
        workflow_id = workflow_id or f"{parent.workflow_id}-{step_id}"
    workflow_id = workflow_id or new_workflow_id()
    params = workflow_row(
        rt,
        wf.name,
        app_version=rt.app_version,
        max_recovery_attempts=wf.max_recovery_attempts,
        timeout=opts.timeout if opts.timeout is not None else wf.timeout,
        queue_name=queue_name,
        priority=opts.priority,
        partition_key=opts.partition_key,
        delay=opts.delay,
        workflow_id=workflow_id,
        dedup_id=opts.dedup_id,
        parent_workflow_id=parent.workflow_id if parent else None,
        inputs=inputs,
        deadline=parent.deadline if parent is not None else None,
    )
    try:
        insert_enqueued(rt.db, params)
    except (Deduplicated, WorkflowConflict) as refused:
        if parent is not None and step_id is not None:
            # Checkpointed, so a replay takes the same path without touching the queue (the
            # dedup id may be free by then).
            record_checkpoint(parent, step_id, wf.name, error=serialization.dumps_error(refused))
        raise
    if parent is not None and step_id is not None:
        record_child(parent, step_id, wf.name, workflow_id)
    return WorkflowHandle(rt, workflow_id)


def enqueue_by_name(
    rt: Runtime,
    queue_name: str,
    workflow_name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    opts: EnqueueOptions,
    *,
    app_version: str | None,
    max_recovery_attempts: RecoveryLimit,
) -> WorkflowHandle[Any]:
    """Queue a workflow known only by its name (a Client's enqueue): no parent, no code, and
    the version the caller gives (None: the first worker of any version that knows the name
    starts it)."""
    inputs = serialization.dumps_inputs(
        rt.serializer,
        args,
        kwargs,
        max_bytes=rt.settings.max_payload_bytes,
        what=f"workflow {workflow_name!r}",
    )
    workflow_id = opts.workflow_id or new_workflow_id()
    params = workflow_row(
        rt,
        workflow_name,
        app_version=app_version,
        max_recovery_attempts=max_recovery_attempts,
        timeout=opts.timeout,
        queue_name=queue_name,
        priority=opts.priority,
        partition_key=opts.partition_key,
        delay=opts.delay,
        workflow_id=workflow_id,
        dedup_id=opts.dedup_id,
        parent_workflow_id=None,
        inputs=inputs,
        deadline=None,
    )
    insert_enqueued(rt.db, params)
    return WorkflowHandle(rt, workflow_id)


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
    rt: Runtime, queue_name: str, opts: EnqueueOptions, wf: WorkflowDef, calls: list[Any]
) -> list[WorkflowHandle[Any]]:
    """Queue many calls of one workflow in one statement (all or nothing on a dedup clash)."""
    ctx = context.current()
    if ctx is not None and not ctx.in_step:
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
                rt.serializer,
                args,
                kwargs,
                max_bytes=rt.settings.max_payload_bytes,
                what=f"workflow {wf.name!r} (item {i})",
            )
        )
    ids = new_workflow_ids(len(calls))
    if ids:
        params = workflow_row(
            rt,
            wf.name,
            app_version=rt.app_version,
            max_recovery_attempts=wf.max_recovery_attempts,
            timeout=opts.timeout if opts.timeout is not None else wf.timeout,
            queue_name=queue_name,
            priority=opts.priority,
            partition_key=opts.partition_key,
            delay=opts.delay,
            workflow_ids=ids,
            inputs=inputs,
        )
        insert_batch(rt.db, params)
    return [WorkflowHandle(rt, i) for i in ids]


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


def check_same_function(db: Database, workflow_id: str, name: str) -> None:
    """An id already taken is the same execution only when it runs the same function; a
    different one raises WorkflowConflict (DBOS does the same) rather than hand back another
    function's result."""
    found = db.retrying(lambda: db.fetchone("workflow_name", {"workflow_id": workflow_id}))
    if found is not None and found["name"] != name:
        raise WorkflowConflict(workflow_id, found["name"], name)


def record_child(parent: WorkflowContext, step_id: int, name: str, child_id: str) -> None:
    """Checkpoint a child in its parent. A parent cancelled meanwhile cancels the child it has
    just created too, so nothing of a cancelled tree runs on."""
    try:
        record_checkpoint(parent, step_id, name, child_workflow_id=child_id)
    except WorkflowCancelled:
        management.cancel_tree(parent.rt.db, [child_id])
        raise
