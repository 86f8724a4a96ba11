"""The per-process services every engine module works with, built once: settings, the
serializer, the registry, the application version, the database and its LISTEN session, the
executor identity, result wake-ups and the workflow threads.

App and Client each own one Runtime and differ only in what they give it: an App brings its
registry and may migrate the schema on first use; a Client has no code and only checks it.
Nothing here connects until first used, and nothing built in one process is used in another
(the pool and the LISTEN session are rebuilt after a fork).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from .attempts import AbandonedBodies
from .completions import Completions
from .db import migrate as migrations
from .db.notify import Notifications
from .db.pool import Database
from .errors import ConnectionRejected, DatabaseUnavailable, SchemaNotMigrated
from .executor import Executor
from .registry import Registry
from .serialization import Serializer
from .settings import Settings

log = structlog.get_logger("pgflow")


class Runtime:
    """One process's services. ``may_migrate``: on first use, migrate a schema that is not
    (when ``settings.auto_migrate``); False only checks it (a Client never migrates).
    ``pool_size``: the pool's size (None: ``settings.connections`` when the pool is built).

    >>> rt = Runtime(Settings.from_env(), get_serializer("json"))
    >>> rt.db.fetchone("clock_now")
    """

    def __init__(
        self,
        settings: Settings,
        serializer: Serializer,
        *,
        registry: Registry | None = None,
        application_name: str = "pgflow",
        pool_size: int | None = None,
        may_migrate: bool = True,
    ) -> None:
        self.settings = settings
        self.serializer = serializer
        self.registry = registry if registry is not None else Registry()
        self.application_name = application_name
        self.pool_size = pool_size
        self.may_migrate = may_migrate
        self.completions = Completions()
        # Step bodies left running past their time_limit (a worker replaces its process when
        # they pile up or run on too long).
        self.abandoned_bodies = AbandonedBodies()
        self._db: Database | None = None
        self._db_lock = threading.Lock()
        self._notifications: Notifications | None = None
        self._executor: Executor | None = None
        self._executor_lock = threading.Lock()
        self._version: str | None = None
        self._threads: set[threading.Thread] = set()

    def __repr__(self) -> str:
        return f"Runtime({self.application_name!r}, schema={self.settings.schema!r})"

    # -- the database --------------------------------------------------------------------------

    def database_url(self) -> str:
        """The URL in use: the configured one, else the embedded server's (started now; its
        home, ``.pgflow`` by default, is looked for in parent folders too)."""
        if self.settings.database_url:
            return self.settings.database_url
        from .db.embedded import locate_home, start_embedded

        url = start_embedded(locate_home(self.settings.home))
        self.settings = self.settings.replace(database_url=url)
        return url

    @property
    def db(self) -> Database:
        """This process's pool, built on first use (one direct connection, then the schema
        checked, or migrated when allowed); rebuilt after ``close_db``."""
        if self._db is None:
            with self._db_lock:
                if self._db is None:
                    self._db = self._open_db()
        return self._db

    def _open_db(self) -> Database:
        db = Database(
            self.database_url(),
            self.settings.schema,
            max_size=self.pool_size or self.settings.connections,
            idle_timeout=self.settings.pool_idle_timeout,
            application_name=self.application_name,
        )
        try:
            # Retried while the server is away, as every later use is; a server that refuses
            # (ConnectionRejected) fails at once.
            db.retrying(lambda: self._first_use(db))
        except BaseException:
            db.close()  # its pool would otherwise live on, unowned
            raise
        return db

    def _first_use(self, db: Database) -> None:
        # One direct connection first: a server that refuses says why now, rather than after
        # the pool's wait.
        db.connect().close()
        self._prepare_schema(db)

    def _prepare_schema(self, db: Database) -> None:
        try:
            migrations.check_migrated(db)
            return
        except SchemaNotMigrated:
            if not (self.may_migrate and self.settings.auto_migrate):
                raise
        try:
            migrations.migrate(db)
        except (DatabaseUnavailable, ConnectionRejected):
            raise  # the server went away (retried) or refused: not a question of privileges
        except Exception as exc:
            raise SchemaNotMigrated(
                f"pgflow's schema {db.schema!r} at {db.target} is not migrated and this role "
                f"cannot migrate it ({exc}); run `pgflow migrate` as the owner"
            ) from None

    def close_db(self) -> None:
        """Close this process's pool (the supervisor does so before every fork)."""
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def close_notifications(self) -> None:
        """Stop this process's LISTEN session (started again on next use)."""
        notes, self._notifications = self._notifications, None
        if notes is not None:
            notes.stop()

    @property
    def notifications(self) -> Notifications:
        """This process's LISTEN session for messages and events (started on first use)."""
        notes = self._notifications
        if notes is None or notes.pid != os.getpid():
            db = self.db  # before the lock: building the pool takes it too
            with self._db_lock:
                notes = self._notifications
                if notes is None or notes.pid != os.getpid():
                    notes = self._notifications = Notifications(db)
        return notes

    def started_notifications(self) -> Notifications | None:
        """The LISTEN session if this process has started one (never starts it)."""
        notes = self._notifications
        return notes if notes is not None and notes.pid == os.getpid() else None

    # -- identity ------------------------------------------------------------------------------

    @property
    def app_version(self) -> str:
        """The configured version, else a hash of the registered code (fixed at first use)."""
        if self._version is None:
            self._version = self.settings.app_version or self.registry.version_hash()
        return self._version

    @property
    def executor(self) -> Executor:
        """This process's owner identity, created once (however many threads ask first).
        Work started or adopted under it keeps it to the end, even if it is replaced."""
        executor = self._executor
        if executor is None:
            with self._executor_lock:
                if self._executor is None:
                    self._executor = Executor(self)
                executor = self._executor
        return executor

    @property
    def current_executor(self) -> Executor | None:
        """The owner identity if one was created (never creates one)."""
        return self._executor

    def use_executor(self, executor: Executor | None) -> Executor | None:
        """Make ``executor`` this process's owner identity (a worker process does this; None:
        a new one on next use). Returns the one it replaces. Runs in flight keep the owner
        they started under."""
        with self._executor_lock:
            previous, self._executor = self._executor, executor
        return previous

    # -- workflow threads ----------------------------------------------------------------------

    def spawn(self, target: Callable[[], Any]) -> threading.Thread:
        """Run ``target`` on a new thread (the process waits for it at exit)."""

        def body() -> None:
            try:
                target()
            except BaseException as exc:
                log.debug("workflow_thread_ended", error=repr(exc))
            finally:
                self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=body, name="pgflow-workflow")
        self._threads.add(thread)
        thread.start()
        return thread

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for this process's workflow threads to finish; True when none are left."""
        end = None if timeout is None else time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(None if end is None else max(0.0, end - time.monotonic()))
        return not self.busy()

    def busy(self) -> bool:
        """Whether a workflow thread of this process is still running."""
        return any(t.is_alive() for t in self._threads)

    def close(self, timeout: float | None = 10.0) -> None:
        """Wait for workflow threads, stop the executor's heartbeat (deregistering it when
        nothing of it runs on), stop the LISTEN session and close the pool. Everything is
        built again if used afterwards."""
        self.wait_idle(timeout)
        if self._executor is not None:
            self._executor.stop(deregister=not self.busy())
        self.close_notifications()
        if self._db is not None:
            self._db.close()
            self._db = None
