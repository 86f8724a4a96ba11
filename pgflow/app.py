"""App: the decorators and the public methods. Inert until first used (nothing connects at
import or construction)."""

from __future__ import annotations

import functools
import inspect
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar, overload

import structlog

from . import management, messages, schedules, serialization, steps, workflows
from .attempts import AbandonedBodies
from .db import migrate as migrations
from .db.notify import Notifications, message_channel
from .db.pool import Database
from .errors import (
    ConfigurationError,
    ConnectionRejected,
    DatabaseUnavailable,
    Deduplicated,
    SchemaNotMigrated,
)
from .limits import check_id, check_seconds, check_time_limit
from .queues import EnqueueOptions, Queue, Rate
from .records import Status, WorkflowStatus
from .recovery import Executor
from .registry import APP_DEFAULT, RecoveryLimit, Registry, StepDef, WorkflowDef, qualified_name
from .schedules import Schedule
from .serialization_types import TypedJson
from .settings import Settings
from .workflows import Completions, WorkflowHandle

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T", bound=type)
log = structlog.get_logger("pgflow")


def _refuse_async(fn: Callable[..., Any], kind: str) -> None:
    """An ``async def`` would run as a coroutine object nobody awaits (and fail to serialize
    it): refuse it when it is declared, until pgflow runs coroutines."""
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise ConfigurationError(
            f"{getattr(fn, '__qualname__', fn)!r} is an async def: pgflow runs plain (sync) "
            f"functions as a {kind} for now; make it a def (call async code inside it with "
            "asyncio.run(...))"
        )


def _priority_enabled(queue: str, priority_enabled: bool | None, priority: bool | None) -> bool:
    """The queue's priority flag from ``priority_enabled=``, or from ``priority=``, its old
    name (deprecated: ``.options(priority=N)`` is the per-enqueue value)."""
    if priority is None:
        return bool(priority_enabled)
    if priority_enabled is not None:
        raise ConfigurationError(
            f"queue {queue!r}: give priority_enabled= only (priority= is its deprecated old name)"
        )
    warnings.warn(
        "app.queue(..., priority=) is deprecated and will be removed in the next "
        "release; use priority_enabled=",
        DeprecationWarning,
        stacklevel=3,
    )
    return bool(priority)


class StartOptions:
    """``app.options(workflow_id=..., timeout=...)``: start or call with an id or deadline."""

    def __init__(self, app: App, workflow_id: str | None, timeout: float | None) -> None:
        self._app, self._workflow_id, self._timeout = app, workflow_id, timeout

    @overload
    def start(self, fn: str, /, *args: Any, **kwargs: Any) -> WorkflowHandle[Any]: ...
    @overload
    def start(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> WorkflowHandle[R]: ...

    def start(
        self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        """Start ``fn(*args, **kwargs)`` now on a thread of this process; returns its handle."""
        handle, _ = workflows.start(
            self._app,
            self._app._workflow_def(fn),
            args,
            kwargs,
            workflow_id=self._workflow_id,
            timeout=self._timeout,
        )
        return handle

    @overload
    def call(self, fn: str, /, *args: Any, **kwargs: Any) -> Any: ...
    @overload
    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def call(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` durably in this thread and return its result."""
        _, result = workflows.start(
            self._app,
            self._app._workflow_def(fn),
            args,
            kwargs,
            workflow_id=self._workflow_id,
            timeout=self._timeout,
            run="inline",
        )
        return result


class App(management.WorkflowQueries):
    """A pgflow application: its workflows, steps, queues and database.

    >>> app = pgflow.App("shop")   # PGFLOW_DATABASE_URL, else an embedded Postgres
    """

    def __init__(
        self,
        name: str,
        *,
        database_url: str | None = None,
        schema: str | None = None,
        serializer: str | None = None,
        app_version: str | None = None,
        settings: Settings | None = None,
        types: Iterable[type] = (),
        **overrides: Any,
    ) -> None:
        self.name = name
        # What the code declares: the layer under PGFLOW_* variables and CLI flags, kept so
        # that `pgflow worker` can apply its flags over it (Settings.resolve).
        self.declared_settings: dict[str, Any] = {
            **(settings.given() if settings is not None else {}),
            **{
                k: v
                for k, v in dict(
                    database_url=database_url,
                    schema=schema,
                    serializer=serializer,
                    app_version=app_version,
                    **overrides,
                ).items()
                if v is not None
            },
        }
        self.settings = Settings.resolve(code=self.declared_settings)
        # The serializer object (its name is settings.serializer, and each row's own).
        self.serializer = serialization.get_serializer(self.settings.serializer)
        if self.serializer.name == "json":
            self.serializer = TypedJson()
        for cls in types:
            self.register_type(cls)
        self.registry = Registry()
        self.queues: dict[str, Queue] = {}
        self.schedules: dict[str, Schedule] = {}
        self._notifications: Notifications | None = None
        self.completions = Completions()
        self._db: Database | None = None
        self._db_lock = threading.Lock()
        self._executor: Executor | None = None
        self._executor_lock = threading.Lock()
        self._version: str | None = None
        self._threads: set[threading.Thread] = set()
        self._launched = False
        self._stop = threading.Event()
        # Step bodies left running past their time_limit (a worker replaces its process when
        # they pile up or run on too long).
        self.abandoned_bodies = AbandonedBodies()

    def __repr__(self) -> str:
        return f"App({self.name!r}, schema={self.settings.schema!r})"

    # -- lazily built parts --------------------------------------------------------------------

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
        if self._db is None:
            with self._db_lock:
                if self._db is None:
                    db = Database(
                        self.database_url(),
                        self.settings.schema,
                        max_size=self.settings.connections,
                        idle_timeout=self.settings.pool_idle_timeout,
                        application_name=f"pgflow:{self.name}",
                    )
                    try:
                        # Retried while the server is away, as every later use is; a
                        # server that refuses (ConnectionRejected) fails at once.
                        db.retrying(lambda: self._first_use(db))
                    except BaseException:
                        db.close()  # its pool would otherwise live on, unowned
                        raise
                    self._db = db
        return self._db

    def _first_use(self, db: Database) -> None:
        # One direct connection first: a server that refuses says why now, rather than
        # after the pool's wait.
        db.connect().close()
        self._prepare_schema(db)

    def _prepare_schema(self, db: Database) -> None:
        try:
            migrations.check_migrated(db)
            return
        except SchemaNotMigrated:
            if not self.settings.auto_migrate:
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

    def use_executor(self, executor: Executor | None) -> Executor | None:
        """Make ``executor`` this process's owner identity (a worker process does this; None:
        a new one on next use). Returns the one it replaces. Runs in flight keep the owner
        they started under."""
        with self._executor_lock:
            previous, self._executor = self._executor, executor
        return previous

    @property
    def app_version(self) -> str:
        """The configured version, else a hash of the registered code (fixed at first use)."""
        if self._version is None:
            self._version = self.settings.app_version or self.registry.version_hash()
        return self._version

    def register_type(self, cls: T, *, name: str | None = None) -> T:
        """Let instances of ``cls``, a dataclass or pydantic model, be inputs, outputs,
        messages and events of the JSON serializer; they read back as ``cls`` in every app
        that registers it (under the same ``name``, default ``module.QualifiedName``).
        Returns ``cls``, so it also works as a class decorator:

        >>> @app.register_type
        ... @dataclass
        ... class Order:
        ...     id: int
        """
        if isinstance(self.serializer, TypedJson):
            self.serializer.register(cls, name)
        # (pickle stores any class already; nothing to do)
        return cls

    # -- decorators ----------------------------------------------------------------------------

    def workflow(
        self,
        *,
        name: str | None = None,
        max_recovery_attempts: RecoveryLimit = APP_DEFAULT,
        timeout: float | None = None,
    ) -> Callable[[F], F]:
        """Declare a durable workflow. Calling it runs it durably to completion.

        ``max_recovery_attempts``: crashes of its process it may survive before it ends
        MAX_RECOVERY_ATTEMPTS_EXCEEDED; ``None`` means unlimited; not given, the app's
        ``max_recovery_attempts`` setting (10 unless configured) applies."""

        def decorate(fn: F) -> F:
            _refuse_async(fn, "workflow")
            wf = WorkflowDef(name or qualified_name(fn), fn, max_recovery_attempts, timeout)
            self.registry.add_workflow(wf)

            @functools.wraps(fn)
            def call(*args: Any, **kwargs: Any) -> Any:
                _, result = workflows.start(self, wf, args, kwargs, run="inline")
                return result

            call.__pgflow_workflow__ = wf  # type: ignore[attr-defined]
            return call  # type: ignore[return-value]

        return decorate

    def step(
        self,
        *,
        name: str | None = None,
        retries: int = 0,
        interval: float = 1.0,
        backoff: float = 2.0,
        max_interval: float = 60.0,
        time_limit: float | None = None,
    ) -> Callable[[F], F]:
        """Declare a checkpointed step, retried ``retries`` times with exponential backoff.

        ``time_limit``: seconds one attempt may run. Past it the attempt raises
        StepTimeLimitExceeded, an ordinary step error (retried, and catchable by the
        workflow); its body is abandoned on its thread (see the README, The worker)."""
        return self._step_decorator(
            "step",
            name,
            steps.RetryPolicy(
                retries, interval, backoff, max_interval, check_time_limit("time_limit", time_limit)
            ),
        )

    def transaction(
        self,
        *,
        name: str | None = None,
        retries: int = 0,
        interval: float = 1.0,
        backoff: float = 2.0,
        max_interval: float = 60.0,
        time_limit: float | None = None,
    ) -> Callable[[F], F]:
        """Declare a step whose body (through ``pgflow.db()``) commits with its checkpoint.

        ``time_limit``: seconds one attempt may run. The server cancels a statement of the
        body that runs past it, and an attempt that took longer in all is rolled back; either
        raises StepTimeLimitExceeded, retried like any step error."""
        return self._step_decorator(
            "transaction",
            name,
            steps.RetryPolicy(
                retries, interval, backoff, max_interval, check_time_limit("time_limit", time_limit)
            ),
        )

    def _step_decorator(
        self, kind: str, name: str | None, policy: steps.RetryPolicy
    ) -> Callable[[F], F]:
        if policy.retries < 0 or policy.interval < 0 or policy.backoff < 1:
            raise ConfigurationError("retries and interval must be ≥ 0 and backoff ≥ 1")

        def decorate(fn: F) -> F:
            _refuse_async(fn, kind)
            step = StepDef(name or qualified_name(fn), fn, kind)
            self.registry.add_step(step)

            @functools.wraps(fn)
            def call(*args: Any, **kwargs: Any) -> Any:
                return steps.call_step(self, step, policy, args, kwargs)

            call.__pgflow_step__ = step  # type: ignore[attr-defined]
            return call  # type: ignore[return-value]

        return decorate

    def _workflow_def(self, fn: Callable[..., Any] | str) -> WorkflowDef:
        if isinstance(fn, str):
            return self.registry.workflow(fn)
        wf = getattr(fn, "__pgflow_workflow__", None)
        if wf is None:
            raise ConfigurationError(
                f"{getattr(fn, '__name__', fn)!r} is not a workflow; decorate it with "
                "@app.workflow()"
            )
        return wf  # type: ignore[no-any-return]

    # -- running -------------------------------------------------------------------------------

    @overload
    def start(self, fn: str, /, *args: Any, **kwargs: Any) -> WorkflowHandle[Any]: ...
    @overload
    def start(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> WorkflowHandle[R]: ...

    def start(
        self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        """Start a workflow now, in this process, on a thread; returns its handle.

        ``fn`` is the workflow function (a type checker then checks the arguments, and the
        handle's ``result()`` has the workflow's return type) or its registered name."""
        handle, _ = workflows.start(self, self._workflow_def(fn), args, kwargs)
        return handle

    def options(
        self, *, workflow_id: str | None = None, timeout: float | None = None
    ) -> StartOptions:
        """Start or call with a chosen id (an idempotency key) or a timeout:
        ``app.options(workflow_id="order-7").start(checkout, 7)``."""
        if workflow_id is not None:
            check_id("workflow_id", workflow_id)
        check_seconds("timeout", timeout)
        return StartOptions(self, workflow_id, timeout)

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

    def launch(self) -> None:
        """Make this process an executor: heartbeat, and adopt orphaned PENDING work now and
        whenever an owner dies (pid gone on this host, or heartbeat expired anywhere)."""
        if self._launched:
            return
        self._launched = True
        self.executor.ensure_registered()
        self.recover_now()
        threading.Thread(target=self._recovery_loop, name="pgflow-recovery", daemon=True).start()

    def recover_now(self) -> int:
        """Reap dead executors and run every ownerless PENDING workflow of this version."""
        # Only a registered (heartbeating) executor may own work: should it die, its row is
        # how others find and recover what it held.
        executor = self.executor
        executor.ensure_registered()
        executor.recover()
        adopted = 0
        while True:
            batch = executor.adopt(100)
            for claimed in batch:
                log.info(
                    "workflow_recovered",
                    workflow_id=claimed.workflow_id,
                    workflow_name=claimed.name,
                    attempt=claimed.attempt,
                )
                self.spawn(functools.partial(workflows.run_claimed, self, claimed))
            adopted += len(batch)
            if len(batch) < 100:
                return adopted

    def _recovery_loop(self) -> None:
        pid = os.getpid()
        while not self._stop.wait(self.settings.heartbeat_interval):
            if os.getpid() != pid:
                return
            try:
                self.recover_now()
            except Exception as exc:
                log.warning("recovery_failed", error=str(exc))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for this process's workflow threads to finish; True when none are left."""
        end = None if timeout is None else time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(None if end is None else max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def shutdown(self, timeout: float | None = 10.0) -> None:
        """Stop recovery and heartbeats, wait for workflow threads, close the pool."""
        self._stop.set()
        self.wait_idle(timeout)
        if self._executor is not None:
            self._executor.stop(deregister=not any(t.is_alive() for t in self._threads))
        if self._notifications is not None:
            self._notifications.stop()
            self._notifications = None
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- queues --------------------------------------------------------------------------------

    def queue(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        worker_concurrency: int | None = None,
        rate_limit: Rate | None = None,
        priority_enabled: bool | None = None,
        partitioned: bool = False,
        strict_versions: bool | None = None,
        priority: bool | None = None,
    ) -> Queue:
        """Declare a queue with its flow control; workers serve it with ``pgflow worker``.

        ``priority_enabled=True`` lets enqueues give ``.options(priority=N)`` (lower runs
        first, FIFO among equals); ``priority=`` is its deprecated old name.
        A workflow that never started may be started by a worker of any version that knows
        its name; ``strict_versions=True`` keeps every row to the version that enqueued it
        (default: the app's ``strict_versions`` setting)."""
        enabled = _priority_enabled(name, priority_enabled, priority)
        q = Queue(
            name,
            concurrency,
            worker_concurrency,
            rate_limit,
            enabled,
            partitioned,
            strict_versions,
            app=self,
        )
        if name in self.queues and self.queues[name] != q:
            raise ConfigurationError(f"queue {name!r} is declared twice with different limits")
        self.queues[name] = q
        return q

    def _enqueue(
        self,
        queue: Queue,
        opts: EnqueueOptions,
        fn: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> WorkflowHandle[Any]:
        return workflows.enqueue(self, queue, opts, self._workflow_def(fn), args, kwargs)

    def _enqueue_many(
        self, queue: Queue, opts: EnqueueOptions, fn: Callable[..., Any] | str, calls: list[Any]
    ) -> list[WorkflowHandle[Any]]:
        return workflows.enqueue_many(self, queue, opts, self._workflow_def(fn), calls)

    # -- management ----------------------------------------------------------------------------

    def retrieve(self, workflow_id: str) -> WorkflowHandle[Any]:
        """A handle on an existing workflow (raises UnknownWorkflow when there is none)."""
        handle: WorkflowHandle[Any] = WorkflowHandle(self, workflow_id)
        handle.status()
        return handle

    def resume(self, workflow_id: str) -> WorkflowHandle[Any]:
        """Run a workflow now. A CANCELLED, ERROR or MAX_RECOVERY_ATTEMPTS_EXCEEDED one runs
        again from its last completed step: on its queue if it had one, else right here when
        this process can run it (else by any launched executor of its version). A queued one
        loses its delay and is claimed by the next worker with room; an ownerless PENDING one
        is adopted here when this process can run it. A running or succeeded workflow is left
        as it is. Returns its handle."""
        found = management.resume(self.db, self.serializer, workflow_id)
        self._run_ownerless(found)
        return WorkflowHandle(self, workflow_id)

    def fork(
        self,
        workflow_id: str,
        from_step: int = 1,
        *,
        new_workflow_id: str | None = None,
        app_version: str | None = None,
    ) -> WorkflowHandle[Any]:
        """A new workflow with the same inputs that reuses the recorded steps before
        ``from_step`` (they do not run again) and runs the rest; on the original's queue, or
        right here when this process can run it. Returns the new workflow's handle."""
        new_id = management.fork(
            self.db,
            workflow_id,
            from_step,
            new_workflow_id=new_workflow_id,
            app_version=app_version,
        )
        self._run_ownerless(management.require_status(self.db, self.serializer, new_id))
        return WorkflowHandle(self, new_id)

    def cancel(self, workflow_id: str) -> WorkflowStatus:
        """Cancel a workflow and its children: ENQUEUED or PENDING ones become CANCELLED, and a
        running one starts no further step (a waiting recv or sleep wakes at once; a step
        already running completes and keeps its checkpoint). Returns its record."""
        cancelled = management.cancel_tree(self.db, [workflow_id])
        notes = self._notifications
        if notes is not None and notes.pid == os.getpid():
            # This process's runs need not wait for the NOTIFY to come round.
            for wid in cancelled:
                notes.wake(message_channel(self.db.schema), wid)
        return management.require_status(self.db, self.serializer, workflow_id)

    def _run_ownerless(self, found: WorkflowStatus) -> None:
        """Adopt and start a resumed or forked workflow that no queue will hand out, when it
        is this process's code and version (else a launched executor of that version will)."""
        if (
            found.status is not Status.PENDING
            or found.queue_name is not None
            or found.name not in self.registry.workflows
            or found.app_version != self.app_version
        ):
            return
        executor = self.executor
        executor.ensure_registered()
        claimed = workflows.try_adopt(self, found.workflow_id, executor.executor_id)
        if claimed is not None:
            self.spawn(functools.partial(workflows.run_claimed, self, claimed))

    # -- messages and events -------------------------------------------------------------------

    @property
    def notifications(self) -> Notifications:
        """This process's LISTEN connection for messages and events (started on first use)."""
        notes = self._notifications
        if notes is None or notes.pid != os.getpid():
            db = self.db  # before the lock: building the pool takes it too
            with self._db_lock:
                notes = self._notifications
                if notes is None or notes.pid != os.getpid():
                    notes = self._notifications = Notifications(db)
        return notes

    def send(self, destination_id: str, message: Any, topic: str | None = None) -> None:
        """Send ``message`` to workflow ``destination_id`` from outside a workflow (inside
        one, ``pgflow.send`` sends exactly once). UnknownWorkflow when there is no such id."""
        messages.send_message(
            self.db,
            self.serializer,
            destination_id,
            message,
            topic,
            max_bytes=self.settings.max_payload_bytes,
        )

    def get_event(self, workflow_id: str, key: str, timeout: float = 60.0) -> Any:
        """The latest value workflow ``workflow_id`` published for ``key`` with
        ``pgflow.set_event``, waiting up to ``timeout`` seconds; None when there is none."""
        return messages.read_event(
            self.db, self.notifications, self.serializer, workflow_id, key, timeout
        )

    # -- schedules -----------------------------------------------------------------------------

    def scheduled(self, cron: str, *, catch_up: bool = False) -> Callable[[F], F]:
        """Run a workflow on a cron schedule (UTC), once per tick across every worker:

        >>> @app.scheduled("*/5 * * * *")
        ... @app.workflow()
        ... def report(at: datetime) -> None: ...

        The workflow gets the tick's time. Ticks missed while no worker ran: only the latest
        runs, or every one with ``catch_up=True``. Workers serve the internal queue
        ``pgflow.schedules`` for these on their own.
        """
        schedules.validate_cron(cron)

        def decorate(fn: F) -> F:
            return schedules.declare(self, fn, cron, catch_up)

        return decorate


__all__ = ["App", "Deduplicated"]
