"""A worker process's periodic jobs, which its claim loop runs through a ``Periodic`` scheduler:
recovery (reap dead executors, adopt their orphans), schedule ticks, the stranded-work report,
retention and the read of the paused queues."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from .. import retention, schedules
from ..management import paused_queues, stranded_work
from ..recovery import reap_dead
from .periodic import Periodic

if TYPE_CHECKING:
    from ..app import App
    from ..executor import Executor
    from ..records import Claimed

log = structlog.get_logger("pgflow")

# Seconds between two reports of stranded work (the first comes at start).
STRANDED_EVERY = 60.0
# Seconds between automatic retention passes (the `retention` setting); sooner while a pass
# leaves rows behind. One process of the cluster prunes at a time (an advisory lock).
RETENTION_EVERY = 300.0
RETENTION_BACKLOG_EVERY = 5.0
PAUSED_EVERY = 1.0  # seconds between reads of the paused queues
TICK_EVERY = 1.0  # seconds between looks for due schedule ticks


class Upkeep:
    """The periodic jobs of one worker process, and what they learn (``paused``)."""

    def __init__(
        self,
        app: App,
        executor: Executor,
        queue_names: list[str],
        *,
        room: Callable[[], int],
        submit: Callable[[Claimed], None],
    ) -> None:
        self.app = app
        self.executor = executor
        self.queue_names = queue_names
        self.room = room  # free workflow threads for adopted work (0 while draining)
        self.submit = submit
        self.paused: set[str] = set()  # queues an operator paused (pgflow queues pause)

    def jobs(self, *, report_stranded: bool) -> Periodic:
        """The scheduler of this process's jobs, in the order each turn runs them."""
        app = self.app
        periodic = Periodic(app.db)
        periodic.add("recovery", app.settings.heartbeat_interval, self.recover, "recovery_failed")
        if app.schedules:
            periodic.add("schedule_ticks", TICK_EVERY, self.tick_schedules, "schedule_tick_failed")
        if report_stranded:
            periodic.add(
                "stranded_report", STRANDED_EVERY, self.warn_stranded, "stranded_check_failed"
            )
        if app.settings.retention:
            periodic.add("retention", RETENTION_EVERY, self.apply_retention, "retention_failed")
        # Once a second, not on every wake: a wake comes with nearly every enqueue and
        # completion, and a read per wake doubled the statements per job of a drain.
        periodic.add("paused_queues", PAUSED_EVERY, self.read_paused, "paused_check_failed")
        return periodic

    def recover(self) -> None:
        """Release the work of dead executors, then adopt ownerless work we have room for."""
        reap_dead(self.app, self.executor)
        for claimed in self.executor.adopt(self.room()):
            self.submit(claimed)

    def tick_schedules(self) -> None:
        """Enqueue due schedule ticks (every worker does; each tick is inserted once)."""
        for workflow_id in schedules.tick(self.app):
            log.info("schedule_tick_enqueued", workflow_id=workflow_id)

    def warn_stranded(self) -> float | None:
        """Report work no live worker can run. Before it can be judged, the seconds until
        it can."""
        # "No live worker" is judged by heartbeats: after an outage every executor's row looks
        # stale until it beats again, so not before a heartbeat timeout has passed since.
        settings = self.app.settings
        judged_after = settings.heartbeat_timeout + settings.heartbeat_interval
        since = self.app.db.since_outage()
        if since < judged_after:
            return judged_after - since
        for s in stranded_work(self.app.db, settings.heartbeat_timeout, self.queue_names):
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
        return None

    def apply_retention(self) -> float | None:
        """One bounded pass of the retention setting; sooner again while rows are left."""
        done = retention.apply_retention(self.app.db, self.app.settings.retention_seconds or 0.0)
        if done is not None and done.workflows:
            log.info(
                "workflows_pruned",
                workflows=done.workflows,
                steps=done.steps,
                messages=done.messages,
                events=done.events,
                more=done.more,
            )
        return RETENTION_BACKLOG_EVERY if done is not None and done.more else None

    def read_paused(self) -> None:
        """Which of the served queues an operator paused; logged when that changes."""
        now_paused = paused_queues(self.app.db) & set(self.queue_names)
        for name in sorted(now_paused - self.paused):
            log.info("queue_paused", queue=name, action="claims stopped; running work goes on")
        for name in sorted(self.paused - now_paused):
            log.info("queue_resumed", queue=name)
        self.paused = now_paused
