"""The rules for a PENDING workflow: where it is. Its owner alive (in a step, a durable sleep
or a ``recv`` waiting for its topic), dead (when its adoption is due), gone, or none (who
adopts it); and the messages sent to it that no ``recv`` took yet."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from .facts import (
    SLEEP_STEP,
    ExecutorFacts,
    Facts,
    Reason,
    RecvWait,
    at,
    elapsed,
    plural,
    span,
    versions_of,
)


def pending(facts: Facts) -> list[Reason]:
    w = facts.workflow
    owner = next((e for e in facts.executors if e.executor_id == w.executor_id), None)
    if w.executor_id is None:
        first = _ownerless(facts)
    elif owner is None:
        first = Reason(
            "owner_gone",
            f"Its executor {w.executor_id} is no longer registered; the next "
            "recovery pass of a live executor hands it back.",
            {"executor_id": w.executor_id},
        )
    elif owner.alive:
        first = _where(facts, owner)
    else:
        first = _owner_dead(facts, owner)
    unread = _unread(facts)
    return [first] if unread is None else [first, unread]


def _owner_dead(facts: Facts, owner: ExecutorFacts) -> Reason:
    w, now = facts.workflow, facts.now
    due = owner.heartbeat_at + timedelta(seconds=facts.heartbeat_timeout)
    ago = elapsed(now, owner.heartbeat_at)
    live = [e for e in facts.executors if e.alive]
    when = (
        f"adoption was due at {at(due)}, {span(elapsed(now, due))} ago"
        if due <= now
        else f"adoption due at {at(due)}, in {span(elapsed(due, now))}"
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
    return Reason(
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


def _unread(facts: Facts) -> Reason | None:
    if not facts.messages:
        return None
    n = sum(facts.messages.values())
    topics = ", ".join(
        f"{t!r}: {c}" if t else f"no topic: {c}" for t, c in sorted(facts.messages.items())
    )
    return Reason(
        "messages_waiting",
        f"{plural(n, 'unread message')} {'waits' if n == 1 else 'wait'} for it ({topics}).",
        {"unread": n, "topics": dict(facts.messages)},
    )


def _ownerless(facts: Facts) -> Reason:
    w = facts.workflow
    live = [e for e in facts.executors if e.alive]
    adopters = [e for e in live if e.app_version == w.app_version and e.knows_name]
    if adopters:
        return Reason(
            "awaiting_adoption",
            f"It has no owner (its process ended or handed it back); "
            f"{plural(len(adopters), 'live executor')} of version "
            f"{w.app_version} adopt it at their next recovery pass.",
            {"app_version": w.app_version, "adopters": len(adopters)},
        )
    return Reason(
        "wrong_version",
        f"It has no owner, and no live executor of its version "
        f"{w.app_version} that knows {w.name!r} runs to adopt it (live "
        f"versions: {', '.join(versions_of(live)) or 'none'}): start one, or "
        f"`pgflow workflows retarget --from {w.app_version} --to VERSION`.",
        {"app_version": w.app_version, "live_versions": versions_of(live)},
    )


def _where(facts: Facts, owner: ExecutorFacts) -> Reason:
    """Where a workflow with a live owner is: the step after its latest checkpoint."""
    w, cp, now = facts.workflow, facts.last_checkpoint, facts.now
    beat = elapsed(now, owner.heartbeat_at)
    on = (
        f"It runs on executor {owner.executor_id} (host {owner.hostname}, pid {owner.pid}, "
        f"version {owner.app_version}; heartbeat {span(beat)} ago)"
    )
    numbers: dict[str, Any] = {"executor_id": owner.executor_id, "heartbeat_age_s": beat}
    if cp is not None and cp.name == SLEEP_STEP and cp.wake_at is not None and cp.wake_at > now:
        left = elapsed(cp.wake_at, now)
        return Reason(
            "sleeping",
            f"{on}, in a durable sleep (its step {cp.step_id}) until "
            f"{at(cp.wake_at)}, in {span(left)}.",
            {**numbers, "step": cp.step_id, "until": cp.wake_at, "in_s": left},
        )
    step = (cp.step_id if cp is not None else 0) + 1
    if facts.recv_wait is not None and facts.recv_wait.step_id == step:
        return _in_recv(facts, on, numbers, facts.recv_wait)
    candidates = [t for t in (w.started_at, cp.completed_at if cp else None) if t is not None]
    since = max(candidates) if candidates else None
    for_s = elapsed(now, since)
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


def _in_recv(facts: Facts, on: str, numbers: dict[str, Any], wait: RecvWait) -> Reason:
    """A ``recv`` that found no message and waits for one (its row records since when)."""
    waited = elapsed(facts.now, wait.since)
    what = f"topic {wait.topic!r}" if wait.topic else "a message with no topic"
    until = ""
    left = None
    if wait.until is not None:
        left = elapsed(wait.until, facts.now)
        until = f"; it gives up at {at(wait.until)}, in {span(left)}"
    return Reason(
        "waiting_recv",
        f"{on}, waiting in recv for {what} since {at(wait.since)} ({span(waited)} ago), "
        f"its step {wait.step_id}{until}. A message sent to it on that topic wakes it.",
        {
            **numbers,
            "step": wait.step_id,
            "topic": wait.topic or None,
            "since": wait.since,
            "waiting_s": waited,
            "until": wait.until,
            "in_s": left,
        },
    )
