"""Client: enqueue, message and manage workflows from a program that does not import the
application's code (a web server of another team, a script, the ``pgflow`` CLI).

>>> client = pgflow.Client("postgresql://localhost/shop")
>>> h = client.enqueue("payments", "shop.tasks.checkout", 7, "4242", dedup_id="order-7")
>>> h.result(timeout=60)
"""

from __future__ import annotations

import os
import threading
from typing import Any

import structlog

from . import management, messages, serialization, tracing
from . import versions as app_versions
from .db import migrate as migrations
from .db.notify import Notifications
from .db.pool import Database
from .errors import ConfigurationError, UnknownWorkflow
from .limits import check_count, check_id, check_text, to_ms
from .queues import EnqueueOptions, Queue, validate_name
from .registry import APP_DEFAULT, RecoveryLimit, recovery_limit
from .settings import Settings
from .workflows import Completions, WorkflowHandle, insert_enqueued, new_workflow_id, notify_channel

log = structlog.get_logger("pgflow")


def _first_use(db: Database) -> None:
    db.connect().close()
    migrations.check_migrated(db)


class Client(management.WorkflowQueries):
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
        self.settings = base.replace(**changes) if changes else base
        if not self.settings.database_url:
            raise ConfigurationError(
                "pgflow.Client needs a database URL: pass it, or set PGFLOW_DATABASE_URL"
            )
        self.serializer = serialization.get_serializer(self.settings.serializer)
        self.completions = Completions()  # WorkflowHandle waits through these
        self._db: Database | None = None
        self._notifications: Notifications | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Client(schema={self.settings.schema!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db(self) -> Database:
        if self._db is None:
            with self._lock:
                if self._db is None:
                    db = Database(
                        self.settings.database_url or "",
                        self.settings.schema,
                        max_size=self.settings.pool_size or 4,
                        idle_timeout=self.settings.pool_idle_timeout,
                        application_name="pgflow:client",
                    )
                    try:
                        # Retried while the server is away, as every later use is. One
                        # direct connection first: a server that refuses says why now
                        # (ConnectionRejected, not retried), rather than after the pool's wait.
                        db.retrying(lambda: _first_use(db))
                    except BaseException:
                        db.close()
                        raise
                    self._db = db
        return self._db

    @property
    def notifications(self) -> Notifications:
        notes = self._notifications
        if notes is None or notes.pid != os.getpid():
            db = self.db  # before the lock: building the pool takes it too
            with self._lock:
                notes = self._notifications
                if notes is None or notes.pid != os.getpid():
                    notes = self._notifications = Notifications(db)
        return notes

    def close(self) -> None:
        """Close the connections (the client opens them again if used afterwards)."""
        if self._notifications is not None:
            self._notifications.stop()
            self._notifications = None
        if self._db is not None:
            self._db.close()
            self._db = None

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
        inputs = serialization.dumps_inputs(
            self.serializer,
            args,
            kwargs or {},
            max_bytes=self.settings.max_payload_bytes,
            what=f"workflow {workflow_name!r}",
        )
        workflow_id = workflow_id or new_workflow_id()
        insert_enqueued(
            self.db,
            {
                "workflow_id": workflow_id,
                "name": workflow_name,
                "queue_name": queue,
                "dedup_id": dedup_id,
                "priority": priority or 0,
                "partition_key": partition_key,
                "parent_workflow_id": None,
                "app_version": app_version,
                "max_recovery_attempts": recovery_limit(
                    max_recovery_attempts, self.settings.max_recovery_attempts
                ),
                "serializer": self.serializer.name,
                "inputs": inputs,
                "timeout_ms": to_ms("timeout", timeout),
                "deadline": None,
                "delay_ms": to_ms("delay", delay or 0),
                "channel": notify_channel(self.db.schema),
                "trace_context": tracing.capture(),  # tracing: the enqueuer's span
            },
        )
        return WorkflowHandle(self, workflow_id)  # type: ignore[arg-type]

    def _queue_for(self, name: str, priority: int | None, partition_key: str | None) -> Queue:
        """The queue as its workers last declared it (for the option checks); a queue no
        worker declared yet is taken as the options describe it."""
        row = self.db.fetchone("get_queue", {"name": name})
        if row is None:
            return Queue(
                name, priority_enabled=priority is not None, partitioned=partition_key is not None
            )
        return Queue(name, priority_enabled=row["priority_enabled"], partitioned=row["partitioned"])

    # -- messages and events -------------------------------------------------------------------

    def send(self, destination_id: str, message: Any, topic: str | None = None) -> None:
        """Send ``message`` to workflow ``destination_id`` (its ``pgflow.recv`` gets it);
        UnknownWorkflow when no workflow has that id."""
        messages.send_message(
            self.db,
            self.serializer,
            destination_id,
            message,
            topic,
            max_bytes=self.settings.max_payload_bytes,
        )

    def get_event(self, workflow_id: str, key: str, timeout: float = 60.0) -> Any:
        """The latest value ``workflow_id`` published for ``key``, waiting up to ``timeout``
        seconds; None when there is none."""
        return messages.read_event(
            self.db, self.notifications, self.serializer, workflow_id, key, timeout
        )

    # -- reading and managing ------------------------------------------------------------------

    def retrieve(self, workflow_id: str) -> WorkflowHandle[Any]:
        """A handle on an existing workflow (raises UnknownWorkflow when there is none)."""
        management.require_status(self.db, self.serializer, workflow_id)
        return WorkflowHandle(self, workflow_id)  # type: ignore[arg-type]

    def resume(self, workflow_id: str) -> WorkflowHandle[Any]:
        """Run a workflow now (see ``App.resume``): an ended one again from its last completed
        step, a queued one without its delay; workers or launched executors of its version
        pick it up. A running or succeeded one is left as it is. Returns its handle."""
        management.resume(self.db, self.serializer, workflow_id)
        return WorkflowHandle(self, workflow_id)  # type: ignore[arg-type]

    def fork(
        self,
        workflow_id: str,
        from_step: int = 1,
        *,
        new_workflow_id: str | None = None,
        app_version: str | None = None,
    ) -> WorkflowHandle[Any]:
        """A new workflow reusing the steps before ``from_step`` (see ``App.fork``)."""
        new_id = management.fork(
            self.db,
            workflow_id,
            from_step,
            new_workflow_id=new_workflow_id,
            app_version=app_version,
        )
        return WorkflowHandle(self, new_id)  # type: ignore[arg-type]

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
