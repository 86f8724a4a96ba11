"""Why a workflow is not running: a pure function from the facts of one instant to reasons.

:mod:`pgflow.explain` reads the facts from the database (:class:`Facts`); :func:`diagnose` turns
them into :class:`Reason` records, each a code, a sentence for people and the numbers in it for
scripts. No I/O here, so each rule is easy to test on its own.

The rules follow the claim (``claim_limited_v2``, ``claim_partitions_v2``): a workflow is
claimed when it is due, a live worker serving its queue knows its name and may run its version,
the queue's (or its key's) concurrency and rate window have room, that worker's
``worker_concurrency`` has room, and nothing is ahead of it in priority, then FIFO, order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

# How many workflows a reason names (ids), at most; the numbers keep the full count.
NAMED = 5
SLEEP_STEP = "pgflow.sleep"


@dataclass(frozen=True)
class Reason:
    """One thing that holds a workflow back (or says where it is): ``code`` for scripts, a
    sentence for people, and the numbers in that sentence."""

    code: str
    text: str
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkflowFacts:
    workflow_id: str
    name: str
    status: str
    queue_name: str | None
    priority: int
    partition_key: str | None
    app_version: str | None
    executor_id: str | None
    started_at: datetime | None
    forked_from: str | None
    not_before: datetime | None
    updated_at: datetime
    completed_at: datetime | None


@dataclass(frozen=True)
class QueueFacts:
    """A queue's limits as its workers last declared them (``declared`` False: none did)."""

    name: str
    declared: bool
    concurrency: int | None = None
    worker_concurrency: int | None = None
    rate_limit: int | None = None
    rate_per_seconds: float | None = None
    priority_enabled: bool = False
    partitioned: bool = False
    strict_versions: bool = False
    paused_at: datetime | None = None  # set while an operator has paused the queue


@dataclass(frozen=True)
class Running:
    """A PENDING workflow holding a slot of the queue (or key)."""

    workflow_id: str
    executor_id: str | None
    started_at: datetime | None


@dataclass(frozen=True)
class ExecutorFacts:
    """An executor's row: ``alive`` by the heartbeat timeout; ``knows_name`` whether its
    version registered the workflow's name; ``running_here`` its PENDING workflows of the
    queue (of the key, on a partitioned queue)."""

    executor_id: str
    hostname: str
    pid: int
    app_version: str | None
    kind: str
    queues: tuple[str, ...]
    heartbeat_at: datetime
    alive: bool
    knows_name: bool
    running_here: int = 0


@dataclass(frozen=True)
class Checkpoint:
    """The latest checkpoint; ``wake_at`` the wake-up time a sleep recorded."""

    step_id: int
    name: str
    completed_at: datetime
    wake_at: datetime | None = None


@dataclass(frozen=True)
class Facts:
    """Everything :func:`diagnose` reads, at one instant (``now``, the database's time)."""

    now: datetime
    heartbeat_timeout: float
    workflow: WorkflowFacts
    queue: QueueFacts | None = None
    running: tuple[Running, ...] = ()  # the first few, longest running first
    running_total: int = 0
    rate_used: int | None = None
    rate_next_slot: datetime | None = None
    executors: tuple[ExecutorFacts, ...] = ()
    higher_priority_ahead: int = 0
    earlier_ahead: int = 0
    last_checkpoint: Checkpoint | None = None
    messages: dict[str, int] = field(default_factory=dict)  # unread, by topic
    name_known: bool | None = None  # by some registered version (None: none registered)


# -- text helpers ------------------------------------------------------------------------------


def at(value: datetime) -> str:
    """A time in UTC to the second."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def span(seconds: float) -> str:
    """``850ms``, ``12s``, ``4m05s``, ``2h03m``, ``3d04h``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    return f"{int(seconds // 86400)}d{int(seconds % 86400 // 3600):02d}h"


def _since(now: datetime, then: datetime | None) -> float:
    return 0.0 if then is None else (now - then).total_seconds()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _versions(executors: list[ExecutorFacts]) -> list[str]:
    return sorted({e.app_version or "(none)" for e in executors})


# -- the rules ---------------------------------------------------------------------------------


def diagnose(facts: Facts) -> list[Reason]:
    """Every reason that holds for the workflow of ``facts``, the weightiest first."""
    status = facts.workflow.status
    if status == "ENQUEUED":
        return _enqueued(facts)
    if status == "PENDING":
        return _pending(facts)
    return [_done(facts)]


def _done(facts: Facts) -> Reason:
    w = facts.workflow
    ended = w.completed_at or w.updated_at
    return Reason(
        "done",
        f"It is done: {w.status} at {at(ended)} "
        f"({span(_since(facts.now, ended))} ago); nothing blocks it.",
        {"status": w.status, "completed_at": ended, "ago_s": _since(facts.now, ended)},
    )


def started(w: WorkflowFacts) -> bool:
    """Whether it has checkpoints of some version's code (then only that version runs it)."""
    return w.started_at is not None or w.forked_from is not None


def may_run(e: ExecutorFacts, w: WorkflowFacts, strict: bool) -> bool:
    """The version rule of the claim: a started row only on its own version; a never-started
    one on any version that knows its name, unless the queue is strict."""
    if w.app_version is None or e.app_version == w.app_version:
        return True
    return not strict and not started(w)


def _enqueued(facts: Facts) -> list[Reason]:
    w, q, now = facts.workflow, facts.queue, facts.now
    reasons: list[Reason] = []
    if w.not_before is not None and w.not_before > now:
        reasons.append(_delay(facts, w.not_before))
    if q is not None and q.paused_at is not None:
        reasons.append(
            Reason(
                "paused",
                f"Its queue {q.name!r} is paused (since {at(q.paused_at)}, "
                f"{span(_since(now, q.paused_at))} ago): no worker claims from it until "
                f"`pgflow queues resume {q.name}`.",
                {
                    "queue": q.name,
                    "paused_at": q.paused_at,
                    "paused_for_s": _since(now, q.paused_at),
                },
            )
        )
    reasons += _who_may_claim(facts)
    if q is not None:
        reasons += _limits(facts, q)
    ahead = facts.higher_priority_ahead + facts.earlier_ahead
    if ahead:
        parts = []
        if facts.higher_priority_ahead:
            parts.append(f"{facts.higher_priority_ahead} of higher priority")
        if facts.earlier_ahead:
            parts.append(f"{facts.earlier_ahead} enqueued earlier")
        where = f"queue {w.queue_name!r}"
        if q is not None and q.partitioned and w.partition_key is not None:
            where += f" (key {w.partition_key!r})"
        reasons.append(
            Reason(
                "ahead",
                f"{_plural(ahead, 'workflow')} ({' and '.join(parts)}) "
                f"{'is' if ahead == 1 else 'are'} ahead of it in {where}.",
                {
                    "ahead": ahead,
                    "higher_priority": facts.higher_priority_ahead,
                    "earlier": facts.earlier_ahead,
                },
            )
        )
    if not reasons:
        reasons.append(
            Reason(
                "claimable",
                "Nothing holds it back: a live worker of its queue should claim it "
                "at its next poll.",
                {},
            )
        )
    return reasons


def _delay(facts: Facts, until: datetime) -> Reason:
    w, cp, now = facts.workflow, facts.last_checkpoint, facts.now
    left = _since(until, now)
    if w.started_at is not None and cp is not None and cp.name == SLEEP_STEP:
        wake = cp.wake_at or until
        return Reason(
            "sleeping",
            f"It is parked in a durable sleep (its step {cp.step_id}, since "
            f"{at(cp.completed_at)}) until {at(wake)}, in {span(_since(wake, now))}; "
            "its queue's slots are free meanwhile.",
            {
                "step": cp.step_id,
                "until": wake,
                "in_s": _since(wake, now),
                "since": cp.completed_at,
            },
        )
    return Reason(
        "delayed",
        f"It is delayed until {at(until)}, in {span(left)}.",
        {"until": until, "in_s": left},
    )


def _who_may_claim(facts: Facts) -> list[Reason]:
    """No live worker serves the queue; or none that knows the name; or none of a version
    that may run it."""
    w, q = facts.workflow, facts.queue
    live = [e for e in facts.executors if e.alive]
    queue = w.queue_name
    servers = [e for e in live if queue is not None and queue in e.queues]
    if not servers:
        others = f" (live versions elsewhere: {', '.join(_versions(live))})" if live else ""
        return [
            Reason(
                "no_worker",
                f"No live worker serves queue {queue!r}{others}: start one "
                f"(`pgflow worker -A MODULE -Q {queue}`).",
                {"queue": queue, "live_executors": len(live), "live_versions": _versions(live)},
            )
        ]
    knowing = [e for e in servers if e.knows_name]
    if not knowing:
        registered = (
            "no registered version knows it"
            if facts.name_known is False
            else "deploy a worker that defines it"
        )
        return [
            Reason(
                "unknown_name",
                f"None of the {_plural(len(servers), 'live worker')} of queue "
                f"{queue!r} knows workflow {w.name!r} (their versions: "
                f"{', '.join(_versions(servers))}); {registered}.",
                {
                    "live_workers": len(servers),
                    "live_versions": _versions(servers),
                    "name_known": facts.name_known,
                },
            )
        ]
    strict = q.strict_versions if q is not None else False
    if any(may_run(e, w, strict) for e in knowing):
        return []
    if w.forked_from is not None and w.started_at is None:
        why = f"it was forked from {w.forked_from} on version {w.app_version}"
    elif started(w):
        why = f"it started on version {w.app_version}"
    else:
        why = f"queue {queue!r} is strict_versions and it was enqueued for {w.app_version}"
    to = _versions(knowing)[0]
    return [
        Reason(
            "wrong_version",
            f"No live worker of its version runs it: {why}, and only that version "
            f"may run it; the live workers of the queue run "
            f"{', '.join(_versions(knowing))}. Start a worker of {w.app_version}, "
            f"or `pgflow workflows retarget --from {w.app_version} --to {to}`.",
            {"app_version": w.app_version, "live_versions": _versions(knowing)},
        )
    ]


def _limits(facts: Facts, q: QueueFacts) -> list[Reason]:
    w, now = facts.workflow, facts.now
    reasons: list[Reason] = []
    key = w.partition_key if q.partitioned else None
    if q.concurrency is not None and facts.running_total >= q.concurrency:
        held: list[dict[str, Any]] = [
            {
                "workflow_id": r.workflow_id,
                "executor_id": r.executor_id,
                "running_s": _since(now, r.started_at),
            }
            for r in facts.running
        ]
        named = ", ".join(
            f"{h['workflow_id']} (for {span(float(h['running_s']))})" for h in held[:NAMED]
        )
        more = facts.running_total - min(len(held), NAMED)
        named += f" and {more} more" if more > 0 else ""
        numbers = {"running": facts.running_total, "concurrency": q.concurrency, "taken_by": held}
        if key is not None:
            reasons.append(
                Reason(
                    "partition_full",
                    f"Its partition key {key!r} is at its limit: "
                    f"{facts.running_total} of {q.concurrency} running, taken by "
                    f"{named}.",
                    {**numbers, "partition_key": key},
                )
            )
        else:
            reasons.append(
                Reason(
                    "concurrency_full",
                    f"The queue's concurrency is {facts.running_total} of "
                    f"{q.concurrency}, taken by {named}.",
                    numbers,
                )
            )
    if (
        q.rate_limit is not None
        and q.rate_per_seconds is not None
        and facts.rate_used is not None
        and facts.rate_used >= q.rate_limit
    ):
        of_key = f" of key {key!r}" if key is not None else ""
        nxt = facts.rate_next_slot
        when = f"; next slot at {at(nxt)}, in {span(_since(nxt, now))}" if nxt else ""
        reasons.append(
            Reason(
                "rate_limited",
                f"The rate limit{of_key} used {facts.rate_used} of {q.rate_limit} "
                f"starts in the current {q.rate_per_seconds:g}s window{when}.",
                {
                    "used": facts.rate_used,
                    "limit": q.rate_limit,
                    "per_s": q.rate_per_seconds,
                    "next_slot": nxt,
                    "in_s": None if nxt is None else _since(nxt, now),
                },
            )
        )
    if q.worker_concurrency is not None:
        capable = [
            e
            for e in facts.executors
            if e.alive
            and w.queue_name in e.queues
            and e.knows_name
            and may_run(e, w, q.strict_versions)
        ]
        if capable and all(e.running_here >= q.worker_concurrency for e in capable):
            per = " per key" if key is not None else ""
            each = ", ".join(
                f"executor {e.executor_id[:12]} on {e.hostname}: "
                f"{e.running_here} of {q.worker_concurrency}"
                for e in capable[:NAMED]
            )
            reasons.append(
                Reason(
                    "workers_full",
                    f"Every live worker's worker_concurrency{per} is full: {each}.",
                    {
                        "worker_concurrency": q.worker_concurrency,
                        "workers": [
                            {"executor_id": e.executor_id, "running": e.running_here}
                            for e in capable
                        ],
                    },
                )
            )
    return reasons


def _pending(facts: Facts) -> list[Reason]:
    w, now = facts.workflow, facts.now
    owner = next((e for e in facts.executors if e.executor_id == w.executor_id), None)
    reasons: list[Reason] = []
    if w.executor_id is None:
        reasons.append(_ownerless(facts))
    elif owner is None:
        reasons.append(
            Reason(
                "owner_gone",
                f"Its executor {w.executor_id} is no longer registered; the next "
                "recovery pass of a live executor hands it back.",
                {"executor_id": w.executor_id},
            )
        )
    elif owner.alive:
        reasons.append(_where(facts, owner))
    else:
        due = owner.heartbeat_at + timedelta(seconds=facts.heartbeat_timeout)
        ago = _since(now, owner.heartbeat_at)
        late = due <= now
        live = [e for e in facts.executors if e.alive]
        when = (
            f"adoption was due at {at(due)}, {span(_since(now, due))} ago"
            if late
            else f"adoption due at {at(due)}, in {span(_since(due, now))}"
        )
        then = (
            "hands it back to its queue"
            if w.queue_name is not None
            else "makes it ownerless, for an executor of its version to adopt"
        )
        tail = (
            "; no live executor runs now to adopt it"
            if not live
            else f": the next recovery pass of a live executor {then}"
        )
        reasons.append(
            Reason(
                "owner_dead",
                f"Its executor {owner.executor_id} (host {owner.hostname}, pid "
                f"{owner.pid}) is dead: its last heartbeat was {span(ago)} ago, "
                f"past the {span(facts.heartbeat_timeout)} timeout; {when}{tail}.",
                {
                    "executor_id": owner.executor_id,
                    "heartbeat_age_s": ago,
                    "timeout_s": facts.heartbeat_timeout,
                    "adoption_due": due,
                    "live_executors": len(live),
                },
            )
        )
    if facts.messages:
        n = sum(facts.messages.values())
        topics = ", ".join(
            f"{t!r}: {c}" if t else f"no topic: {c}" for t, c in sorted(facts.messages.items())
        )
        reasons.append(
            Reason(
                "messages_waiting",
                f"{_plural(n, 'unread message')} "
                f"{'waits' if n == 1 else 'wait'} for it ({topics}).",
                {"unread": n, "topics": dict(facts.messages)},
            )
        )
    return reasons


def _ownerless(facts: Facts) -> Reason:
    w = facts.workflow
    live = [e for e in facts.executors if e.alive]
    adopters = [e for e in live if e.app_version == w.app_version and e.knows_name]
    if adopters:
        return Reason(
            "awaiting_adoption",
            f"It has no owner (its process ended or handed it back); "
            f"{_plural(len(adopters), 'live executor')} of version "
            f"{w.app_version} adopt it at their next recovery pass.",
            {"app_version": w.app_version, "adopters": len(adopters)},
        )
    return Reason(
        "wrong_version",
        f"It has no owner, and no live executor of its version "
        f"{w.app_version} that knows {w.name!r} runs to adopt it (live "
        f"versions: {', '.join(_versions(live)) or 'none'}): start one, or "
        f"`pgflow workflows retarget --from {w.app_version} --to VERSION`.",
        {"app_version": w.app_version, "live_versions": _versions(live)},
    )


def _where(facts: Facts, owner: ExecutorFacts) -> Reason:
    """Where a workflow with a live owner is: the step after its latest checkpoint."""
    w, cp, now = facts.workflow, facts.last_checkpoint, facts.now
    beat = _since(now, owner.heartbeat_at)
    on = (
        f"It runs on executor {owner.executor_id} (host {owner.hostname}, pid {owner.pid}, "
        f"version {owner.app_version}; heartbeat {span(beat)} ago)"
    )
    numbers: dict[str, Any] = {"executor_id": owner.executor_id, "heartbeat_age_s": beat}
    if cp is not None and cp.name == SLEEP_STEP and cp.wake_at is not None and cp.wake_at > now:
        left = _since(cp.wake_at, now)
        return Reason(
            "sleeping",
            f"{on}, in a durable sleep (its step {cp.step_id}) until "
            f"{at(cp.wake_at)}, in {span(left)}.",
            {**numbers, "step": cp.step_id, "until": cp.wake_at, "in_s": left},
        )
    step = (cp.step_id if cp is not None else 0) + 1
    candidates = [t for t in (w.started_at, cp.completed_at if cp else None) if t is not None]
    since = max(candidates) if candidates else None
    for_s = _since(now, since)
    after = (
        f" (step {cp.step_id} {cp.name!r} completed at {at(cp.completed_at)})"
        if cp is not None
        else " (no step has completed yet)"
    )
    return Reason(
        "running",
        f"{on}, in its step {step} for {span(for_s)}{after}. A step is recorded "
        "only when it ends, so this is a step body still at work, or a recv, "
        "get_event or child workflow it waits on.",
        {
            **numbers,
            "step": step,
            "in_step_s": for_s,
            "last_step": None
            if cp is None
            else {"step": cp.step_id, "name": cp.name, "completed_at": cp.completed_at},
        },
    )


def paragraph(facts: Facts, reasons: list[Reason]) -> str:
    """The explanation for people: who and where, then every reason."""
    w = facts.workflow
    where = f" on queue {w.queue_name!r}" if w.queue_name else ""
    key = f" (partition key {w.partition_key!r})" if w.partition_key else ""
    head = f"Workflow {w.workflow_id} ({w.name}) is {w.status}{where}{key}."
    return " ".join([head, *(r.text for r in reasons)])
