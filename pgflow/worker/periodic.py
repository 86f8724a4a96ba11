"""A small scheduler for a worker process's periodic jobs (recovery, schedule ticks, stranded
reports, retention, the paused-queue read).

Each job has a name, an interval and a next-due time. The claim loop runs the due ones on each
turn, on its own thread, and waits no longer than the next one is due, so the loop itself only
waits, claims and checks for the end (huey's consumer keeps its scheduler beside its workers
in the same spirit). A job that fails with a PgflowError is logged under its own event name and
runs again after its interval; anything else is a bug and ends the process, as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from ..errors import DatabaseUnavailable, PgflowError

if TYPE_CHECKING:
    from ..db.pool import Database

log = structlog.get_logger("pgflow")

# The shortest wait a job may ask for: a job that cannot run yet (a stranded report right
# after an outage) is not retried in a hot loop.
MIN_INTERVAL = 0.05


@dataclass
class Job:
    """One periodic job. ``run`` returns the seconds until its next run, or None for
    ``every``; ``failed_event`` is the log event of a PgflowError it raises."""

    name: str
    every: float
    run: Callable[[], float | None]
    failed_event: str
    next_due: float = 0.0  # monotonic seconds; 0.0: at the loop's first turn


def log_failure(db: Database, event: str, exc: PgflowError, **fields: Any) -> None:
    """A periodic job (or a claim) failed: a warning, unless the database is away (that is
    logged once, by the Database, and the work runs again once it is back)."""
    if isinstance(exc, DatabaseUnavailable) or db.suspect:
        log.debug(event, error=str(exc), **fields)
    else:
        log.warning(event, error=str(exc), **fields)


class Periodic:
    """Named jobs, run in the order they were added when due (``run_due``)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.jobs: list[Job] = []

    def add(
        self, name: str, every: float, run: Callable[[], float | None], failed_event: str
    ) -> None:
        self.jobs.append(Job(name, every, run, failed_event))

    def run_due(self, now: float) -> None:
        """Run every job due at ``now``; each is next due its interval after ``now``."""
        for job in self.jobs:
            if now < job.next_due:
                continue
            try:
                delay = job.run()
            except PgflowError as exc:
                log_failure(self.db, job.failed_event, exc)
                delay = None
            job.next_due = now + max(MIN_INTERVAL, job.every if delay is None else delay)

    def due_in(self, now: float) -> float:
        """Seconds until the next job is due (infinite without jobs)."""
        return min((job.next_due for job in self.jobs), default=math.inf) - now

    def run_soon(self, name: str) -> None:
        """Make ``name`` due at the next turn (the clock moved: owners may have died)."""
        for job in self.jobs:
            if job.name == name:
                job.next_due = 0.0
