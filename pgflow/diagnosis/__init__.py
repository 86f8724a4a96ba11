"""Why a workflow is not running: a pure function from the facts of one instant to reasons.

:mod:`pgflow.explain` reads the facts from the database (:class:`Facts`); :func:`diagnose` turns
them into :class:`Reason` records, each a code, a sentence for people and the numbers in it for
scripts. No I/O here, so each rule is easy to test on its own.

The rules follow the claim (``claim_limited_v2``, ``claim_partitions_v2``): a workflow is
claimed when it is due, a live worker serving its queue knows its name and may run its version,
the queue's (or its key's) concurrency and rate window have room, that worker's
``worker_concurrency`` has room, and nothing is ahead of it in priority, then FIFO, order
(:mod:`.enqueued`). A PENDING workflow is where its owner is: alive and in a step, a sleep or
a ``recv``; dead, with its adoption due; or none (:mod:`.pending`).
"""

from __future__ import annotations

from .enqueued import enqueued
from .facts import (
    NAMED,
    SLEEP_STEP,
    Checkpoint,
    ExecutorFacts,
    Facts,
    QueueFacts,
    Reason,
    RecvWait,
    Running,
    WorkflowFacts,
    at,
    elapsed,
    may_run,
    span,
    started,
)
from .pending import pending

__all__ = [
    "NAMED",
    "SLEEP_STEP",
    "Checkpoint",
    "ExecutorFacts",
    "Facts",
    "QueueFacts",
    "Reason",
    "RecvWait",
    "Running",
    "WorkflowFacts",
    "at",
    "diagnose",
    "may_run",
    "paragraph",
    "span",
    "started",
]


def diagnose(facts: Facts) -> list[Reason]:
    """Every reason that holds for the workflow of ``facts``, the weightiest first."""
    status = facts.workflow.status
    if status == "ENQUEUED":
        return enqueued(facts)
    if status == "PENDING":
        return pending(facts)
    return [_done(facts)]


def _done(facts: Facts) -> Reason:
    w = facts.workflow
    ended = w.completed_at or w.updated_at
    return Reason(
        "done",
        f"It is done: {w.status} at {at(ended)} "
        f"({span(elapsed(facts.now, ended))} ago); nothing blocks it.",
        {"status": w.status, "completed_at": ended, "ago_s": elapsed(facts.now, ended)},
    )


def paragraph(facts: Facts, reasons: list[Reason]) -> str:
    """The explanation for people: who and where, then every reason."""
    w = facts.workflow
    where = f" on queue {w.queue_name!r}" if w.queue_name else ""
    key = f" (partition key {w.partition_key!r})" if w.partition_key else ""
    head = f"Workflow {w.workflow_id} ({w.name}) is {w.status}{where}{key}."
    return " ".join([head, *(r.text for r in reasons)])
