"""The operator's view and controls over workflows stored in a Database: read records, list,
cancel, resume, fork, and the per-queue report. No application code is needed, so the App,
the Client (through :mod:`pgflow.operations`) and the CLI share these functions."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import serialization, versions
from .db.notify import message_channel, queue_channel
from .db.pool import Database
from .errors import ConfigurationError, Deduplicated, UnknownWorkflow
from .limits import validate_name
from .records import Status, StepRecord, WorkflowStatus

# -- reading -----------------------------------------------------------------------------------


def _decode(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:
        return f"<not decodable: {exc}>"


def status_record(serializer: serialization.Serializer, row: dict[str, Any]) -> WorkflowStatus:
    """A ``workflow_status`` row as a :class:`WorkflowStatus` (inputs, output, error decoded;
    what cannot be decoded here shows as ``<not decodable: ...>``)."""
    ser = row["serializer"]

    def inputs() -> Any:
        args, kwargs = serialization.loads_inputs(
            serialization.serializer_for_row(serializer, ser), row["inputs"]
        )
        return {"args": list(args), "kwargs": kwargs}

    return WorkflowStatus(
        workflow_id=row["workflow_id"],
        name=row["name"],
        status=Status(row["status"]),
        queue_name=row["queue_name"],
        dedup_id=row["dedup_id"],
        priority=row["priority"],
        partition_key=row["partition_key"],
        parent_workflow_id=row["parent_workflow_id"],
        executor_id=row["executor_id"],
        app_version=row["app_version"],
        recovery_attempts=row["recovery_attempts"],
        inputs=_decode(inputs),
        output=_decode(lambda: serialization.loads_value(serializer, ser, row["output"])),
        error=None if row["error"] is None else serialization.loads_error(row["error"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        updated_at=row["updated_at"],
        deadline=row["deadline"],
        max_recovery_attempts=row["max_recovery_attempts"],
        attempt=row["attempt"],
        forked_from=row["forked_from"],
    )


def get_status(
    db: Database, serializer: serialization.Serializer, workflow_id: str
) -> WorkflowStatus | None:
    row = db.retrying(lambda: db.fetchone("get_workflow", {"workflow_id": workflow_id}))
    return None if row is None else status_record(serializer, row)


def require_status(
    db: Database, serializer: serialization.Serializer, workflow_id: str
) -> WorkflowStatus:
    """The workflow's record; UnknownWorkflow("no workflow has id ...") when there is none."""
    found = get_status(db, serializer, workflow_id)
    if found is None:
        raise UnknownWorkflow(f"no workflow has id {workflow_id!r}")
    return found


def list_workflows(
    db: Database,
    serializer: serialization.Serializer,
    *,
    status: str | Status | list[str | Status] | None = None,
    name: str | None = None,
    queue: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    parent_workflow_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
    newest_first: bool = False,
) -> list[WorkflowStatus]:
    """Workflows matching every filter given, oldest first unless ``newest_first``."""
    statuses = None
    if status is not None:
        items = status if isinstance(status, list) else [status]
        try:
            statuses = [Status(str(s).upper()).value for s in items]
        except ValueError:
            raise ConfigurationError(
                f"unknown status in {[str(s) for s in items]}; use one of "
                f"{', '.join(s.value for s in Status)}"
            ) from None
    rows = db.fetchall(
        "list_workflows_newest" if newest_first else "list_workflows",
        {
            "status": statuses,
            "name": name,
            "queue_name": queue,
            "created_after": created_after,
            "created_before": created_before,
            "parent_workflow_id": parent_workflow_id,
            "limit": limit,
            "offset": offset,
        },
    )
    return [status_record(serializer, r) for r in rows]


def list_queued(
    db: Database, serializer: serialization.Serializer, queue: str | None = None, limit: int = 1000
) -> list[WorkflowStatus]:
    """ENQUEUED and PENDING workflows of ``queue`` (every queue when None), in claim order."""
    rows = db.fetchall("list_queued", {"queue_name": queue, "limit": limit})
    return [status_record(serializer, r) for r in rows]


def steps(db: Database, serializer: serialization.Serializer, workflow_id: str) -> list[StepRecord]:
    """The recorded steps of a workflow, in order."""
    row = db.fetchone("get_workflow_outcome", {"workflow_id": workflow_id})
    ser = row["serializer"] if row is not None else serializer.name

    def record(r: dict[str, Any]) -> StepRecord:
        return StepRecord(
            step_id=r["step_id"],
            name=r["name"],
            output=_decode(lambda: serialization.loads_value(serializer, ser, r["output"])),
            error=None if r["error"] is None else serialization.loads_error(r["error"]),
            child_workflow_id=r["child_workflow_id"],
            started_at=r["started_at"],
            completed_at=r["completed_at"],
            attempts=r.get("attempts"),
        )

    return [record(r) for r in db.fetchall("list_steps", {"workflow_id": workflow_id})]


# -- controlling -------------------------------------------------------------------------------


def cancel_tree(db: Database, workflow_ids: list[str], *, include_roots: bool = True) -> list[str]:
    """Cancel active workflows among ``workflow_ids`` and all their descendants; return the
    ids that were cancelled now."""
    rows = db.retrying(
        lambda: db.fetchall(
            "cancel_workflows",
            {
                "workflow_ids": workflow_ids,
                "include_roots": include_roots,
                "channel": message_channel(db.schema),
            },
        )
    )
    return [r["workflow_id"] for r in rows]


def cancel(db: Database, serializer: serialization.Serializer, workflow_id: str) -> WorkflowStatus:
    """Cancel a workflow and its children (recursively). ENQUEUED and PENDING ones become
    CANCELLED; a running one stops at its next step. An ended workflow is left as it is.
    Returns the workflow's record afterwards."""
    cancel_tree(db, [workflow_id])
    return require_status(db, serializer, workflow_id)


def resume(db: Database, serializer: serialization.Serializer, workflow_id: str) -> WorkflowStatus:
    """Run a workflow now, as DBOS's resume does:

    - CANCELLED, ERROR or MAX_RECOVERY_ATTEMPTS_EXCEEDED: again from its last completed step,
      back on its queue (ENQUEUED), or ownerless PENDING for an executor of its version to
      adopt; recovery attempts start again from 0;
    - ENQUEUED (delayed, or waiting its turn): its delay is dropped and the workers are woken,
      so the next claim with room on its queue takes it (the queue's limits still hold);
    - PENDING or SUCCESS: left as it is (an ownerless PENDING one is adopted by ``App.resume``).

    Returns the record afterwards."""
    params = {"workflow_id": workflow_id, "channel": queue_channel(db.schema)}
    try:
        resumed = db.retrying(lambda: db.fetchone("resume_workflow", params))
    except Deduplicated:
        found = require_status(db, serializer, workflow_id)
        raise Deduplicated(found.queue_name or "", found.dedup_id or "", None) from None
    if resumed is None:
        db.retrying(lambda: db.fetchone("start_enqueued_now", params))
    return require_status(db, serializer, workflow_id)


def fork(
    db: Database,
    workflow_id: str,
    from_step: int = 1,
    *,
    new_workflow_id: str | None = None,
    app_version: str | None = None,
) -> str:
    """Start a new workflow with the inputs of ``workflow_id`` and copies of its checkpoints
    before step ``from_step`` (those steps are not run again) and of the events they
    published (each key's latest value before ``from_step``; events published before
    migration 0008 have no step and are not copied). It goes on the original's queue,
    or ownerless PENDING for an executor of its version (``app_version``, default the
    original's) to adopt. Returns the new workflow's id."""
    if not isinstance(from_step, int) or from_step < 1:
        raise ConfigurationError(f"from_step must be a step number ≥ 1, not {from_step!r}")
    new_workflow_id = new_workflow_id or str(uuid.uuid4())
    validate_name("workflow_id", new_workflow_id, limit=1000)
    if app_version is not None:
        validate_name("app_version", app_version)
    row = db.fetchone(
        "fork_workflow",
        {
            "workflow_id": new_workflow_id,
            "source_id": workflow_id,
            "from_step": from_step,
            "app_version": app_version,
            "channel": queue_channel(db.schema),
        },
    )
    if row is None:
        if db.fetchone("owner_of", {"workflow_id": workflow_id}) is None:
            raise UnknownWorkflow(f"no workflow has id {workflow_id!r}")
        raise ConfigurationError(
            f"workflow id {new_workflow_id!r} is already taken; fork with another workflow_id"
        )
    return new_workflow_id


# -- the queue report --------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueInfo:
    """One queue in ``pgflow queues``."""

    name: str
    concurrency: int | None
    worker_concurrency: int | None
    rate_limit: int | None
    rate_per_seconds: float | None
    priority_enabled: bool
    partitioned: bool
    enqueued: int
    delayed: int
    pending: int
    oldest_wait_s: float | None
    started_in_window: int | None
    live_workers: int
    partitions: dict[str, dict[str, int]]
    paused: bool = False  # no worker claims from it (work already running finishes)
    paused_at: datetime | None = None


@dataclass(frozen=True)
class Stranded:
    """Waiting work no live executor can run: why (``reason``: unknown_name, wrong_version or
    no_worker), and what resolves it (``remedy``, naming the command)."""

    queue_name: str | None
    app_version: str | None
    name: str
    reason: str
    count: int
    since: datetime
    remedy: str


def set_queue_paused(db: Database, name: str, paused: bool) -> bool:
    """Pause (or resume) queue ``name`` for every worker, durably; True when it changed."""
    row = db.retrying(
        lambda: db.fetchone(
            "set_queue_paused",
            {"name": name, "paused": paused, "channel": queue_channel(db.schema)},
        )
    )
    return bool(row and row["changed"])


def paused_queues(db: Database) -> set[str]:
    return {r["name"] for r in db.fetchall("paused_queues")}


def stranded_work(
    db: Database, heartbeat_timeout: float, queues: list[str] | None = None
) -> list[Stranded]:
    """Work no live executor can run, grouped by queue, version, name and reason."""
    rows = db.fetchall("stranded_work", {"timeout_s": heartbeat_timeout, "queues": queues})
    live = versions.live_versions(db, heartbeat_timeout) if rows else []
    return [
        Stranded(
            r["queue_name"],
            r["app_version"],
            r["name"],
            r["reason"],
            r["n"],
            r["since"],
            versions.remedy(r["reason"], r["queue_name"], r["app_version"], r["name"], live),
        )
        for r in rows
    ]


def queue_report(db: Database, heartbeat_timeout: float) -> tuple[list[QueueInfo], list[Stranded]]:
    """Every queue's limits, counts and rate-window use, and the stranded work."""
    params = {"timeout_s": heartbeat_timeout}
    parts: dict[str, dict[str, dict[str, int]]] = {}
    for r in db.fetchall("queue_partitions"):
        parts.setdefault(r["queue_name"], {})[r["partition_key"]] = {
            "enqueued": r["enqueued"],
            "pending": r["pending"],
        }
    queues = [
        QueueInfo(
            name=r["name"],
            concurrency=r["concurrency"],
            worker_concurrency=r["worker_concurrency"],
            rate_limit=r["rate_limit"],
            rate_per_seconds=r["rate_per_seconds"],
            priority_enabled=r["priority_enabled"],
            partitioned=r["partitioned"],
            enqueued=r["enqueued"],
            delayed=r["delayed"],
            pending=r["pending"],
            oldest_wait_s=r["oldest_wait_s"],
            started_in_window=r["started_in_window"],
            live_workers=r["live_workers"],
            partitions=parts.get(r["name"], {}),
            paused=r["paused"],
            paused_at=r["paused_at"],
        )
        for r in db.fetchall("queue_overview", params)
    ]
    return queues, stranded_work(db, heartbeat_timeout)
