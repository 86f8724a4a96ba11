"""The worker process's backstop for work that overran its limits.

A thread cannot be killed: a workflow ignoring its deadline, or step bodies left running past
their time limit that pile up or run on too long, end the process. The watch only finds them
and says so; the process writes the outcomes it is given, hands the rest back uncharged and
exits (code 4), and the supervisor starts a fresh one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from .. import serialization
from ..errors import WorkflowCancelled
from ..records import Outcome, Status

if TYPE_CHECKING:
    from ..app import App
    from ..context import WorkflowContext

log = structlog.get_logger("pgflow")

# A workflow still running this long after its deadline ignores it (stuck in a step).
DEADLINE_GRACE = 1.0


class OverrunWatch:
    """Checked on every turn of the claim loop; calls ``replace`` with the outcomes to write
    before the process is replaced."""

    def __init__(
        self,
        app: App,
        threads: int,
        *,
        in_process: bool,
        running: Callable[[], list[WorkflowContext]],
        replace: Callable[[list[Outcome]], None],
    ) -> None:
        self.app = app
        self.threads = threads
        self.in_process = in_process
        self.running = running
        self.replace = replace

    def check(self, now: float) -> None:
        self._abandoned_bodies(now)
        for ctx in self.running():
            if ctx.deadline_monotonic is None or now <= ctx.deadline_monotonic + DEADLINE_GRACE:
                continue
            log.error(
                "workflow_time_limit",
                workflow_id=ctx.workflow_id,
                workflow_name=ctx.name,
                action="replacing process",
            )
            # It gets its outcome first (CANCELLED); the rest of the process's work goes back.
            exc = WorkflowCancelled(ctx.workflow_id, "past its deadline (timeout)")
            self.replace(
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

    def _abandoned_bodies(self, now: float) -> None:
        """Abandoned step bodies (attempts past their time_limit, whose workflows have gone
        on) hold a thread each and may hold more: when one runs past its grace, or more of
        them run than the process has workflow threads, replace the process."""
        if self.in_process:  # the caller's own process: nothing to replace
            return
        running = self.app.abandoned_bodies.running()
        overdue = [b for b in running if b.overdue(now)]
        if not overdue and len(running) <= self.threads:
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
        self.replace([])
