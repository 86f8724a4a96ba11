"""One worker process: claim loop, workflow threads, batched completions, heartbeat, drain."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from .. import execution, metrics, retention, schedules, serialization
from ..budget import claim_budget
from ..enqueue import notify_channel
from ..errors import (
    DatabaseUnavailable,
    FencedOut,
    PgflowError,
    WorkflowCancelled,
)
from ..executor import Executor
from ..management import paused_queues, stranded_work
from ..outcomes import finish
from ..records import Claimed, Outcome, Status
from ..recovery import reap_dead, release_executors
from .listener import Listener
from .threads import Completer, RunThreads

if TYPE_CHECKING:
    from ..app import App
    from ..context import WorkflowContext
    from ..queues import Queue
    from .liveness import Liveness

log = structlog.get_logger("pgflow")

EXIT_OK = 0
EXIT_DECLARED_DEAD = 3
EXIT_TIME_LIMIT = 4
# Seconds between two reports of stranded work (the first comes at start).
STRANDED_EVERY = 60.0
# Seconds between automatic retention passes (the `retention` setting); sooner while a pass
# leaves rows behind. One process of the cluster prunes at a time (an advisory lock).
RETENTION_EVERY = 300.0
RETENTION_BACKLOG_EVERY = 5.0
PAUSED_EVERY = 1.0  # seconds between reads of the paused queues
# A workflow still running this long after its deadline ignores it (stuck in a step).
DEADLINE_GRACE = 1.0


@dataclass
class WorkerConfig:
    threads: int
    queues: list[Queue]
    burst: bool = False
    max_jobs: int = 0
    grace: float = 30.0
    poll_interval: float = 1.0
    # Seconds a forked worker process may stay silent before its supervisor replaces it.
    child_timeout: float = 60.0
    # --burst: wait for delayed work to come due (else say what is left, and exit).
    burst_wait_delayed: bool = False
    # In the caller's own process (pgflow.testing.drain): no supervisor to watch, never
    # os._exit, and executors of this pid other than ours are alive (the app's own).
    in_process: bool = False


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
        self.paused: set[str] = set()  # queues an operator paused (pgflow queues pause)
        self.exit_code = EXIT_OK

    # -- lifecycle -----------------------------------------------------------------------------

    def run(self) -> int:
        app = self.app
        executor = Executor(
            app,
            kind="worker",
            queues=tuple(q.name for q in self.config.queues),
            executor_id=self.executor_id,
            on_declared_dead=self._declared_dead,
        )
        self.executor = executor
        if not self.config.in_process:
            # The process's one identity: children its workflows start run under it too.
            # In-process (pgflow.testing) the App keeps its own, which lives on after us.
            app.use_executor(executor)
        executor.ensure_registered()
        for q in self.config.queues:
            app.db.run(
                "declare_queue",
                {
                    "name": q.name,
                    "concurrency": q.concurrency,
                    "worker_concurrency": q.worker_concurrency,
                    "rate_limit": q.rate_limit.limit if q.rate_limit else None,
                    "rate_per_seconds": q.rate_limit.per if q.rate_limit else None,
                    "priority_enabled": q.priority_enabled,
                    "partitioned": q.partitioned,
                    "strict_versions": self._strict(q),
                },
            )
        self.completer = Completer(app, self._release_slots)
        self.completer.start()
        self.pool = RunThreads(self.config.threads)
        if not self.config.in_process:  # in-process, the short poll interval stands in
            Listener(app.db, notify_channel(app.db.schema), self.wake, self.halt).start()
        log.info(
            "worker_started",
            executor_id=self.executor_id,
            pid=os.getpid(),
            threads=self.config.threads,
        )
        if self.liveness is not None:
            self.liveness.mark_ready()
            # The main loop waiting out a database outage is alive, not stuck.
            loop_thread = threading.current_thread()
            beat = self.liveness.beat

            def waiting() -> None:
                if threading.current_thread() is loop_thread:
                    beat()

            app.db.waiting = waiting
        try:
            self._loop()
        finally:
            self._drain()
            if self.config.in_process:  # a forked worker exits; in-process, end our threads
                self.completer.stop()
                self.pool.shutdown()
        return self.exit_code

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
        next_recovery = 0.0
        burst_check = 0.0
        next_poll = 0.0
        next_tick = 0.0
        next_stranded = 0.0
        next_paused = 0.0
        next_retention = 0.0
        woken = True
        while not self.stop.is_set():
            if self.liveness is not None:
                self.liveness.beat()
            if not self.config.in_process and os.getppid() != self.parent_pid:
                log.error("supervisor_gone", action="exiting")
                self.halt.set()
                os._exit(1)
            now = time.monotonic()
            self._watch_limits(now)
            if self.stop.is_set():
                return
            if self.app.db.suspect:
                # The database is away: claim nothing until it answers (the Database logs
                # the outage once, and its return); running workflows wait in their steps.
                if self.app.db.wait_available(0.5):
                    woken = True  # what was enqueued meanwhile is claimed at once
                continue
            if now >= next_recovery:
                next_recovery = now + self.app.settings.heartbeat_interval
                self._recover()
            if self.app.schedules and now >= next_tick:
                next_tick = now + 1.0
                self._tick_schedules()
            if self.report_stranded and now >= next_stranded and self._warn_stranded():
                next_stranded = now + STRANDED_EVERY
            if self.app.settings.retention and now >= next_retention:
                next_retention = now + self._apply_retention()
            if now >= next_paused:
                # Once a second, not on every wake: a wake comes with nearly every enqueue and
                # completion, and a read per wake doubled the statements per job of a drain.
                next_paused = now + PAUSED_EVERY
                self._read_paused()
            claimed = 0
            # Claim when woken (NOTIFY, a finished workflow) or when the poll interval is up;
            # the shorter tick below only keeps the parent, limit and burst checks prompt.
            if woken or now >= next_poll:
                next_poll = now + self.config.poll_interval
                claimed = self._claim_all()
            if self.config.max_jobs and self.done >= self.config.max_jobs:
                log.info("max_jobs_reached", done=self.done)
                return
            if self.config.burst and not claimed and now >= burst_check:
                burst_check = now + min(0.2, self.config.poll_interval)
                if self._burst_finished():
                    return
                if (
                    self.on_idle is not None
                    and self._free_slots() == self.config.threads
                    and self.on_idle()
                ):
                    next_recovery = 0.0  # time moved: owners may have died, windows ended
                    woken = True
                    continue
            if claimed and self.more_waiting and self._free_slots() > 0:
                woken = True
                continue  # there may be more right away
            woken = self.wake.wait(min(self.config.poll_interval, 0.5))
            if woken:
                # Cleared only when it woke us: a NOTIFY that lands between a timed-out wait
                # and the clear would otherwise be lost, and its work wait a whole poll
                # interval (seen: 4 s of a 5 s poll under load).
                self.wake.clear()

    def _free_slots(self) -> int:
        with self._lock:
            return self.config.threads - len(self.inflight)

    def _burst_finished(self) -> bool:
        with self._lock:
            if self.inflight:
                return False
        if not self.completer.flush(5.0):
            return False
        # A --burst worker does not wait for names it does not know (it could never run
        # them); pgflow.testing.drain does, and reports them when its timeout ends.
        names = None if self.config.in_process else sorted(self.app.registry.workflows)
        row = self.app.db.fetchone(
            "work_left",
            {
                "app_version": self.app.app_version,
                "names": names,
                "strict": self.app.settings.strict_versions,
                # A paused queue's work waits for its resume, not for this worker.
                "queues": [q.name for q in self.config.queues if q.name not in self.paused],
            },
        )
        if row is None or row["pending"] != 0:
            return False
        if row["enqueued"] == 0:
            return True
        if (
            self.config.in_process
            or self.config.burst_wait_delayed
            or row["delayed"] != row["enqueued"]
        ):
            return False
        # Only delayed work is left: say what and when, rather than wait for it in silence.
        if self.report_stranded:
            due = row["next_due"]
            log.warning(
                "burst_delayed_work_left",
                workflows=row["delayed"],
                next_due=due.isoformat(),
                due_in_s=round((due - row["now"]).total_seconds(), 1),
                action="run the worker again then, or pass --burst-wait-delayed to wait for it",
            )
        return True

    # -- recovery and claiming -----------------------------------------------------------------

    def _recover(self) -> None:
        try:
            reap_dead(self.app, self.executor)
            free = 0 if self.stop.is_set() else self._free_slots()
            for claimed in self.executor.adopt(free):
                self._submit(claimed, None)
        except PgflowError as exc:
            self._failed("recovery_failed", exc)

    def _warn_stranded(self) -> bool:
        """Report work no live worker can run; False when it cannot be judged yet."""
        # "No live worker" is judged by heartbeats: after an outage every executor's row looks
        # stale until it beats again, so not before a heartbeat timeout has passed since.
        settings = self.app.settings
        if self.app.db.since_outage() < settings.heartbeat_timeout + settings.heartbeat_interval:
            return False
        try:
            found = stranded_work(
                self.app.db, settings.heartbeat_timeout, [q.name for q in self.config.queues]
            )
        except PgflowError as exc:
            self._failed("stranded_check_failed", exc)
            return True
        for s in found:
            log.warning(
                "workflows_stranded",
                n=s.count,
                queue=s.queue_name,
                workflow_name=s.name,
                app_version=s.app_version,
                reason=s.reason,
                since=s.since.isoformat(),
                action=s.remedy,
            )
        return True

    def _apply_retention(self) -> float:
        """One bounded pass of the retention setting; the seconds until the next one."""
        seconds = self.app.settings.retention_seconds
        try:
            done = retention.apply_retention(self.app.db, seconds or 0.0)
        except PgflowError as exc:
            self._failed("retention_failed", exc)
            return RETENTION_EVERY
        if done is not None and done.workflows:
            log.info(
                "workflows_pruned",
                workflows=done.workflows,
                steps=done.steps,
                messages=done.messages,
                events=done.events,
                more=done.more,
            )
        return RETENTION_BACKLOG_EVERY if done is not None and done.more else RETENTION_EVERY

    def _tick_schedules(self) -> None:
        """Enqueue due schedule ticks (every worker does; each tick is inserted once)."""
        try:
            for workflow_id in schedules.tick(self.app):
                log.info("schedule_tick_enqueued", workflow_id=workflow_id)
        except PgflowError as exc:
            self._failed("schedule_tick_failed", exc)

    def _strict(self, q: Queue) -> bool:
        """Whether this queue takes only rows of this version (queue's option, else app's)."""
        if q.strict_versions is None:
            return self.app.settings.strict_versions
        return q.strict_versions

    def _failed(self, event: str, exc: PgflowError, **fields: Any) -> None:
        """A periodic job failed: a warning, unless the database is away (that is logged
        once, by the Database, and the job runs again once it is back)."""
        if isinstance(exc, DatabaseUnavailable) or self.app.db.suspect:
            log.debug(event, error=str(exc), **fields)
        else:
            log.warning(event, error=str(exc), **fields)

    def _read_paused(self) -> None:
        """Which of the served queues an operator paused; logged when that changes."""
        try:
            now_paused = paused_queues(self.app.db) & {q.name for q in self.config.queues}
        except PgflowError as exc:
            self._failed("paused_check_failed", exc)
            return
        for name in sorted(now_paused - self.paused):
            log.info("queue_paused", queue=name, action="claims stopped; running work goes on")
        for name in sorted(self.paused - now_paused):
            log.info("queue_resumed", queue=name)
        self.paused = now_paused

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
            if q.name in self.paused:
                continue
            free = self._free_slots()
            if free <= 0 or self.stop.is_set():  # a drain may have begun since the loop test
                break
            try:
                rows = self._claim(q, free)
            except PgflowError as exc:
                self._failed("claim_failed", exc, queue=q.name)
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
        # On a partitioned queue worker_concurrency holds per key: the claim applies it.
        base = claim_budget(
            free_slots=free,
            local_running=local,
            worker_concurrency=None if q.partitioned else q.worker_concurrency,
            concurrency=None,
            running=0,
            rate_limit=None,
            started_in_window=0,
        )
        if base <= 0:
            return []
        names = sorted(app.registry.workflows)
        common = {
            "queue_name": q.name,
            "app_version": app.app_version,
            "names": names,
            "executor_id": self.executor_id,
            "strict": self._strict(q),
        }
        limited = q.concurrency is not None or q.rate_limit is not None
        per_s = q.rate_limit.per if q.rate_limit else 0.0
        if not limited and not q.partitioned:
            return app.db.fetchall("claim_workflows", {**common, "limit": base})
        # Limits hold across processes: the claim takes the queue's lock (in the function,
        # one round trip) and counts the room left after it.
        params = {
            **common,
            "limit": base,
            "concurrency": q.concurrency,
            "rate_limit": q.rate_limit.limit if q.rate_limit else None,
            "per_s": per_s,
            "lock_name": f"pgflow:{app.db.schema}:queue:{q.name}" if limited else None,
        }
        if q.partitioned:
            return app.db.fetchall(
                "claim_partitions",
                {**params, "rotation": self._rotation, "worker_concurrency": q.worker_concurrency},
            )
        return app.db.fetchall("claim_limited", params)

    # -- running -------------------------------------------------------------------------------

    def _submit(self, claimed: Claimed, queue_name: str | None) -> None:
        with self._lock:
            self.inflight.add(claimed.workflow_id)
            if queue_name is not None:
                self.local_running[queue_name] = self.local_running.get(queue_name, 0) + 1
        self.pool.submit(self._run_one, claimed, queue_name)

    def _run_one(self, claimed: Claimed, queue_name: str | None) -> None:
        app = self.app
        # A queue slot (worker_concurrency) is held until the final write commits, so the rows
        # PENDING under this executor never outnumber the limit, not only the running threads.
        slot_handed = False
        try:
            wf = app.registry.workflow(claimed.name)
            outcome, _, _ = execution.execute(app.runtime, claimed, wf, on_start=self._track)
            if outcome is not None:
                self.completer.submit(outcome, queue_name)
                slot_handed = queue_name is not None
        except FencedOut as exc:
            log.warning("workflow_abandoned", workflow_id=claimed.workflow_id, error=str(exc))
        except PgflowError as exc:
            # Still ours but not running any more: hand it back (uncharged), or it would sit
            # PENDING under this live executor, where nobody recovers it.
            log.warning("workflow_abandoned", workflow_id=claimed.workflow_id, error=str(exc))
            try:
                release_executors(
                    app, [self.executor_id], charge=False, workflow_ids=[claimed.workflow_id]
                )
            except PgflowError as again:
                log.error("release_failed", workflow_id=claimed.workflow_id, error=str(again))
        except BaseException as exc:  # SystemExit etc. in a workflow: a crash
            log.error("workflow_crashed", workflow_id=claimed.workflow_id, error=repr(exc))
            release_executors(
                app, [self.executor_id], charge=True, workflow_ids=[claimed.workflow_id]
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

    def _watch_limits(self, now: float) -> None:
        """A thread cannot be killed: a workflow ignoring its deadline, or step bodies left
        running past their time limit that pile up or run on too long, end this process.
        A workflow ignoring its deadline gets its outcome first (CANCELLED); the rest go back
        uncharged, and the supervisor starts a fresh process."""
        self._watch_abandoned(now)
        with self._lock:
            contexts = list(self.contexts.values())
        for ctx in contexts:
            if ctx.deadline_monotonic is None or now <= ctx.deadline_monotonic + DEADLINE_GRACE:
                continue
            log.error(
                "workflow_time_limit",
                workflow_id=ctx.workflow_id,
                workflow_name=ctx.name,
                action="replacing process",
            )
            exc = WorkflowCancelled(ctx.workflow_id, "past its deadline (timeout)")
            self._replace_process(
                [
                    Outcome(
                        ctx.workflow_id,
                        ctx.fence,
                        Status.CANCELLED,
                        error=serialization.dumps_error(exc),
                        name=ctx.name,
                        queue_name=ctx.queue_name,
                    )
                ]
            )

    def _watch_abandoned(self, now: float) -> None:
        """Abandoned step bodies (attempts past their time_limit, whose workflows have gone
        on) hold a thread each and may hold more: when one runs past its grace, or more of
        them run than the process has workflow threads, replace the process."""
        if self.config.in_process:  # the caller's own process: nothing to replace
            return
        running = self.app.abandoned_bodies.running()
        overdue = [b for b in running if b.overdue(now)]
        if not overdue and len(running) <= self.config.threads:
            return
        worst = overdue[0] if overdue else running[0]
        log.error(
            "abandoned_steps_running",
            n=len(running),
            overdue=len(overdue),
            step=worst.step,
            workflow_id=worst.workflow_id,
            abandoned_s=round(now - worst.abandoned_at, 1),
            action="replacing process",
        )
        self._replace_process([])

    def _replace_process(self, outcomes: list[Outcome]) -> None:
        """Write ``outcomes``, hand the rest of this process's work back uncharged, exit."""
        self.stop.set()
        self.completer.flush(2.0)
        try:
            if outcomes:
                finish(self.app, outcomes, self.executor_id)
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
