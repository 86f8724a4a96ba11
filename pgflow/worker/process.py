"""One worker process: claim loop, workflow threads, batched completions, heartbeat, drain."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from .. import enqueue, metrics, schedules
from ..errors import PgflowError
from ..executor import Executor
from ..outcomes import finish as _finish
from ..records import Claimed, Outcome
from ..recovery import release_executors
from .burst import nothing_left
from .claims import claim_from, queue_declaration, strict_versions
from .config import WorkerConfig
from .listener import Listener
from .overruns import OverrunWatch
from .periodic import log_failure
from .threads import Completer, RunThreads, execute_claimed
from .upkeep import Upkeep

if TYPE_CHECKING:
    from ..app import App
    from ..context import WorkflowContext
    from ..queues import Queue
    from .liveness import Liveness

log = structlog.get_logger("pgflow")

EXIT_OK = 0
EXIT_DECLARED_DEAD = 3
EXIT_TIME_LIMIT = 4


class WorkerProcess:
    """Claims workflows from its queues under their limits and runs them on threads."""

    def __init__(
        self,
        app: App,
        config: WorkerConfig,
        executor_id: str,
        *,
        on_idle: Callable[[], bool] | None = None,
        report_stranded: bool = False,
        liveness: Liveness | None = None,
    ) -> None:
        self.app = app
        # Under a supervisor: each turn of the main loop tells it this process is alive.
        self.liveness = liveness
        # One process of a worker says, now and then, what waiting work no live worker of
        # its version can run (another version's, or on a queue nobody serves).
        self.report_stranded = report_stranded
        # Burst mode, nothing running, work left that cannot start yet: the hook may move the
        # database clock (pgflow.testing.drain) and returns True when it did.
        self.on_idle = on_idle
        if app.schedules and all(q.name != schedules.SCHEDULE_QUEUE for q in config.queues):
            # Schedule ticks are served whatever -Q says.
            config.queues = [*config.queues, app.queues[schedules.SCHEDULE_QUEUE]]
        self.config = config
        self.executor_id = executor_id
        self.stop = threading.Event()  # stop claiming (drain)
        self.halt = threading.Event()  # stop everything now
        self.wake = threading.Event()
        self.parent_pid = os.getppid()
        self.local_running: dict[str, int] = {q.name: 0 for q in config.queues}
        self._queues = {q.name: q for q in config.queues}
        self.inflight: set[str] = set()
        self.contexts: dict[str, WorkflowContext] = {}
        self.done = 0
        self._lock = threading.Lock()
        self._rotation = 0
        self.more_waiting = False
        self._burst_check = 0.0  # monotonic time of the next look for the end of a burst
        self.exit_code = EXIT_OK

    # -- lifecycle -----------------------------------------------------------------------------

    def run(self) -> int:
        self._start()
        try:
            self._loop()
        finally:
            self._drain()
            if self.config.in_process:  # a forked worker exits; in-process, end our threads
                self.completer.stop()
                self.pool.shutdown()
        return self.exit_code

    def _start(self) -> None:
        """Register this process's executor and its queues; start its jobs and threads."""
        app = self.app
        self.executor = Executor(
            app,
            kind="worker",
            queues=tuple(q.name for q in self.config.queues),
            executor_id=self.executor_id,
            on_declared_dead=self._declared_dead,
        )
        if not self.config.in_process:
            # The process's one identity: children its workflows start run under it too.
            # In-process (pgflow.testing) the App keeps its own, which lives on after us.
            app.use_executor(self.executor)
        self.executor.ensure_registered()
        for q in self.config.queues:
            app.db.run("declare_queue", queue_declaration(q, app.settings.strict_versions))
        self.upkeep = Upkeep(
            app,
            self.executor,
            [q.name for q in self.config.queues],
            room=lambda: 0 if self.stop.is_set() else self._free_slots(),
            submit=lambda claimed: self._submit(claimed, None),
        )
        self.periodic = self.upkeep.jobs(report_stranded=self.report_stranded)
        self.overruns = OverrunWatch(
            app,
            self.config.threads,
            in_process=self.config.in_process,
            running=self._running_contexts,
            replace=self._replace_process,
        )
        self.completer = Completer(app, self._release_slots)
        self.completer.start()
        self.pool = RunThreads(self.config.threads)
        if not self.config.in_process:  # in-process, the short poll interval stands in
            Listener(app.db, enqueue.notify_channel(app.db.schema), self.wake, self.halt).start()
        log.info(
            "worker_started",
            executor_id=self.executor_id,
            pid=os.getpid(),
            threads=self.config.threads,
        )
        if self.liveness is not None:
            self._report_liveness(self.liveness)

    def _report_liveness(self, liveness: Liveness) -> None:
        """Ready now; and the main loop waiting out a database outage is alive, not stuck."""
        liveness.mark_ready()
        loop_thread = threading.current_thread()
        beat = liveness.beat

        def waiting() -> None:
            if threading.current_thread() is loop_thread:
                beat()

        self.app.db.waiting = waiting

    def _declared_dead(self) -> None:
        # Our work was adopted elsewhere: whatever still runs here must not go on.
        log.error("worker_declared_dead", executor_id=self.executor_id)
        self._exit(EXIT_DECLARED_DEAD)

    def _exit(self, code: int) -> None:
        """End this worker process now; in-process, stop the loop (in-flight work is fenced)."""
        self.exit_code = code
        if not self.config.in_process:
            os._exit(code)
        self.halt.set()
        self.request_stop()

    def request_stop(self) -> None:
        self.stop.set()
        self.wake.set()

    def _loop(self) -> None:
        woken = True  # the first turn claims at once
        next_poll = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            self._check_in(now)
            if self.stop.is_set():
                return
            if self.app.db.suspect:
                # The database is away: claim nothing until it answers (the Database logs
                # the outage once, and its return); running workflows wait in their steps.
                # What was enqueued meanwhile is claimed at once.
                woken = self.app.db.wait_available(0.5) or woken
                continue
            self.periodic.run_due(now)
            claimed = 0
            # Claim when woken (NOTIFY, a finished workflow) or when the poll interval is up;
            # the shorter waits below keep the parent, limit, burst and job checks prompt.
            if woken or now >= next_poll:
                next_poll = now + self.config.poll_interval
                claimed = self._claim_all()
            if self.config.max_jobs and self.done >= self.config.max_jobs:
                log.info("max_jobs_reached", done=self.done)
                return
            if self.config.burst and not claimed and now >= self._burst_check:
                self._burst_check = now + min(0.2, self.config.poll_interval)
                if self._burst_finished():
                    return
                if self._clock_moved():
                    woken = True
                    continue
            if claimed and self.more_waiting and self._free_slots() > 0:
                woken = True
                continue  # there may be more right away
            woken = self._wait()

    def _check_in(self, now: float) -> None:
        """Every turn: tell the supervisor we are alive, exit if it is gone, and end the
        process if work overran its limits."""
        if self.liveness is not None:
            self.liveness.beat()
        if not self.config.in_process and os.getppid() != self.parent_pid:
            log.error("supervisor_gone", action="exiting")
            self.halt.set()
            os._exit(1)
        self.overruns.check(now)

    def _clock_moved(self) -> bool:
        """Burst mode, nothing running, nothing claimed: the on_idle hook (pgflow.testing)
        may move the database clock; then owners may have died and windows ended."""
        if self.on_idle is None or self._free_slots() != self.config.threads:
            return False
        if not self.on_idle():
            return False
        self.periodic.run_soon("recovery")
        return True

    def _wait(self) -> bool:
        """Wait for a wake-up, the poll tick (at most half a second) or the next due job."""
        due = max(0.0, self.periodic.due_in(time.monotonic()))
        woken = self.wake.wait(min(self.config.poll_interval, 0.5, due))
        if woken:
            # Cleared only when it woke us: a NOTIFY that lands between a timed-out wait
            # and the clear would otherwise be lost, and its work wait a whole poll
            # interval (seen: 4 s of a 5 s poll under load).
            self.wake.clear()
        return woken

    def _free_slots(self) -> int:
        with self._lock:
            return self.config.threads - len(self.inflight)

    def _burst_finished(self) -> bool:
        with self._lock:
            if self.inflight:
                return False
        if not self.completer.flush(5.0):
            return False
        return nothing_left(
            self.app,
            # A paused queue's work waits for its resume, not for this worker.
            [q.name for q in self.config.queues if q.name not in self.upkeep.paused],
            in_process=self.config.in_process,
            wait_delayed=self.config.burst_wait_delayed,
            report=self.report_stranded,
        )

    # -- claiming ------------------------------------------------------------------------------

    def _claim_all(self) -> int:
        """Claim from every queue; ``self.more_waiting`` says whether a queue filled every
        free thread (it may hold more), the only case worth claiming again at once: a claim
        that got less than it asked for found its queue empty or its limits reached."""
        total = 0
        self.more_waiting = False
        queues = self.config.queues
        # Rotate the starting queue so no queue always goes first.
        self._rotation += 1
        for i in range(len(queues)):
            q = queues[(self._rotation + i) % len(queues)]
            if q.name in self.upkeep.paused:
                continue
            free = self._free_slots()
            if free <= 0 or self.stop.is_set():  # a drain may have begun since the loop test
                break
            try:
                rows = self._claim(q, free)
            except PgflowError as exc:
                log_failure(self.app.db, "claim_failed", exc, queue=q.name)
                continue
            metrics.claimed(q.name, len(rows))
            for row in rows:
                self._submit(Claimed.from_row(row, self.executor_id), q.name)
            total += len(rows)
            self.more_waiting = self.more_waiting or len(rows) >= free
        return total

    def _claim(self, q: Queue, free: int) -> list[dict[str, Any]]:
        app = self.app
        with self._lock:
            local = self.local_running[q.name]
        common = {
            "queue_name": q.name,
            "app_version": app.app_version,
            "names": sorted(app.registry.workflows),
            "executor_id": self.executor_id,
            "strict": strict_versions(q, self.app.settings.strict_versions),
        }
        return claim_from(
            app.db, q, free=free, local_running=local, common=common, rotation=self._rotation
        )

    # -- running -------------------------------------------------------------------------------

    def _submit(self, claimed: Claimed, queue_name: str | None) -> None:
        with self._lock:
            self.inflight.add(claimed.workflow_id)
            if queue_name is not None:
                self.local_running[queue_name] = self.local_running.get(queue_name, 0) + 1
        self.pool.submit(self._run_one, claimed, queue_name)

    def _run_one(self, claimed: Claimed, queue_name: str | None) -> None:
        slot_handed = False
        try:
            slot_handed = execute_claimed(
                self.app, claimed, self.executor_id, self.completer, queue_name, self._track
            )
        finally:
            with self._lock:
                self.inflight.discard(claimed.workflow_id)
                self.contexts.pop(claimed.workflow_id, None)
                if queue_name is not None and not slot_handed:
                    self.local_running[queue_name] -= 1
                self.done += 1
            # A free thread is worth a claim now, except on a queue with a global concurrency
            # limit: its room opens when the final status commits, and the completer wakes
            # the loop then (_release_slots); a claim before that would find none.
            served = self._queues.get(queue_name or "")
            if not (slot_handed and served is not None and served.concurrency is not None):
                self.wake.set()

    def _release_slots(self, queue_names: list[str]) -> None:
        with self._lock:
            for name in queue_names:
                self.local_running[name] -= 1
        self.wake.set()

    def _track(self, ctx: WorkflowContext) -> None:
        with self._lock:
            self.contexts[ctx.workflow_id] = ctx

    def _running_contexts(self) -> list[WorkflowContext]:
        with self._lock:
            return list(self.contexts.values())

    def _replace_process(self, outcomes: list[Outcome]) -> None:
        """Write ``outcomes``, hand the rest of this process's work back uncharged, exit."""
        self.stop.set()
        self.completer.flush(2.0)
        try:
            if outcomes:
                _finish(self.app, outcomes, self.executor_id)
            release_executors(self.app, [self.executor_id], charge=False)
        finally:
            self._exit(EXIT_TIME_LIMIT)

    def _drain(self) -> None:
        """Stop claiming; let in-flight work finish within the grace period; hand the rest
        back to its queue without charging a recovery attempt."""
        self.stop.set()
        end = time.monotonic() + self.config.grace
        while time.monotonic() < end:
            if self.liveness is not None:
                self.liveness.beat()
            with self._lock:
                if not self.inflight:
                    break
            time.sleep(0.02)
        self.completer.flush(max(1.0, end - time.monotonic()))
        with self._lock:
            left = list(self.inflight)
        if left:
            log.warning("drain_handing_back", workflows=len(left))
            release_executors(self.app, [self.executor_id], charge=False)
        self.halt.set()
        self.executor.stop(deregister=True)
