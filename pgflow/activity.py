"""``pgflow workers``: the executors and what each runs now (Celery's ``inspect active``).

Live executors (heartbeat within the timeout) first, then those whose heartbeat is stale: dead,
and not yet reaped by a live executor (which then hands their work back); and those that died
recently: reaped, with how much of their work was handed back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db.pool import Database


@dataclass(frozen=True)
class ActiveWorkflow:
    """A workflow PENDING under an executor: running, or held until its process is reaped."""

    workflow_id: str
    name: str
    queue_name: str | None
    partition_key: str | None
    started_at: datetime | None
    running_s: float | None


@dataclass(frozen=True)
class WorkerInfo:
    """One executor: a worker process (``kind`` 'worker') or a launched app ('app')."""

    executor_id: str
    hostname: str
    pid: int
    app_version: str | None
    kind: str
    queues: list[str]
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age_s: float
    alive: bool
    workflows: list[ActiveWorkflow]


def list_workers(db: Database, heartbeat_timeout: float) -> list[WorkerInfo]:
    """Every executor, live ones first (newest first), with its PENDING workflows."""
    rows = db.retrying(lambda: db.fetchall("list_workers", {"timeout_s": heartbeat_timeout}))
    if not rows:
        return []
    now = rows[0]["now"]
    work: dict[str, list[ActiveWorkflow]] = {}
    for r in db.fetchall("list_worker_work", {"executor_ids": [e["executor_id"] for e in rows]}):
        started = r["started_at"]
        work.setdefault(r["executor_id"], []).append(
            ActiveWorkflow(
                r["workflow_id"],
                r["name"],
                r["queue_name"],
                r["partition_key"],
                started,
                None if started is None else max(0.0, (now - started).total_seconds()),
            )
        )
    return [
        WorkerInfo(
            executor_id=e["executor_id"],
            hostname=e["hostname"],
            pid=e["pid"],
            app_version=e["app_version"],
            kind=e["kind"],
            queues=list(e["queues"]),
            started_at=e["started_at"],
            heartbeat_at=e["heartbeat_at"],
            heartbeat_age_s=max(0.0, (now - e["heartbeat_at"]).total_seconds()),
            alive=e["alive"],
            workflows=work.get(e["executor_id"], []),
        )
        for e in rows
    ]


@dataclass(frozen=True)
class DeadExecutor:
    """An executor that was reaped: its last heartbeat, when and by whom it was reaped
    (``died_at``, ``reaped_by``), and how many PENDING workflows it held then (``released``:
    handed back to their queues, or to the pool live executors adopt from)."""

    executor_id: str
    hostname: str
    pid: int
    app_version: str | None
    kind: str
    last_heartbeat_at: datetime
    died_at: datetime
    died_ago_s: float
    reaped_by: str
    released: int


def recent_deaths(db: Database, limit: int = 100) -> list[DeadExecutor]:
    """The executors reaped recently, newest first (the record keeps 100, none past a day)."""
    rows = db.retrying(lambda: db.fetchall("list_executor_deaths", {"limit": limit}))
    return [
        DeadExecutor(
            executor_id=r["executor_id"],
            hostname=r["hostname"],
            pid=r["pid"],
            app_version=r["app_version"],
            kind=r["kind"],
            last_heartbeat_at=r["last_heartbeat_at"],
            died_at=r["died_at"],
            died_ago_s=max(0.0, (r["now"] - r["died_at"]).total_seconds()),
            reaped_by=r["reaped_by"],
            released=r["released"],
        )
        for r in rows
    ]
