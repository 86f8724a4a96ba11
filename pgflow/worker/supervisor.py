"""The supervisor: forks worker processes, reaps and respawns them with backoff, releases a dead
child's work at once, drains on SIGTERM/SIGINT. It imports no user code of its own (the CLI
imported the task module before it starts) and holds no connection across a fork."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, TextIO

import structlog

from ..db.errors import describe_target
from ..errors import PgflowError
from ..recovery import new_executor_id
from . import signals
from .process import EXIT_OK, WorkerConfig, WorkerProcess

if TYPE_CHECKING:
    from ..app import App

log = structlog.get_logger("pgflow")

BACKOFF_START = 0.1
BACKOFF_MAX = 10.0
# A child that lived this long was not crash-looping: its next restart is immediate again
# (supervisord's startsecs). Longer would slow the replacement of children killed now and then.
STABLE_AFTER = 1.0


@dataclass
class Child:
    slot: int
    pid: int
    executor_id: str
    started: float


@dataclass
class SupervisorState:
    children: dict[int, Child] = field(default_factory=dict)
    backoff: dict[int, float] = field(default_factory=dict)
    respawn_at: dict[int, float] = field(default_factory=dict)
    draining: bool = False
    drain_deadline: float = 0.0
    interrupts: int = 0
    burst_done: set[int] = field(default_factory=set)


def _pgflow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pgflow")
    except PackageNotFoundError:
        return "unknown"


class Supervisor:
    """Runs ``processes`` worker processes until drained (or, in burst mode, until done)."""

    def __init__(self, app: App, config: WorkerConfig, processes: int,
                 out: TextIO | None = None) -> None:
        self.app = app
        self.config = config
        self.processes = processes
        self.out = out or sys.stderr
        self.state = SupervisorState()
        self.sigq = signals.SignalQueue()
        self.started_at = datetime.now(timezone.utc)
        self.t0 = time.monotonic()
        self.next_progress = 0.0

    # -- lifecycle -----------------------------------------------------------------------------

    def run(self) -> int:
        self._banner()
        self.sigq.install()
        for slot in range(self.processes):
            self._spawn(slot)
        try:
            return self._loop()
        finally:
            self.sigq.close()

    def _banner(self) -> None:
        url = self.app.settings.database_url or ""
        queues = ", ".join(
            f"{q.name} (" + ", ".join(p for p in (
                f"concurrency={q.concurrency}" if q.concurrency else "",
                f"worker_concurrency={q.worker_concurrency}" if q.worker_concurrency else "",
                f"rate={q.rate_limit}" if q.rate_limit else "",
                "priority" if q.priority else "", "partitioned" if q.partitioned else "")
                if p) + ")" for q in self.config.queues)
        settings = self.app.settings
        # The effective values (flag > PGFLOW_* > code > default), as the children use them.
        log.info("worker_starting", app=self.app.name, queues=queues.replace(" ()", ""),
                 processes=self.processes, threads=self.config.threads,
                 heartbeat_interval=settings.heartbeat_interval,
                 heartbeat_timeout=settings.heartbeat_timeout, grace=self.config.grace,
                 poll_interval=self.config.poll_interval,
                 pool_size=settings.pool_size or self.config.threads + 4,
                 database=describe_target(url), schema=settings.schema,
                 app_version=self.app.app_version, pgflow_version=_pgflow_version(),
                 burst=self.config.burst)

    def _spawn(self, slot: int) -> None:
        executor_id = new_executor_id()
        mask = signals.block_all()
        pid = os.fork()
        if pid == 0:  # the worker process
            code = 1
            try:
                signals.reset_in_child()
                signals.restore(mask)
                self.sigq.close()
                code = self._child_main(executor_id, slot)
            except BaseException as exc:
                with contextlib.suppress(BaseException):  # nothing may skip the _exit below
                    log.error("worker_process_failed", error=repr(exc))
            finally:
                os._exit(code)
        signals.restore(mask)
        self.state.children[pid] = Child(slot, pid, executor_id, time.monotonic())
        log.info("worker_process_started", pid=pid, slot=slot, executor_id=executor_id)

    def _child_main(self, executor_id: str, slot: int) -> int:
        worker = WorkerProcess(self.app, self.config, executor_id, report_stranded=slot == 0)

        def on_term(signum: int, frame: object) -> None:
            worker.request_stop()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides for Ctrl-C
        return worker.run()

    def _loop(self) -> int:
        while True:
            self._handle_signals()
            self._reap()
            now = time.monotonic()
            if self.state.draining:
                if not self.state.children:
                    log.info("worker_stopped", reason="drained")
                    return 0
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
            with contextlib.suppress(InterruptedError):
                select.select([self.sigq.read_fd], [], [], 0.2)
            self.sigq.drain_pipe()

    def _handle_signals(self) -> None:
        while (sig := self.sigq.pop()) is not None:
            if sig in (signal.SIGTERM, signal.SIGINT):
                self.state.interrupts += 1
                if self.state.interrupts == 1:
                    log.info("worker_draining", grace=self.config.grace,
                             signal=signal.Signals(sig).name)
                    self.state.draining = True
                    self.state.respawn_at.clear()
                    self.state.drain_deadline = time.monotonic() + self.config.grace + 5.0
                    self._kill_all(signal.SIGTERM)
                else:
                    log.warning("worker_stopping_now", signal=signal.Signals(sig).name)
                    self._kill_all(signal.SIGKILL)
                    self._reap(block=True)
                    os._exit(1)

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
        (log.info if clean else log.error)("worker_process_exited", pid=child.pid,
                                           exit_code=code, executor_id=child.executor_id)
        if not clean:
            # Died (signal, crash, OOM): its PENDING work goes back now, charged once.
            self._release(child.executor_id)
        if self.state.draining or (self.config.burst and clean):
            return
        lived = time.monotonic() - child.started
        if not clean and lived > STABLE_AFTER:
            self.state.backoff[child.slot] = BACKOFF_START  # not a crash loop: start over
        delay = 0.0 if clean else self.state.backoff.get(child.slot, BACKOFF_START)
        if not clean:
            self.state.backoff[child.slot] = min(delay * 2, BACKOFF_MAX)
        self.state.respawn_at[child.slot] = time.monotonic() + delay

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
        try:
            row = self.app.db.fetchone("queue_progress", {
                "queues": [q.name for q in self.config.queues], "since": self.started_at})
        except PgflowError:
            return
        finally:
            self.app.close_db()
        if row is None:
            return
        elapsed = max(1e-6, time.monotonic() - self.t0)
        rate = (row["done"] + row["failed"]) / elapsed
        print(f"{'done' if final else 'progress'}: {row['done']} done, {row['failed']} failed, "
              f"{row['left_']} left, {rate:.0f} jobs/s", file=self.out, flush=True)
