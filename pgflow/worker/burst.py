"""When a ``--burst`` worker (or ``pgflow.testing.drain``) is done: nothing it could run is
left in its queues, or only delayed work it was not asked to wait for."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from ..app import App

log = structlog.get_logger("pgflow")


def nothing_left(
    app: App, queues: list[str], *, in_process: bool, wait_delayed: bool, report: bool
) -> bool:
    """True when ``queues`` hold nothing for this worker (``report``: say what delayed work
    is left, and when it comes due)."""
    # A --burst worker does not wait for names it does not know (it could never run
    # them); pgflow.testing.drain does, and reports them when its timeout ends.
    names = None if in_process else sorted(app.registry.workflows)
    row = app.db.fetchone(
        "work_left",
        {
            "app_version": app.app_version,
            "names": names,
            "strict": app.settings.strict_versions,
            "queues": queues,
        },
    )
    if row is None or row["pending"] != 0:
        return False
    if row["enqueued"] == 0:
        return True
    if in_process or wait_delayed or row["delayed"] != row["enqueued"]:
        return False
    # Only delayed work is left: say what and when, rather than wait for it in silence.
    if report:
        due = row["next_due"]
        log.warning(
            "burst_delayed_work_left",
            workflows=row["delayed"],
            next_due=due.isoformat(),
            due_in_s=round((due - row["now"]).total_seconds(), 1),
            action="run the worker again then, or pass --burst-wait-delayed to wait for it",
        )
    return True
