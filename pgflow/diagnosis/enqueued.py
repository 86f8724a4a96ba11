"""The rules for an ENQUEUED workflow, in the claim's order: due, not paused, a live worker
that may claim it (serves the queue, knows the name, may run the version), room in the
queue's (or key's) limits, nothing ahead of it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .facts import (
    NAMED,
    SLEEP_STEP,
    Facts,
    QueueFacts,
    Reason,
    at,
    elapsed,
    may_run,
    plural,
    span,
    started,
    versions_of,
)


def enqueued(facts: Facts) -> list[Reason]:
    w, q, now = facts.workflow, facts.queue, facts.now
    reasons: list[Reason] = []
    if w.not_before is not None and w.not_before > now:
        reasons.append(_delay(facts, w.not_before))
    if q is not None and q.paused_at is not None:
        reasons.append(
            Reason(
                "paused",
                f"Its queue {q.name!r} is paused (since {at(q.paused_at)}, "
                f"{span(elapsed(now, q.paused_at))} ago): no worker claims from it until "
                f"`pgflow queues resume {q.name}`.",
                {
                    "queue": q.name,
                    "paused_at": q.paused_at,
                    "paused_for_s": elapsed(now, q.paused_at),
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
                f"{plural(ahead, 'workflow')} ({' and '.join(parts)}) "
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
    left = elapsed(until, now)
    if w.started_at is not None and cp is not None and cp.name == SLEEP_STEP:
        wake = cp.wake_at or until
        return Reason(
            "sleeping",
            f"It is parked in a durable sleep (its step {cp.step_id}, since "
            f"{at(cp.completed_at)}) until {at(wake)}, in {span(elapsed(wake, now))}; "
            "its queue's slots are free meanwhile.",
            {
                "step": cp.step_id,
                "until": wake,
                "in_s": elapsed(wake, now),
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
        others = f" (live versions elsewhere: {', '.join(versions_of(live))})" if live else ""
        return [
            Reason(
                "no_worker",
                f"No live worker serves queue {queue!r}{others}: start one "
                f"(`pgflow worker -A MODULE -Q {queue}`).",
                {"queue": queue, "live_executors": len(live), "live_versions": versions_of(live)},
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
                f"None of the {plural(len(servers), 'live worker')} of queue "
                f"{queue!r} knows workflow {w.name!r} (their versions: "
                f"{', '.join(versions_of(servers))}); {registered}.",
                {
                    "live_workers": len(servers),
                    "live_versions": versions_of(servers),
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
    to = versions_of(knowing)[0]
    return [
        Reason(
            "wrong_version",
            f"No live worker of its version runs it: {why}, and only that version "
            f"may run it; the live workers of the queue run "
            f"{', '.join(versions_of(knowing))}. Start a worker of {w.app_version}, "
            f"or `pgflow workflows retarget --from {w.app_version} --to {to}`.",
            {"app_version": w.app_version, "live_versions": versions_of(knowing)},
        )
    ]


def _limits(facts: Facts, q: QueueFacts) -> list[Reason]:
    """The queue's (or key's) limits that are full: concurrency, rate window, workers."""
    key = facts.workflow.partition_key if q.partitioned else None
    found = (_concurrency(facts, q, key), _rate(facts, q, key), _workers(facts, q, key))
    return [r for r in found if r is not None]


def _concurrency(facts: Facts, q: QueueFacts, key: str | None) -> Reason | None:
    if q.concurrency is None or facts.running_total < q.concurrency:
        return None
    held: list[dict[str, Any]] = [
        {
            "workflow_id": r.workflow_id,
            "executor_id": r.executor_id,
            "running_s": elapsed(facts.now, r.started_at),
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
        return Reason(
            "partition_full",
            f"Its partition key {key!r} is at its limit: "
            f"{facts.running_total} of {q.concurrency} running, taken by {named}.",
            {**numbers, "partition_key": key},
        )
    return Reason(
        "concurrency_full",
        f"The queue's concurrency is {facts.running_total} of {q.concurrency}, taken by {named}.",
        numbers,
    )


def _rate(facts: Facts, q: QueueFacts, key: str | None) -> Reason | None:
    used = facts.rate_used
    if q.rate_limit is None or q.rate_per_seconds is None or used is None or used < q.rate_limit:
        return None
    of_key = f" of key {key!r}" if key is not None else ""
    nxt = facts.rate_next_slot
    when = f"; next slot at {at(nxt)}, in {span(elapsed(nxt, facts.now))}" if nxt else ""
    return Reason(
        "rate_limited",
        f"The rate limit{of_key} used {used} of {q.rate_limit} "
        f"starts in the current {q.rate_per_seconds:g}s window{when}.",
        {
            "used": used,
            "limit": q.rate_limit,
            "per_s": q.rate_per_seconds,
            "next_slot": nxt,
            "in_s": None if nxt is None else elapsed(nxt, facts.now),
        },
    )


def _workers(facts: Facts, q: QueueFacts, key: str | None) -> Reason | None:
    w, limit = facts.workflow, q.worker_concurrency
    if limit is None:
        return None
    capable = [
        e
        for e in facts.executors
        if e.alive
        and w.queue_name in e.queues
        and e.knows_name
        and may_run(e, w, q.strict_versions)
    ]
    if not capable or any(e.running_here < limit for e in capable):
        return None
    per = " per key" if key is not None else ""
    each = ", ".join(
        f"executor {e.executor_id[:12]} on {e.hostname}: {e.running_here} of {limit}"
        for e in capable[:NAMED]
    )
    return Reason(
        "workers_full",
        f"Every live worker's worker_concurrency{per} is full: {each}.",
        {
            "worker_concurrency": limit,
            "workers": [{"executor_id": e.executor_id, "running": e.running_here} for e in capable],
        },
    )
