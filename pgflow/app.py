"""App: the decorators and declarations of an application, over its Runtime. Inert until
first used (nothing connects at import or construction)."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar, overload

import structlog

from . import management, recovery, schedules, serialization, starting, steps
from .attempts import AbandonedBodies
from .errors import ConfigurationError, Deduplicated
from .execution import run_claimed
from .executor import Executor
from .handles import WorkflowHandle
from .limits import check_id, check_seconds, check_time_limit
from .operations import Operations
from .queues import Queue, Rate, priority_flag
from .records import Status, WorkflowStatus
from .registry import (
    APP_DEFAULT,
    RecoveryLimit,
    Registry,
    StepDef,
    WorkflowDef,
    qualified_name,
    refuse_async,
)
from .runtime import Runtime
from .schedules import Schedule
from .serialization_types import TypedJson
from .settings import Settings
from .starting import StartOptions

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T", bound=type)
log = structlog.get_logger("pgflow")


class App(Operations):
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
        resolved = Settings.resolve(code=self.declared_settings)
        # The serializer object (its name is settings.serializer, and each row's own).
        codec = serialization.get_serializer(resolved.serializer)
        self.runtime = Runtime(
            resolved,
            TypedJson() if codec.name == "json" else codec,
            registry=Registry(),
            application_name=f"pgflow:{name}",
        )
        for cls in types:
            self.register_type(cls)
        self.queues: dict[str, Queue] = {}
        self.schedules: dict[str, Schedule] = {}
        self._launched = False
        self._stop = threading.Event()

    def __repr__(self) -> str:
        return f"App({self.name!r}, schema={self.settings.schema!r})"

    # -- the Runtime's parts, by their old names ------------------------------------------------

    @property
    def registry(self) -> Registry:
        return self.runtime.registry

    @property
    def app_version(self) -> str:
        """The configured version, else a hash of the registered code (fixed at first use)."""
        return self.runtime.app_version

    @property
    def executor(self) -> Executor:
        """This process's owner identity (see :attr:`Runtime.executor`)."""
        return self.runtime.executor

    @property
    def _executor(self) -> Executor | None:
        return self.runtime.current_executor

    @_executor.setter
    def _executor(self, executor: Executor | None) -> None:
        self.runtime.use_executor(executor)

    def use_executor(self, executor: Executor | None) -> Executor | None:
        """Make ``executor`` this process's owner identity (see :meth:`Runtime.use_executor`)."""
        return self.runtime.use_executor(executor)

    @property
    def abandoned_bodies(self) -> AbandonedBodies:
        return self.runtime.abandoned_bodies

    def database_url(self) -> str:
        """The URL in use (an embedded server's, started now, when none is configured)."""
        return self.runtime.database_url()

    def spawn(self, target: Callable[[], Any]) -> threading.Thread:
        """Run ``target`` on a new workflow thread (the process waits for it at exit)."""
        return self.runtime.spawn(target)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for this process's workflow threads to finish; True when none are left."""
        return self.runtime.wait_idle(timeout)

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
            refuse_async(fn, "workflow")
            wf = WorkflowDef(name or qualified_name(fn), fn, max_recovery_attempts, timeout)
            self.registry.add_workflow(wf)

            @functools.wraps(fn)
            def call(*args: Any, **kwargs: Any) -> Any:
                _, result = starting.start(self.runtime, wf, args, kwargs, run="inline")
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
            refuse_async(fn, kind)
            step = StepDef(name or qualified_name(fn), fn, kind)
            self.registry.add_step(step)

            @functools.wraps(fn)
            def call(*args: Any, **kwargs: Any) -> Any:
                return steps.call_step(self.runtime, step, policy, args, kwargs)

            call.__pgflow_step__ = step  # type: ignore[attr-defined]
            return call  # type: ignore[return-value]

        return decorate

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
        handle, _ = starting.start(self.runtime, self.registry.resolve(fn), args, kwargs)
        return handle

    def options(
        self, *, workflow_id: str | None = None, timeout: float | None = None
    ) -> StartOptions:
        """Start or call with a chosen id (an idempotency key) or a timeout:
        ``app.options(workflow_id="order-7").start(checkout, 7)``."""
        if workflow_id is not None:
            check_id("workflow_id", workflow_id)
        check_seconds("timeout", timeout)
        return StartOptions(self.runtime, workflow_id, timeout)

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
        return recovery.recover_now(self.runtime)

    def _recovery_loop(self) -> None:
        pid = os.getpid()
        while not self._stop.wait(self.settings.heartbeat_interval):
            if os.getpid() != pid:
                return
            try:
                self.recover_now()
            except Exception as exc:
                log.warning("recovery_failed", error=str(exc))

    def shutdown(self, timeout: float | None = 10.0) -> None:
        """Stop recovery and heartbeats, wait for workflow threads, close the pool."""
        self._stop.set()
        self.runtime.close(timeout)

    def _run_ownerless(self, workflow_id: str, found: WorkflowStatus | None = None) -> None:
        """Adopt and start a resumed or forked workflow that no queue will hand out, when it
        is this process's code and version (else a launched executor of that version will)."""
        if found is None:
            found = management.require_status(self.db, self.serializer, workflow_id)
        if (
            found.status is not Status.PENDING
            or found.queue_name is not None
            or found.name not in self.registry.workflows
            or found.app_version != self.app_version
        ):
            return
        executor = self.executor
        executor.ensure_registered()
        claimed = starting.try_adopt(self.runtime, found.workflow_id, executor.executor_id)
        if claimed is not None:
            self.spawn(functools.partial(run_claimed, self.runtime, claimed))

    # -- queues and schedules ------------------------------------------------------------------

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
        enabled = priority_flag(name, priority_enabled, priority)
        q = Queue(
            name,
            concurrency,
            worker_concurrency,
            rate_limit,
            enabled,
            partitioned,
            strict_versions,
            runtime=self.runtime,
        )
        if name in self.queues and self.queues[name] != q:
            raise ConfigurationError(f"queue {name!r} is declared twice with different limits")
        self.queues[name] = q
        return q

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
            call = fn if hasattr(fn, "__pgflow_workflow__") else self.workflow()(fn)
            wf: WorkflowDef = call.__pgflow_workflow__  # type: ignore[attr-defined]
            self.schedules[wf.name] = schedules.schedule_for(wf, cron, catch_up)
            self.queue(schedules.SCHEDULE_QUEUE)
            return call

        return decorate


__all__ = ["App", "Deduplicated"]
