"""The supervisor: forks worker processes, reaps and respawns them with backoff, releases a dead
child's work at once, kills children gone silent, halts when children keep failing to start,
replaces them on SIGHUP and drains on SIGTERM/SIGINT. It imports no user code of its own (the
CLI imported the task module before it starts; each child imports it afresh) and holds no
connection across a fork."""

from __future__ import annotations

import contextlib
import faulthandler
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, TextIO

import structlog

from .. import tracing
from ..db.errors import describe_target
from ..errors import PgflowError
from ..management import Stranded, paused_queues, stranded_work
from ..recovery import new_executor_id
from . import signals
from .liveness import Liveness
from .metrics_port import MetricsPort, ProcessFacts
from .process import EXIT_OK, WorkerConfig, WorkerProcess

if TYPE_CHECKING:
    from ..app import App

log = structlog.get_logger("pgflow")

BACKOFF_START = 0.1
BACKOFF_MAX = 10.0
# A child that lived this long was not crash-looping: its next restart is immediate again
# (supervisord's startsecs). Longer would slow the replacement of children killed now and then.
STABLE_AFTER = 1.0
# Children in a row that exit (or are killed) before they report ready: then the supervisor
# halts instead of respawning forever (gunicorn halts on the first boot error; a few tries
# ride out a start-up that failed for a passing reason).
BOOT_FAILURES_BEFORE_HALT = 5
# `pgflow worker` exit code when worker processes keep failing to start (the README's table).
EXIT_BOOT_FAILED = 3
# Seconds between SIGABRT to a silent child (it may dump its threads' stacks) and SIGKILL.
ABORT_GRACE = 1.0


@dataclass
class Child:
    slot: int
    pid: int
    executor_id: str
    started: float
    liveness: Liveness
    ready: bool = False
    aborted_at: float | None = None  # SIGABRT sent (silent); SIGKILL follows
    retired_until: float | None = None  # replaced (SIGHUP): draining until then


@dataclass
class SupervisorState:
    children: dict[int, Child] = field(default_factory=dict)
    backoff: dict[int, float] = field(default_factory=dict)
    respawn_at: dict[int, float] = field(default_factory=dict)
    draining: bool = False
    drain_deadline: float = 0.0
    interrupts: int = 0
    burst_done: set[int] = field(default_factory=set)
    boot_failures: int = 0
    exit_code: int = 0


def _pgflow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pgflow")
    except PackageNotFoundError:
        return "unknown"


class Supervisor:
    """Runs ``processes`` worker processes until drained (or, in burst mode, until done)."""

    def __init__(
        self,
        app: App,
        config: WorkerConfig,
        processes: int,
        out: TextIO | None = None,
        load: Callable[[], tuple[App, WorkerConfig]] | None = None,
    ) -> None:
        self.app = app
        self.config = config
        # Called in each new child: the app and config from the task module's current code.
        self.load = load
        self.processes = processes
        self.out = out or sys.stderr
        self.state = SupervisorState()
        self.sigq = signals.SignalQueue()
        self.started_at = datetime.now(timezone.utc)
        self.t0 = time.monotonic()
        self.next_progress = 0.0
        self.loop_at = time.monotonic()  # the main loop's last turn (/healthz)
        self.endpoint: MetricsPort | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def run(self) -> int:
        if self.app.settings.metrics_port:
            # Before the first fork: every worker process records into its own files.
            self.endpoint = MetricsPort(
                self.app.settings, self.app.database_url(), self._health_facts
            )
        try:
            self._banner()
            self.sigq.install()
            for slot in range(self.processes):
                self._spawn(slot)
            return self._loop()
        finally:
            self.sigq.close()
            if self.endpoint is not None:
                self.endpoint.close()

    def _banner(self) -> None:
        url = self.app.settings.database_url or ""
        queues = ", ".join(
            f"{q.name} ("
            + ", ".join(
                p
                for p in (
                    f"concurrency={q.concurrency}" if q.concurrency else "",
                    f"worker_concurrency={q.worker_concurrency}" if q.worker_concurrency else "",
                    f"rate={q.rate_limit}" if q.rate_limit else "",
                    "priority" if q.priority_enabled else "",
                    "partitioned" if q.partitioned else "",
                )
                if p
            )
            + ")"
            for q in self.config.queues
        )
        settings = self.app.settings
        try:
            paused = sorted(paused_queues(self.app.db) & {q.name for q in self.config.queues})
        except PgflowError:
            paused = []
        finally:
            self.app.close_db()
        # The effective values (flag > PGFLOW_* > code > default), as the children use them.
        log.info(
            "worker_starting",
            app=self.app.name,
            queues=queues.replace(" ()", ""),
            processes=self.processes,
            threads=self.config.threads,
            heartbeat_interval=settings.heartbeat_interval,
            heartbeat_timeout=settings.heartbeat_timeout,
            grace=self.config.grace,
            poll_interval=self.config.poll_interval,
            child_timeout=settings.child_timeout,
            pool_size=settings.connections,
            pool_idle_timeout=settings.pool_idle_timeout,
            database=describe_target(url),
            schema=settings.schema,
            app_version=self.app.app_version,
            pgflow_version=_pgflow_version(),
            burst=self.config.burst,
            paused=",".join(paused) or None,
        )

    def _spawn(self, slot: int) -> None:
        executor_id = new_executor_id()
        liveness = Liveness()
        mask = signals.block_all()
        pid = os.fork()
        if pid == 0:  # the worker process
            code = 1
            try:
                signals.reset_in_child()
                signals.restore(mask)
                self.sigq.close()
                if self.endpoint is not None:
                    self.endpoint.close_in_child()
                for sibling in self.state.children.values():
                    sibling.liveness.close()
                code = self._child_main(executor_id, slot, liveness)
            except BaseException as exc:
                with contextlib.suppress(BaseException):  # nothing may skip the _exit below
                    liveness.record_failure(f"{type(exc).__name__}: {exc}")
                    log.error("worker_process_failed", error=repr(exc))
            finally:
                with contextlib.suppress(BaseException):  # tracing: os._exit skips the SDK's
                    tracing.flush(2.0)  # exit hook; spans still buffered are exported first
                os._exit(code)
        signals.restore(mask)
        self.state.children[pid] = Child(slot, pid, executor_id, time.monotonic(), liveness)
        log.info("worker_process_started", pid=pid, slot=slot, executor_id=executor_id)

    def _child_main(self, executor_id: str, slot: int, liveness: Liveness) -> int:
        stop_requested = False
        worker: WorkerProcess | None = None

        def on_term(signum: int, frame: object) -> None:
            nonlocal stop_requested
            stop_requested = True
            if worker is not None:
                worker.request_stop()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides for Ctrl-C
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # and for SIGHUP (a terminal's hangup)
        # A child killed for silence (SIGABRT) first prints where each thread was stuck.
        faulthandler.enable(all_threads=True)
        app, config = self.load() if self.load is not None else (self.app, self.config)
        worker = WorkerProcess(
            app, config, executor_id, report_stranded=slot == 0, liveness=liveness
        )
        if stop_requested:  # SIGTERM while importing: stop before claiming anything
            worker.request_stop()
        return worker.run()

    def _loop(self) -> int:
        while True:
            self.loop_at = time.monotonic()
            self._handle_signals()
            self._reap()
            self._watch_children()
            now = time.monotonic()
            if self.state.draining:
                if not self.state.children:
                    if self.state.exit_code == 0:
                        log.info("worker_stopped", reason="drained")
                    return self.state.exit_code
                if now > self.state.drain_deadline:
                    self._kill_all(signal.SIGKILL)
            elif self.config.burst and not self.state.children and not self.state.respawn_at:
                self._progress(final=True)
                log.info("worker_stopped", reason="burst finished")
                return 0
            else:
                for slot, at in list(self.state.respawn_at.items()):
                    if now >= at:
                        del self.state.respawn_at[slot]
                        self._spawn(slot)
            if self.config.burst and now >= self.next_progress:
                self.next_progress = now + 1.0
                self._progress()
            waiting = [self.sigq.read_fd]
            if self.endpoint is not None:
                waiting.append(self.endpoint.fileno())
            ready: list[int] = []
            with contextlib.suppress(InterruptedError):
                ready, _, _ = select.select(waiting, [], [], 0.2)
            self.sigq.drain_pipe()
            if self.endpoint is not None and self.endpoint.fileno() in ready:
                self.endpoint.serve_one()

    def _handle_signals(self) -> None:
        while (sig := self.sigq.pop()) is not None:
            if sig == signal.SIGHUP:
                self._replace_children()
            elif sig in (signal.SIGTERM, signal.SIGINT):
                self.state.interrupts += 1
                if self.state.interrupts == 1:
                    log.info(
                        "worker_draining", grace=self.config.grace, signal=signal.Signals(sig).name
                    )
                    self._drain()
                else:
                    log.warning("worker_stopping_now", signal=signal.Signals(sig).name)
                    self._kill_all(signal.SIGKILL)
                    self._reap(block=True)
                    if self.endpoint is not None:
                        self.endpoint.close()
                    os._exit(1)

    def _drain(self) -> None:
        self.state.draining = True
        self.state.respawn_at.clear()
        self.state.drain_deadline = time.monotonic() + self.config.grace + 5.0
        self._kill_all(signal.SIGTERM)

    def _replace_children(self) -> None:
        """SIGHUP: new children now (each imports the task module afresh); the old ones get
        the graceful stop (in-flight work finishes within --grace, the rest goes back to its
        queue uncharged) and are not respawned."""
        if self.state.draining:
            return
        retired = [c for c in self.state.children.values() if c.retired_until is None]
        log.info("worker_reloading", signal="SIGHUP", replacing=[c.pid for c in retired])
        until = time.monotonic() + self.config.grace + 5.0
        for child in retired:
            child.retired_until = until
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
        self.state.respawn_at.clear()
        for slot in range(self.processes):
            self._spawn(slot)

    def _watch_children(self) -> None:
        """Note children that became ready; kill silent ones (SIGABRT, then SIGKILL on a later
        pass, as gunicorn's arbiter does) and replaced ones past their grace. Reaping them
        releases their work."""
        now = time.monotonic()
        for child in list(self.state.children.values()):
            if not child.ready and child.liveness.ready:
                child.ready = True
                self.state.boot_failures = 0
            if child.retired_until is not None and now > child.retired_until:
                self._kill(child, signal.SIGKILL)
                continue
            if child.aborted_at is not None:
                if now - child.aborted_at >= ABORT_GRACE:
                    self._kill(child, signal.SIGKILL)
                continue
            silent = child.liveness.silent_for(now)
            if silent > self.config.child_timeout:
                log.error(
                    "worker_process_silent",
                    pid=child.pid,
                    executor_id=child.executor_id,
                    silent_s=round(silent, 1),
                    child_timeout=self.config.child_timeout,
                    ready=child.ready,
                    action="SIGABRT, then SIGKILL",
                )
                child.aborted_at = now
                self._kill(child, signal.SIGABRT)

    def _health_facts(self) -> ProcessFacts:
        now = time.monotonic()
        current = [c for c in self.state.children.values() if c.retired_until is None]
        # Read from the shared maps now: the loop notes readiness only on its next turn.
        ready = [c for c in current if c.liveness.ready and c.aborted_at is None]
        return ProcessFacts(
            expected=self.processes,
            running=len(current),
            ready=len(ready),
            silent_max_s=max((c.liveness.silent_for(now) for c in ready), default=0.0),
            child_timeout=self.config.child_timeout,
            loop_age_s=now - self.loop_at,
            draining=self.state.draining,
        )

    def _kill(self, child: Child, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, sig)

    def _kill_all(self, sig: int) -> None:
        for pid in list(self.state.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _reap(self, block: bool = False) -> None:
        while self.state.children:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                self.state.children.clear()
                return
            if pid == 0:
                return
            child = self.state.children.pop(pid, None)
            if child is None:
                continue
            self._child_exited(child, status)

    def _child_exited(self, child: Child, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        clean = code == EXIT_OK
        (log.info if clean else log.error)(
            "worker_process_exited", pid=child.pid, exit_code=code, executor_id=child.executor_id
        )
        ready = child.ready or child.liveness.ready
        failure = child.liveness.failure()
        child.liveness.close()
        if self.endpoint is not None:
            self.endpoint.process_exited(child.pid)
        if not clean:
            # Died (signal, crash, OOM): its PENDING work goes back now, charged once.
            self._release(child.executor_id)
        if self.state.draining or child.retired_until is not None or (self.config.burst and clean):
            return
        if not clean and not ready:
            self.state.boot_failures += 1
            if self.state.boot_failures >= BOOT_FAILURES_BEFORE_HALT:
                if not failure and child.aborted_at is not None:
                    failure = (
                        f"silent for {self.config.child_timeout:g}s while starting, "
                        "killed (its threads' stacks are on stderr)"
                    )
                self._halt(code, failure)
                return
        lived = time.monotonic() - child.started
        lived = time.monotonic() - child.started
        if not clean and lived > STABLE_AFTER:
            self.state.backoff[child.slot] = BACKOFF_START  # not a crash loop: start over
        delay = 0.0 if clean else self.state.backoff.get(child.slot, BACKOFF_START)
        if not clean:
            self.state.backoff[child.slot] = min(delay * 2, BACKOFF_MAX)
        self.state.respawn_at[child.slot] = time.monotonic() + delay

    def _halt(self, code: int, failure: str) -> None:
        """Children keep failing to start: stop (drain what is left) rather than respawn."""
        log.error(
            "worker_halted",
            exit_code=EXIT_BOOT_FAILED,
            reason=f"{self.state.boot_failures} worker processes in a row failed to start "
            f"(the last exited with code {code})",
            error=failure or "see worker_process_failed above",
            action="fix the start-up error and start the worker again",
        )
        self.state.exit_code = EXIT_BOOT_FAILED
        self._drain()

    def _release(self, executor_id: str) -> None:
        from ..recovery import reap_dead_executors

        try:
            # A short-lived pool in the supervisor, closed before the next fork.
            # Only this child: the supervisor has no heartbeat to judge others by.
            reap_dead_executors(self.app, "supervisor", [executor_id], judge_heartbeats=False)
        except PgflowError as exc:
            log.error("release_failed", executor_id=executor_id, error=str(exc))
        finally:
            self.app.close_db()

    def _progress(self, final: bool = False) -> None:
        queues = [q.name for q in self.config.queues]
        left: list[Stranded] = []
        paused: list[str] = []
        try:
            row = self.app.db.fetchone(
                "queue_progress", {"queues": queues, "since": self.started_at}
            )
            if final and row is not None and row["left_"]:
                left = stranded_work(self.app.db, self.app.settings.heartbeat_timeout, queues)
                paused = sorted(paused_queues(self.app.db) & set(queues))
        except PgflowError:
            return
        finally:
            self.app.close_db()
        if row is None:
            return
        elapsed = max(1e-6, time.monotonic() - self.t0)
        rate = (row["done"] + row["failed"]) / elapsed
        print(
            f"{'done' if final else 'progress'}: {row['done']} done, {row['failed']} failed, "
            f"{row['left_']} left, {rate:.0f} jobs/s",
            file=self.out,
            flush=True,
        )
        for s in left:
            print(
                f"  left: {s.count} x {s.name} in {s.queue_name or '(no queue)'} "
                f"({s.reason.replace('_', ' ')}): {s.remedy}",
                file=self.out,
                flush=True,
            )
        for name in paused:
            print(
                f"  left: queue {name} is paused (`pgflow queues resume {name}`)",
                file=self.out,
                flush=True,
            )
