"""Cron schedules: ``@app.scheduled("*/5 * * * *")`` runs a workflow once per tick.

Exactly once across any number of workers and machines: a tick is enqueued on the internal
queue ``pgflow.schedules`` with the workflow id ``sched:<workflow name>:<tick ISO time>``, and
``ON CONFLICT DO NOTHING`` on that id lets only the first of the racing workers insert it.
Every worker process calls :func:`tick` about once a second. Cron expressions (croniter: 5
fields, or 6 with seconds FIRST, as DBOS and Quartz read them) are read in UTC; the workflow
gets its tick as an aware UTC datetime.

Ticks missed while no worker ran: with ``catch_up=False`` (the default) only the latest one
runs; with ``catch_up=True`` every one does, oldest first (at most ``MAX_CATCH_UP`` per call,
the rest on the next calls). A schedule runs no tick from before it was first seen.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Protocol

from croniter import croniter

from . import serialization
from .enqueue import workflow_row
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .registry import WorkflowDef
    from .runtime import Runtime

SCHEDULE_QUEUE = "pgflow.schedules"
MAX_CATCH_UP = 1000


@dataclass(frozen=True)
class Schedule:
    """One scheduled workflow."""

    cron: str
    catch_up: bool
    workflow: WorkflowDef

    @property
    def name(self) -> str:
        return self.workflow.name


def validate_cron(cron: str) -> str:
    if (
        not isinstance(cron, str)
        or len(cron.split()) > 6
        or not croniter.is_valid(cron, second_at_beginning=True)
    ):
        raise ConfigurationError(
            f"{cron!r} is not a cron expression; write 5 fields (minute hour day month "
            "weekday, e.g. '*/5 * * * *') or 6 with seconds first (second minute hour day "
            "month weekday, e.g. '*/10 * * * * *' for every 10 seconds, as DBOS reads them)"
        )
    return cron


def _cron(cron: str, start: datetime) -> croniter:
    # Six fields read seconds first (DBOS, Quartz), not croniter's default of seconds last.
    return croniter(cron, start, second_at_beginning=True)


def schedule_for(wf: WorkflowDef, cron: str, catch_up: bool) -> Schedule:
    """The schedule of ``wf`` on ``cron`` (already validated); ConfigurationError unless the
    workflow takes one argument, the tick's time. ``@app.scheduled`` declares it."""
    try:
        inspect.signature(wf.fn).bind(datetime.now(timezone.utc))
    except TypeError:
        raise ConfigurationError(
            f"scheduled workflow {wf.name!r} must take one argument, the tick's time "
            "(a timezone-aware datetime)"
        ) from None
    return Schedule(cron, catch_up, wf)


class Scheduler(Protocol):
    """What ticking needs: the declared schedules and the Runtime to enqueue through (an App)."""

    @property
    def runtime(self) -> Runtime: ...
    @property
    def schedules(self) -> Mapping[str, Schedule]: ...


def due_ticks(
    cron: str, after: datetime, now: datetime, catch_up: bool, limit: int = MAX_CATCH_UP
) -> list[datetime]:
    """PURE: the ticks in ``(after, now]`` to run, oldest first: all of them (up to ``limit``)
    with ``catch_up``, else only the latest."""
    if now <= after:
        return []
    if not catch_up:
        prev: datetime = _cron(cron, now).get_prev(datetime)
        following: datetime = _cron(cron, prev).get_next(datetime)
        latest = following if following <= now else prev
        return [latest] if latest > after else []
    ticks: list[datetime] = []
    it = _cron(cron, after)
    while len(ticks) < limit:
        tick_at: datetime = it.get_next(datetime)
        if tick_at > now:
            break
        ticks.append(tick_at)
    return ticks


def tick_id(name: str, tick_at: datetime) -> str:
    """The workflow id of one tick: the same on every machine, so it is inserted once."""
    return f"sched:{name}:{tick_at.astimezone(timezone.utc).isoformat()}"


def tick(scheduler: Scheduler, now: datetime | None = None) -> list[str]:
    """Enqueue every due tick of the app's schedules; return the ids this call inserted.

    Safe to call from any number of processes at once (each tick is inserted once).
    ``now`` defaults to the database clock.
    """
    if not scheduler.schedules:
        return []
    found = list(scheduler.schedules.values())
    rt = scheduler.runtime
    db = rt.db
    rows = db.fetchall(
        "schedule_state",
        {"names": [s.name for s in found], "crons": [s.cron for s in found], "now": now},
    )
    inserted: list[str] = []
    for row in rows:
        sched = scheduler.schedules[row["name"]]
        ticks = due_ticks(sched.cron, row["last_tick"], row["now"], sched.catch_up)
        if ticks:
            inserted.extend(_enqueue_ticks(rt, sched, ticks))
    return inserted


def _enqueue_ticks(rt: Runtime, sched: Schedule, ticks: list[datetime]) -> list[str]:
    wf = sched.workflow
    utc = [t.astimezone(timezone.utc) for t in ticks]
    params = workflow_row(
        rt,
        wf.name,
        app_version=rt.app_version,
        max_recovery_attempts=wf.max_recovery_attempts,
        timeout=wf.timeout,
        queue_name=SCHEDULE_QUEUE,
        workflow_ids=[tick_id(sched.name, t) for t in utc],
        inputs=[
            serialization.dumps_inputs(
                rt.serializer,
                (t,),
                {},
                max_bytes=rt.settings.max_payload_bytes,
                what=f"tick of {sched.name!r}",
            )
            for t in utc
        ],
    )
    db = rt.db

    def attempt() -> list[str]:
        with db.connection() as conn, conn.transaction():
            rows = db.execute(conn, "enqueue_workflows", params).fetchall()
            db.execute(
                conn,
                "advance_schedule",
                {"name": sched.name, "cron": sched.cron, "last_tick": utc[-1]},
            )
            return [r["workflow_id"] for r in rows]

    return db.retrying(attempt)
