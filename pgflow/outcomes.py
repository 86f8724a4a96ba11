"""How runs end: the outcome of one run, the fenced final writes (one statement per owner, in
batches), and handing back a workflow this process will not finish.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog

from . import metrics, serialization
from .db.notify import queue_channel
from .errors import PgflowError
from .records import Claimed, Outcome, Status

if TYPE_CHECKING:
    from .executor import ExecutorHost

log = structlog.get_logger("pgflow")


def owner_of_run(claimed: Claimed) -> str:
    """The executor a run writes as: the one it was started, claimed or adopted under."""
    if claimed.executor_id is None:
        raise ValueError(f"workflow {claimed.workflow_id} was claimed without an executor id")
    return claimed.executor_id


def outcome(
    claimed: Claimed,
    status: Status,
    *,
    output: str | None = None,
    error: str | None = None,
    started: float | None = None,
) -> Outcome:
    """How a run of ``claimed`` ended, written as the owner it ran under."""
    return Outcome(
        claimed.workflow_id,
        claimed.fence,
        status,
        output=output,
        error=error,
        executor_id=owner_of_run(claimed),
        name=claimed.name,
        queue_name=claimed.queue_name,
        seconds=None if started is None else time.monotonic() - started,
    )


def failed(
    claimed: Claimed, status: Status, exc: BaseException, started: float | None = None
) -> Outcome:
    """A run that ended ``status`` with ``exc`` (recorded as an error)."""
    return outcome(claimed, status, error=serialization.dumps_error(exc), started=started)


def finish(host: ExecutorHost, outcomes: list[Outcome], executor_id: str | None = None) -> set[str]:
    """Write final statuses, fenced, one statement per owner (each outcome's own
    ``executor_id``, else ``executor_id``); return the ids actually written."""
    by_owner: dict[str, list[Outcome]] = {}
    for o in outcomes:
        owner = o.executor_id or executor_id
        if owner is None:
            raise ValueError(f"the outcome of workflow {o.workflow_id} names no executor")
        by_owner.setdefault(owner, []).append(o)
    written: set[str] = set()
    for owner, batch in by_owner.items():
        params = {
            "executor_id": owner,
            "workflow_ids": [o.workflow_id for o in batch],
            "fences": [o.fence for o in batch],
            "statuses": [o.status.value for o in batch],
            "outputs": [o.output for o in batch],
            "errors": [o.error for o in batch],
        }
        written.update(r["workflow_id"] for r in _finish_batch(host, params))
    if outcomes:
        host.completions.notify()
        _count_finished(outcomes, written)
    return written


def _count_finished(outcomes: list[Outcome], written: set[str]) -> None:
    refused = 0
    for o in outcomes:
        if o.workflow_id in written:
            metrics.workflow_finished(o.queue_name, o.name, o.status.value, o.seconds)
        else:
            refused += 1
    metrics.write_fenced("final", refused)


def _finish_batch(host: ExecutorHost, params: dict[str, Any]) -> list[dict[str, Any]]:
    return host.db.retrying(lambda: host.db.fetchall("finish_workflows", params))


def hand_back(
    host: ExecutorHost, claimed: Claimed, *, charge: bool = False, patience: float | None = None
) -> None:
    """Release one workflow this process owns but will not run on (uncharged unless
    ``charge``). With ``patience``, gives up quietly when the database stays away that long:
    the executor's deregistration, or its expiry, releases the workflow then."""
    try:
        host.db.retrying(
            lambda: host.db.fetchall(
                "release_executor_work",
                {
                    "executor_ids": [owner_of_run(claimed)],
                    "charge": charge,
                    "channel": queue_channel(host.db.schema),
                    "workflow_ids": [claimed.workflow_id],
                },
            ),
            patience=patience,
        )
    except PgflowError as exc:
        if patience is None:
            raise
        log.warning("hand_back_failed", workflow_id=claimed.workflow_id, error=str(exc))
    host.completions.notify()
