"""The supervisor: forks worker processes, reaps and respawns them with backoff, releases a dead
child's work at once, kills children gone silent, halts when children keep failing to start,
replaces them on SIGHUP and drains on SIGTERM/SIGINT. It imports no user code of its own (the
CLI imported the task module before it starts; each child imports it afresh) and holds no
connection across a fork."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

import structlog

from ..errors import PgflowError
from ..executor import new_executor_id
from . import signals
from .child import child_main
from .config import WorkerConfig
from .liveness import Liveness
from .metrics_port import MetricsPort, ProcessFacts
from .process import EXIT_OK
from .reports import BurstProgress, log_banner

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
    boot_failures: int = 0  # children in a row that died before they were ready
    last_failure: tuple[int, str] = (0, "")  # the last of them: exit code, why
    exit_code: int = 0


def respawn_delay(clean: bool, lived: float, backoff: float) -> tuple[float, float]:
    """Seconds before a slot's next child, and the slot's backoff after that: none after a
    clean exit; after a death, the backoff (doubled for next time, up to ``BACKOFF_MAX``),
    or ``BACKOFF_START`` again when the child had lived past ``STABLE_AFTER``."""
    if clean:
        return 0.0, backoff
    delay = BACKOFF_START if lived > STABLE_AFTER else backoff
    return delay, min(delay * 2, BACKOFF_MAX)


class Supervisor:
    """Runs ``processes`` worker processes until drained (or, in burst mode, until done).

    Its main loop reads as gunicorn's arbiter's: handle the signals the handlers queued
    (``handle_<name>``), ``reap`` the children that exited, ``murder`` the ones past their
    time, ``manage`` the count (respawn with backoff, halt, finish), then sleep."""

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
        self.state = SupervisorState()
        self.sigq = signals.SignalQueue()
        self.progress = BurstProgress(app, [q.name for q in config.queues], out or sys.stderr)
        self.next_progress = 0.0
        self.loop_at = time.monotonic()  # the main loop's last turn (/healthz)
        self.endpoint: MetricsPort | None = None

    def run(self) -> int:
        if self.app.settings.metrics_port:
            # Before the first fork: every worker process records into its own files.
            self.endpoint = MetricsPort(
                self.app.settings, self.app.database_url(), self._health_facts
            )
        try:
            log_banner(self.app, self.config, self.processes)
            self.sigq.install()
            for slot in range(self.processes):
                self.spawn(slot)
            return self._loop()
        finally:
            self.sigq.close()
            if self.endpoint is not None:
                self.endpoint.close()

    def _loop(self) -> int:
        while True:
            self.loop_at = time.monotonic()
            self.handle_signals()
            self.reap()
            self.murder()
            code = self.manage()
            if code is not None:
                return code
            self.sleep()

    # -- signals: the handlers only queued them; here is what each means -----------------------

    def handle_signals(self) -> None:
        """Each queued signal, in order, to its ``handle_<name>`` method (SIGTERM:
        ``handle_term``); ``signals.HANDLED`` lists the signals that have one."""
        while (sig := self.sigq.pop()) is not None:
            getattr(self, "handle_" + signal.Signals(sig).name[3:].lower())()

    def handle_chld(self) -> None:
        self.reap()  # (the loop reaps on every turn too: signals of one kind coalesce)

    def handle_term(self) -> None:
        self._interrupted("SIGTERM")

    def handle_int(self) -> None:
        self._interrupted("SIGINT")

    def handle_hup(self) -> None:
        """New children now (each imports the task module afresh); the old ones get the
        graceful stop (in-flight work finishes within --grace, the rest goes back to its
        queue uncharged) and are not respawned."""
        if self.state.draining:
            return
        retired = [c for c in self.state.children.values() if c.retired_until is None]
        log.info("worker_reloading", signal="SIGHUP", replacing=[c.pid for c in retired])
        until = time.monotonic() + self.config.grace + 5.0
        for child in retired:
            child.retired_until = until
            self._kill(child.pid, signal.SIGTERM)
        self.state.respawn_at.clear()
        for slot in range(self.processes):
            self.spawn(slot)

    def _interrupted(self, name: str) -> None:
        """The first SIGTERM or SIGINT drains; a second one stops everything now (exit 1)."""
        self.state.interrupts += 1
        if self.state.interrupts == 1:
            log.info("worker_draining", grace=self.config.grace, signal=name)
            self._drain()
            return
        log.warning("worker_stopping_now", signal=name)
        self._kill_all(signal.SIGKILL)
        self.reap(block=True)
        if self.endpoint is not None:
            self.endpoint.close()
        os._exit(1)

    def _drain(self) -> None:
        self.state.draining = True
        self.state.respawn_at.clear()
        self.state.drain_deadline = time.monotonic() + self.config.grace + 5.0
        self._kill_all(signal.SIGTERM)

    # -- the steps of each turn ----------------------------------------------------------------

    def reap(self, block: bool = False) -> None:
        """Collect every child that exited (``waitpid(-1, WNOHANG)``)."""
        while self.state.children:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                self.state.children.clear()
                return
            if pid == 0:
                return
            child = self.state.children.pop(pid, None)
            if child is not None:
                self._exited(child, os.waitstatus_to_exitcode(status))

    def _exited(self, child: Child, code: int) -> None:
        """A child is gone: release its work if it died, and count or schedule its slot."""
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
        if self.state.draining or self._halting() or child.retired_until is not None:
            return
        if self.config.burst and clean:
            return
        if not clean and not ready:
            self.state.boot_failures += 1
            if not failure and child.aborted_at is not None:
                failure = (
                    f"silent for {self.config.child_timeout:g}s while starting, "
                    "killed (its threads' stacks are on stderr)"
                )
            self.state.last_failure = (code, failure)
            if self._halting():
                return  # manage() halts
        delay, self.state.backoff[child.slot] = respawn_delay(
            clean,
            time.monotonic() - child.started,
            self.state.backoff.get(child.slot, BACKOFF_START),
        )
        self.state.respawn_at[child.slot] = time.monotonic() + delay

    def murder(self) -> None:
        """Kill the children past their time, as gunicorn's arbiter does: a silent one gets
        SIGABRT (its threads' stacks to stderr), then SIGKILL ``ABORT_GRACE`` later; replaced
        ones past their grace, and all of them past the drain's deadline, get SIGKILL.
        Reaping them releases their work."""
        now = time.monotonic()
        if self.state.draining and now > self.state.drain_deadline:
            self._kill_all(signal.SIGKILL)
        for child in list(self.state.children.values()):
            if child.retired_until is not None and now > child.retired_until:
                self._kill(child.pid, signal.SIGKILL)
            elif child.aborted_at is not None:
                if now - child.aborted_at >= ABORT_GRACE:
                    self._kill(child.pid, signal.SIGKILL)
            elif (silent := child.liveness.silent_for(now)) > self.config.child_timeout:
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
                self._kill(child.pid, signal.SIGABRT)

    def manage(self) -> int | None:
        """Keep the configured count: halt when children keep failing to start, note the
        ready ones, respawn the slots whose backoff is over. The exit code once drained or
        once the burst is done."""
        if self._halting() and not self.state.draining:
            self._halt()
        for child in self.state.children.values():
            if not child.ready and child.liveness.ready:
                child.ready = True
                self.state.boot_failures = 0
        now = time.monotonic()
        if self.state.draining:
            if not self.state.children:
                if self.state.exit_code == 0:
                    log.info("worker_stopped", reason="drained")
                return self.state.exit_code
        elif self.config.burst and not self.state.children and not self.state.respawn_at:
            self.progress.show(final=True)
            log.info("worker_stopped", reason="burst finished")
            return 0
        else:
            for slot, at in list(self.state.respawn_at.items()):
                if now >= at:
                    del self.state.respawn_at[slot]
                    self.spawn(slot)
        if self.config.burst and now >= self.next_progress:
            self.next_progress = now + 1.0
            self.progress.show()
        return None

    def sleep(self) -> None:
        """Until a signal or a request on the metrics port, at most 0.2 s; then serve it."""
        waiting = [self.sigq.read_fd]
        if self.endpoint is not None:
            waiting.append(self.endpoint.fileno())
        ready: list[int] = []
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select(waiting, [], [], 0.2)
        self.sigq.drain_pipe()
        if self.endpoint is not None and self.endpoint.fileno() in ready:
            self.endpoint.serve_one()

    def _halting(self) -> bool:
        return self.state.boot_failures >= BOOT_FAILURES_BEFORE_HALT

    def _halt(self) -> None:
        """Children keep failing to start: stop (drain what is left) rather than respawn."""
        code, failure = self.state.last_failure
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

    # -- children ------------------------------------------------------------------------------

    def spawn(self, slot: int) -> None:
        """Fork the worker process of ``slot``, the handled signals blocked around the fork;
        the child closes what it inherited and never returns from here (``os._exit``)."""
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
                code = child_main(
                    self.load or (lambda: (self.app, self.config)),
                    executor_id,
                    liveness,
                    report_stranded=slot == 0,
                )
            except BaseException as exc:
                with contextlib.suppress(BaseException):  # nothing may skip the _exit below
                    liveness.record_failure(f"{type(exc).__name__}: {exc}")
                    log.error("worker_process_failed", error=repr(exc))
            finally:
                os._exit(code)
        signals.restore(mask)
        self.state.children[pid] = Child(slot, pid, executor_id, time.monotonic(), liveness)
        log.info("worker_process_started", pid=pid, slot=slot, executor_id=executor_id)

    def _kill(self, pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def _kill_all(self, sig: int) -> None:
        for pid in list(self.state.children):
            self._kill(pid, sig)

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
