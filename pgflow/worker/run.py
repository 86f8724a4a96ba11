"""``pgflow worker``: load the task module, then hand over to the supervisor."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..db.pool import Database
from ..errors import ConfigurationError
from ..loader import forget_app_modules, load_app
from ..settings import Settings
from .config import WorkerConfig
from .supervisor import Supervisor

if TYPE_CHECKING:
    from ..app import App


def load_worker_app(app_spec: str, flags: Mapping[str, Any] | None = None) -> App:
    """Import the app (an import error fails here, before any fork) and settle its settings:
    ``flags`` given on the command line > ``PGFLOW_*`` variables > the app's code > defaults."""
    app = load_app(app_spec)
    app.settings = Settings.resolve(code=app.declared_settings, flags=flags)
    return app


def worker_config(app: App) -> WorkerConfig:
    """The worker's configuration from the app's settled settings and its queues."""
    settings = app.settings
    names = settings.queues or tuple(app.queues)
    unknown = [n for n in names if n not in app.queues]
    if unknown:
        raise ConfigurationError(
            f"queue(s) {', '.join(unknown)} are not declared by the app "
            f"(declared: {', '.join(app.queues) or 'none'})"
        )
    if not names:
        raise ConfigurationError(f"app {app.name!r} declares no queue; add app.queue(...)")
    return WorkerConfig(
        threads=settings.threads,
        queues=[app.queues[n] for n in names],
        burst=settings.burst,
        max_jobs=settings.max_jobs_per_child,
        grace=settings.grace,
        poll_interval=settings.poll_interval,
        child_timeout=settings.child_timeout,
        burst_wait_delayed=settings.burst_wait_delayed,
    )


def run_worker(
    app: App,
    app_spec: str,
    flags: Mapping[str, Any] | None = None,
    loaded_before: frozenset[str] = frozenset(),
) -> int:
    """Check the queues and the database, then supervise the worker processes. Returns the
    exit code. ``loaded_before``: the modules loaded before the task module (each new worker
    process forgets the others and imports the task module's current code)."""
    config = worker_config(app)
    # Connect once now: a bad URL or an unmigrated schema fails before any fork. A direct
    # connection first: an unreachable server fails at once, in one line (the pool would
    # retry for its whole timeout, logging every attempt).
    Database(app.database_url(), app.settings.schema).connect().close()
    app.db.fetchone(
        "work_left",
        {
            "app_version": app.app_version,
            "queues": [q.name for q in config.queues],
            "strict": app.settings.strict_versions,
            "names": sorted(app.registry.workflows),
        },
    )
    app.close_db()

    def fresh() -> tuple[App, WorkerConfig]:
        # In each new worker process: the task module's current code (new after SIGHUP).
        forget_app_modules(app_spec, loaded_before)
        new = load_worker_app(app_spec, flags)
        return new, worker_config(new)

    processes = app.settings.processes or os.cpu_count() or 1
    return Supervisor(app, config, processes, load=fresh).run()
