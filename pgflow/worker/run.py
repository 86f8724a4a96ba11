"""``pgflow worker``: load the task module, then hand over to the supervisor."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from ..db.pool import Database
from ..errors import ConfigurationError
from ..loader import forget_app_modules, load_app
from ..settings import Settings
from .process import WorkerConfig
from .supervisor import Supervisor

if TYPE_CHECKING:
    from ..app import App


def prepare(app_spec: str, settings: Settings) -> tuple[App, WorkerConfig]:
    """Import the app, apply the worker's settings to it and resolve its queues."""
    app = load_app(app_spec)
    overrides = {k: getattr(settings, k) for k in (
        "heartbeat_interval", "heartbeat_timeout", "poll_interval", "threads", "grace",
        "log_format", "log_level")}
    if settings.database_url:
        overrides["database_url"] = settings.database_url
    if settings.schema != "pgflow":
        overrides["schema"] = settings.schema
    defaults = Settings()
    for name in ("pool_size", "pool_idle_timeout"):  # a flag given, else the app's own
        if getattr(settings, name) != getattr(defaults, name):
            overrides[name] = getattr(settings, name)
    app.settings = app.settings.replace(**overrides)
    names = settings.queues or tuple(app.queues)
    unknown = [n for n in names if n not in app.queues]
    if unknown:
        raise ConfigurationError(
            f"queue(s) {', '.join(unknown)} are not declared by the app "
            f"(declared: {', '.join(app.queues) or 'none'})")
    if not names:
        raise ConfigurationError(f"app {app.name!r} declares no queue; add app.queue(...)")
    config = WorkerConfig(
        threads=settings.threads, queues=[app.queues[n] for n in names], burst=settings.burst,
        max_jobs=settings.max_jobs_per_child, grace=settings.grace,
        poll_interval=settings.poll_interval, child_timeout=settings.child_timeout)
    return app, config


def run_worker(app_spec: str, settings: Settings) -> int:
    """Import the app (an import error fails here, before any fork), check the database,
    and supervise the worker processes. Returns the exit code."""
    loaded_before = frozenset(sys.modules)
    app, config = prepare(app_spec, settings)
    # Connect once now: a bad URL or an unmigrated schema fails before any fork. A direct
    # connection first: an unreachable server fails at once, in one line (the pool would
    # retry for its whole timeout, logging every attempt).
    Database(app.database_url(), app.settings.schema).connect().close()
    app.db.fetchone("work_left", {"app_version": app.app_version,
                                  "queues": [q.name for q in config.queues],
                                  "names": sorted(app.registry.workflows)})
    app.close_db()

    def fresh() -> tuple[App, WorkerConfig]:
        # In each new worker process: the task module's current code (new after SIGHUP).
        forget_app_modules(app_spec, loaded_before)
        return prepare(app_spec, settings)

    processes = settings.processes or os.cpu_count() or 1
    return Supervisor(app, config, processes, load=fresh).run()
