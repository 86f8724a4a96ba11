"""``pgflow explain``: why is this workflow not running? The facts of one workflow read from the
database (sql/queries/explain.sql), turned into reasons by :mod:`pgflow.diagnosis`.

>>> found = client.explain("checkout-7")
>>> print(found.text)
Workflow checkout-7 (checkout) is ENQUEUED on queue 'payments'. The queue's concurrency is 1 of
1, taken by checkout-6 (for 42s).
>>> [r.code for r in found.reasons]
['concurrency_full']
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import diagnosis, serialization
from .diagnosis import (
    Checkpoint,
    ExecutorFacts,
    Facts,
    QueueFacts,
    Reason,
    RecvWait,
    Running,
    WorkflowFacts,
)
from .errors import SerializationError, UnknownWorkflow

if TYPE_CHECKING:
    from .db.pool import Database


@dataclass(frozen=True)
class Explanation:
    """Why a workflow is (not) running: every reason that holds, and the paragraph (``text``)
    that says them; ``now`` is the database's time they describe."""

    workflow_id: str
    name: str
    status: str
    queue_name: str | None
    now: datetime
    reasons: list[Reason]
    text: str

    @property
    def codes(self) -> list[str]:
        return [r.code for r in self.reasons]


def explain(
    db: Database, serializer: serialization.Serializer, workflow_id: str, heartbeat_timeout: float
) -> Explanation:
    """Read the facts of ``workflow_id`` and say why it is not running (UnknownWorkflow when
    there is no such workflow)."""
    facts = gather(db, serializer, workflow_id, heartbeat_timeout)
    reasons = diagnosis.diagnose(facts)
    w = facts.workflow
    return Explanation(
        w.workflow_id,
        w.name,
        w.status,
        w.queue_name,
        facts.now,
        reasons,
        diagnosis.paragraph(facts, reasons),
    )


def gather(
    db: Database, serializer: serialization.Serializer, workflow_id: str, heartbeat_timeout: float
) -> Facts:
    """The facts :func:`pgflow.diagnosis.diagnose` reads, from a few named queries."""
    row = db.retrying(lambda: db.fetchone("explain_workflow", {"workflow_id": workflow_id}))
    if row is None:
        raise UnknownWorkflow(f"no workflow has id {workflow_id!r}")
    now: datetime = row["now"]
    workflow = WorkflowFacts(
        workflow_id=row["workflow_id"],
        name=row["name"],
        status=row["status"],
        queue_name=row["queue_name"],
        priority=row["priority"],
        partition_key=row["partition_key"],
        app_version=row["app_version"],
        executor_id=row["executor_id"],
        started_at=row["started_at"],
        forked_from=row["forked_from"],
        not_before=row["not_before"],
        updated_at=row["updated_at"],
        completed_at=row["completed_at"],
    )
    base = Facts(now=now, heartbeat_timeout=heartbeat_timeout, workflow=workflow)
    if workflow.status not in ("ENQUEUED", "PENDING"):
        return base
    queue = _queue(row)
    # Limits hold per key on a partitioned queue; the whole queue otherwise.
    key = workflow.partition_key if queue is not None and queue.partitioned else None
    scope = {"queue_name": workflow.queue_name, "partition_key": key, "now": now}
    facts: dict[str, Any] = {
        "queue": queue,
        "executors": _executors(db, {**scope, "name": workflow.name}, heartbeat_timeout),
        "name_known": row["name_known"],
        "last_checkpoint": _last_checkpoint(db, serializer, workflow_id, row["serializer"]),
        "messages": {
            m["topic"]: int(m["n"])
            for m in db.fetchall("explain_messages", {"workflow_id": workflow_id})
        },
        "recv_wait": _recv_wait(row),
    }
    if workflow.status == "ENQUEUED" and queue is not None:
        facts.update(_queue_facts(db, queue, row, scope))
    return Facts(now=now, heartbeat_timeout=heartbeat_timeout, workflow=workflow, **facts)


def _executors(
    db: Database, scope: dict[str, Any], heartbeat_timeout: float
) -> tuple[ExecutorFacts, ...]:
    """Every executor, alive or not, with what it knows and runs of the queue (or key)."""
    return tuple(
        ExecutorFacts(
            executor_id=e["executor_id"],
            hostname=e["hostname"],
            pid=e["pid"],
            app_version=e["app_version"],
            kind=e["kind"],
            queues=tuple(e["queues"]),
            heartbeat_at=e["heartbeat_at"],
            alive=e["alive"],
            knows_name=bool(e["knows_name"]),
            running_here=int(e["running_here"]),
        )
        for e in db.fetchall("explain_executors", {**scope, "timeout_s": heartbeat_timeout})
    )


def _recv_wait(row: dict[str, Any]) -> RecvWait | None:
    """The wait a recv recorded on the row (the diagnosis checks it is the current step)."""
    if row["wait_step"] is None or row["wait_since"] is None:
        return None
    return RecvWait(row["wait_step"], row["wait_topic"] or "", row["wait_since"], row["wait_until"])


def _queue(row: dict[str, Any]) -> QueueFacts | None:
    if row["queue_name"] is None:
        return None
    return QueueFacts(
        name=row["queue_name"],
        declared=row["queue_declared"],
        concurrency=row["concurrency"],
        worker_concurrency=row["worker_concurrency"],
        rate_limit=row["rate_limit"],
        rate_per_seconds=row["rate_per_seconds"],
        priority_enabled=row["priority_enabled"],
        partitioned=row["partitioned"],
        strict_versions=row["strict_versions"],
        paused_at=(row["paused_at"] or row["now"]) if row["paused"] else None,
    )


def _queue_facts(
    db: Database, queue: QueueFacts, row: dict[str, Any], scope: dict[str, Any]
) -> dict[str, Any]:
    """What holds the queue (or key): its running workflows, its rate window, who is ahead."""
    found: dict[str, Any] = {}
    if queue.concurrency is not None:
        running = db.fetchall("explain_running", {**scope, "limit": diagnosis.NAMED})
        found["running"] = tuple(
            Running(r["workflow_id"], r["executor_id"], r["started_at"]) for r in running
        )
        found["running_total"] = int(running[0]["total"]) if running else 0
    if queue.rate_limit is not None and queue.rate_per_seconds is not None:
        rate = db.fetchone(
            "explain_rate_window",
            {**scope, "rate_limit": queue.rate_limit, "per_s": queue.rate_per_seconds},
        )
        if rate is not None:
            found["rate_used"] = int(rate["used"])
            found["rate_next_slot"] = rate["next_slot"]
    ahead = db.fetchone("explain_ahead", {**scope, "priority": row["priority"], "seq": row["seq"]})
    if ahead is not None:
        found["higher_priority_ahead"] = int(ahead["higher_priority"])
        found["earlier_ahead"] = int(ahead["earlier"])
    return found


def _last_checkpoint(
    db: Database, serializer: serialization.Serializer, workflow_id: str, row_serializer: str
) -> Checkpoint | None:
    cp = db.fetchone("explain_last_checkpoint", {"workflow_id": workflow_id})
    if cp is None:
        return None
    wake_at = None
    if cp["name"] == diagnosis.SLEEP_STEP and cp["output"] is not None:
        # pgflow.sleep records its wake-up time (epoch seconds of the database's clock).
        try:
            epoch = float(serialization.loads_value(serializer, row_serializer, cp["output"]))
            wake_at = datetime.fromtimestamp(epoch, timezone.utc)
        except (SerializationError, TypeError, ValueError, OverflowError):
            wake_at = None
    return Checkpoint(cp["step_id"], cp["name"], cp["completed_at"], wake_at)
