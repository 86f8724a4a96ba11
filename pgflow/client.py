"""Client: enqueue, message and manage workflows from a program that does not import the
application's code (a web server of another team, a script, the ``pgflow`` CLI).

>>> client = pgflow.Client("postgresql://localhost/shop")
>>> h = client.enqueue("payments", "shop.tasks.checkout", 7, "4242", dedup_id="order-7")
>>> h.result(timeout=60)
"""

from __future__ import annotations

from typing import Any

import structlog

from . import management, serialization
from . import versions as app_versions
from .enqueue import enqueue_by_name
from .errors import ConfigurationError, UnknownWorkflow
from .handles import WorkflowHandle
from .limits import check_count, check_id, check_text
from .operations import Operations
from .queues import EnqueueOptions, Queue, validate_name
from .registry import APP_DEFAULT, RecoveryLimit
from .runtime import Runtime
from .settings import Settings

log = structlog.get_logger("pgflow")


class Client(Operations):
    """Talks to pgflow's tables directly: no App, no workflow code, no migrations (run
    ``pgflow migrate`` first). Workflows are named as the workers know them
    (``module.function`` unless declared with ``name=``)."""

    def __init__(
        self,
        database_url: str | None = None,
        schema: str | None = None,
        *,
        serializer: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        base = settings or Settings.from_env()
        changes = {
            k: v
            for k, v in dict(
                database_url=database_url, schema=schema, serializer=serializer
            ).items()
            if v is not None
        }
        resolved = base.replace(**changes) if changes else base
        if not resolved.database_url:
            raise ConfigurationError(
                "pgflow.Client needs a database URL: pass it, or set PGFLOW_DATABASE_URL"
            )
        self.runtime = Runtime(
            resolved,
            serialization.get_serializer(resolved.serializer),
            application_name="pgflow:client",
            pool_size=resolved.pool_size or 4,
            may_migrate=False,  # a Client only checks the schema; `pgflow migrate` migrates
        )

    def __repr__(self) -> str:
        return f"Client(schema={self.settings.schema!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (the client opens them again if used afterwards)."""
        self.runtime.close()

    # -- enqueueing ----------------------------------------------------------------------------

    def enqueue(
        self,
        queue: str,
        workflow_name: str,
        *args: Any,
        kwargs: dict[str, Any] | None = None,
        workflow_id: str | None = None,
        dedup_id: str | None = None,
        priority: int | None = None,
        partition_key: str | None = None,
        delay: float | None = None,
        timeout: float | None = None,
        app_version: str | None = None,
        max_recovery_attempts: RecoveryLimit = APP_DEFAULT,
        strict: bool = False,
    ) -> WorkflowHandle[Any]:
        """Queue ``workflow_name(*args, **kwargs)`` on ``queue``; returns its handle.

        No worker needs to be running. The row carries no version: the first worker of any
        version that knows ``workflow_name`` starts it (and gives it its version); a queue
        declared ``strict_versions`` is served only to ``app_version``'s workers. When no
        registered version knows the name (or the given version), this logs a warning
        (``strict=True``: raises UnknownWorkflow, enqueuing nothing). ``timeout`` (seconds)
        sets the deadline the workflow's own declaration would have set (the client cannot
        read it), and so does
        ``max_recovery_attempts`` (None: unlimited; not given: the ``max_recovery_attempts``
        setting).
        """
        check_id("workflow name", workflow_name)
        validate_name("queue name", queue)  # before it is looked up
        if app_version is not None:
            check_text("app_version", app_version)
        if max_recovery_attempts is not APP_DEFAULT:
            check_count("max_recovery_attempts", max_recovery_attempts)
        queue_def = self._queue_for(queue, priority, partition_key)
        opts = EnqueueOptions(workflow_id, dedup_id, priority, partition_key, delay, timeout)
        queue_def.check_options(opts)
        problem = app_versions.check_enqueue(self.db, workflow_name, app_version)
        if problem is not None:
            if strict:
                raise UnknownWorkflow(f"{problem}; nothing was enqueued")
            log.warning(
                "workflow_name_unknown", workflow_name=workflow_name, queue=queue, problem=problem
            )
        return enqueue_by_name(
            self.runtime,
            queue,
            workflow_name,
            args,
            kwargs or {},
            opts,
            app_version=app_version,
            max_recovery_attempts=max_recovery_attempts,
        )

    def _queue_for(self, name: str, priority: int | None, partition_key: str | None) -> Queue:
        """The queue as its workers last declared it (for the option checks); a queue no
        worker declared yet is taken as the options describe it."""
        row = self.db.fetchone("get_queue", {"name": name})
        if row is None:
            return Queue(
                name, priority_enabled=priority is not None, partitioned=partition_key is not None
            )
        return Queue(name, priority_enabled=row["priority_enabled"], partitioned=row["partitioned"])

    # -- versions and queues -------------------------------------------------------------------

    def versions(self) -> list[app_versions.VersionInfo]:
        """Every application version: first and last seen, live executors, work per status."""
        return app_versions.list_versions(self.db, self.settings.heartbeat_timeout)

    def count_retarget(
        self,
        from_version: str,
        statuses: tuple[str, ...] = app_versions.WAITING,
    ) -> int:
        """How many workflows ``retarget`` would move."""
        return app_versions.count_retarget(self.db, from_version, statuses)

    def retarget(
        self, from_version: str, to_version: str, statuses: tuple[str, ...] = app_versions.WAITING
    ) -> int:
        """Move workflows of ``from_version`` to ``to_version`` (ids kept; by default the
        waiting ones: ENQUEUED, and PENDING without an owner); returns how many moved."""
        if not any(v.app_version == to_version for v in self.versions()):
            raise ConfigurationError(
                f"no worker ever ran app_version {to_version!r}; `pgflow versions` lists the "
                "versions there are"
            )
        return app_versions.retarget(self.db, from_version, to_version, statuses)

    def pause_queue(self, name: str) -> bool:
        """Stop every worker from claiming from queue ``name`` (within about a second; work
        already running finishes); it stays paused, across restarts, until resumed. Returns
        whether it was running before."""
        validate_name("queue name", name)
        return management.set_queue_paused(self.db, name, True)

    def resume_queue(self, name: str) -> bool:
        """Let workers claim from queue ``name`` again; returns whether it was paused."""
        validate_name("queue name", name)
        return management.set_queue_paused(self.db, name, False)

    def queue_report(self) -> tuple[list[management.QueueInfo], list[management.Stranded]]:
        """Per-queue counts, limits and rate-window use, and work no live version can run."""
        return management.queue_report(self.db, self.settings.heartbeat_timeout)
