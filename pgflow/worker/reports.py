"""What the supervisor tells the operator: the ``worker_starting`` banner with the effective
settings, and the ``--burst`` progress lines (done, failed, left, jobs/s; at the end, what is
left and why)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, TextIO

import structlog

from ..db.errors import describe_target
from ..errors import PgflowError
from ..management import Stranded, paused_queues, stranded_work

if TYPE_CHECKING:
    from ..app import App
    from ..queues import Queue
    from .config import WorkerConfig

log = structlog.get_logger("pgflow")


def _pgflow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pgflow")
    except PackageNotFoundError:
        return "unknown"


def _describe(q: Queue) -> str:
    """``name (concurrency=2, rate=...)``, or the bare name for a queue without options."""
    options = (
        f"concurrency={q.concurrency}" if q.concurrency else "",
        f"worker_concurrency={q.worker_concurrency}" if q.worker_concurrency else "",
        f"rate={q.rate_limit}" if q.rate_limit else "",
        "priority" if q.priority_enabled else "",
        "partitioned" if q.partitioned else "",
    )
    return (f"{q.name} (" + ", ".join(p for p in options if p) + ")").replace(" ()", "")


def log_banner(app: App, config: WorkerConfig, processes: int) -> None:
    """One ``worker_starting`` line: the effective values (flag > PGFLOW_* > code > default),
    as the children use them."""
    settings = app.settings
    try:
        paused = sorted(paused_queues(app.db) & {q.name for q in config.queues})
    except PgflowError:
        paused = []
    finally:
        app.close_db()  # no pool crosses the fork
    log.info(
        "worker_starting",
        app=app.name,
        queues=", ".join(_describe(q) for q in config.queues),
        processes=processes,
        threads=config.threads,
        heartbeat_interval=settings.heartbeat_interval,
        heartbeat_timeout=settings.heartbeat_timeout,
        grace=config.grace,
        poll_interval=config.poll_interval,
        child_timeout=settings.child_timeout,
        pool_size=settings.connections,
        pool_idle_timeout=settings.pool_idle_timeout,
        database=describe_target(settings.database_url or ""),
        schema=settings.schema,
        app_version=app.app_version,
        pgflow_version=_pgflow_version(),
        burst=config.burst,
        paused=",".join(paused) or None,
    )


class BurstProgress:
    """The ``--burst`` progress line, from the queues' rows since the worker started."""

    def __init__(self, app: App, queues: list[str], out: TextIO) -> None:
        self.app = app
        self.queues = queues
        self.out = out
        self.started_at = datetime.now(timezone.utc)
        self.t0 = time.monotonic()

    def show(self, final: bool = False) -> None:
        left: list[Stranded] = []
        paused: list[str] = []
        app = self.app
        try:
            row = app.db.fetchone(
                "queue_progress", {"queues": self.queues, "since": self.started_at}
            )
            if final and row is not None and row["left_"]:
                left = stranded_work(app.db, app.settings.heartbeat_timeout, self.queues)
                paused = sorted(paused_queues(app.db) & set(self.queues))
        except PgflowError:
            return
        finally:
            app.close_db()  # a short-lived pool in the supervisor, closed before the next fork
        if row is None:
            return
        rate = (row["done"] + row["failed"]) / max(1e-6, time.monotonic() - self.t0)
        self._print(
            f"{'done' if final else 'progress'}: {row['done']} done, {row['failed']} failed, "
            f"{row['left_']} left, {rate:.0f} jobs/s"
        )
        for s in left:
            self._print(
                f"  left: {s.count} x {s.name} in {s.queue_name or '(no queue)'} "
                f"({s.reason.replace('_', ' ')}): {s.remedy}"
            )
        for name in paused:
            self._print(f"  left: queue {name} is paused (`pgflow queues resume {name}`)")

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)
