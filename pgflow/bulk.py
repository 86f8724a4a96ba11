"""Cancel or resume every workflow that matches a filter (status, queue, name, age), in
batches: the matching rows are walked in ``seq`` order (keyset), ``batch`` at a time, and each
batch is acted on by its own short statement, so a million rows never hold one long lock.

The rows acted on are those that matched when the action began (no later enqueue is touched);
the count a caller shows first comes from :func:`count_matching`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from .db.notify import message_channel, queue_channel
from .durations import parse_duration
from .errors import ConfigurationError, Deduplicated
from .records import Status

if TYPE_CHECKING:
    from .db.pool import Database

BATCH = 1000
Action = Literal["cancel", "resume"]
# What each action may touch, and what it touches when no status is given.
ALLOWED: dict[str, tuple[str, ...]] = {
    "cancel": ("ENQUEUED", "PENDING"),
    "resume": ("CANCELLED", "ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED", "ENQUEUED"),
}
DEFAULT: dict[str, tuple[str, ...]] = {
    "cancel": ("ENQUEUED", "PENDING"),
    "resume": ("CANCELLED", "ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"),
}


@dataclass(frozen=True)
class Match:
    """Which workflows a bulk action takes: every filter given must hold."""

    action: Action
    statuses: tuple[str, ...]
    queue: str | None = None
    name: str | None = None
    older_than: float | None = None  # seconds since the workflow was created


@dataclass(frozen=True)
class BulkResult:
    """What a bulk action did: ``matched`` workflows walked, ``changed`` of them cancelled or
    resumed, ``children`` cancelled with them (descendants that did not match themselves),
    ``unchanged`` left as they were (already ended or running; a dedup id taken), in
    ``batches`` statements."""

    action: str
    matched: int = 0
    changed: int = 0
    children: int = 0
    unchanged: int = 0
    batches: int = 0


def match(
    action: Action,
    *,
    status: str | Status | Iterable[str | Status] | None = None,
    queue: str | None = None,
    name: str | None = None,
    older_than: str | float | None = None,
    everything: bool = False,
) -> Match:
    """Check the filters of a bulk action: at least one, or ``everything=True`` (and then
    none), statuses the action applies to."""
    given = status is not None or queue is not None or name is not None or older_than is not None
    if everything and given:
        raise ConfigurationError(
            f"{action}: all=True (--all) takes every workflow; drop it "
            "to use filters, or drop the filters"
        )
    if not everything and not given:
        raise ConfigurationError(
            f"{action} by filter needs at least one of status, queue, name or older_than "
            f"(--status, --queue, --name, --older-than); to {action} every workflow it "
            f"applies to, say so with all=True (--all)"
        )
    allowed = ALLOWED[action]
    if status is None:
        statuses = DEFAULT[action]
    else:
        items = [status] if isinstance(status, (str, Status)) else list(status)
        try:
            statuses = tuple(
                dict.fromkeys(
                    Status(str(s.value if isinstance(s, Status) else s).strip().upper()).value
                    for s in items
                )
            )
        except ValueError:
            raise ConfigurationError(
                f"unknown status in {[str(s) for s in items]}; use one of "
                f"{', '.join(s.value for s in Status)}"
            ) from None
        refused = [s for s in statuses if s not in allowed]
        if refused or not statuses:
            raise ConfigurationError(
                f"{action} applies to {', '.join(allowed)} workflows, not "
                f"{', '.join(refused) or 'none'}"
            )
    seconds = None if older_than is None else parse_duration(older_than, what="older_than")
    return Match(action, statuses, queue, name, seconds)


@dataclass(frozen=True)
class _Bounds:
    max_seq: int
    created_before: datetime | None


def _bounds(db: Database, m: Match) -> _Bounds:
    row = db.retrying(lambda: db.fetchone("bulk_bounds", {"older_than_s": m.older_than}))
    assert row is not None
    return _Bounds(int(row["max_seq"]), row["created_before"])


def _params(m: Match, bounds: _Bounds) -> dict[str, Any]:
    return {
        "statuses": list(m.statuses),
        "queue_name": m.queue,
        "name": m.name,
        "created_before": bounds.created_before,
        "max_seq": bounds.max_seq,
    }


def count_matching(db: Database, m: Match) -> int:
    """How many workflows match now."""
    params = _params(m, _bounds(db, m))
    row = db.retrying(lambda: db.fetchone("count_matching", params))
    return int(row["n"]) if row else 0


def _walk(
    db: Database,
    m: Match,
    batch: int,
    act: Callable[[list[str]], BulkResult],
    on_batch: Callable[[BulkResult], None] | None,
) -> BulkResult:
    """Act on the matching rows, ``batch`` at a time; ``on_batch`` gets the running total."""
    if batch < 1:
        raise ConfigurationError(f"batch must be ≥ 1, not {batch}")
    params = {**_params(m, _bounds(db, m)), "limit": batch, "after_seq": 0}
    total = BulkResult(m.action)
    while True:
        rows = db.retrying(lambda: db.fetchall("match_batch", params))
        if not rows:
            return total
        done = act([r["workflow_id"] for r in rows])
        total = BulkResult(
            m.action,
            total.matched + done.matched,
            total.changed + done.changed,
            total.children + done.children,
            total.unchanged + done.unchanged,
            total.batches + 1,
        )
        if on_batch is not None:
            on_batch(total)
        if len(rows) < batch:
            return total
        params["after_seq"] = rows[-1]["seq"]


def cancel_ids(db: Database, ids: list[str]) -> BulkResult:
    """Cancel the active workflows among ``ids`` (one statement) with their descendants, as
    ``cancel`` does one; the others are left as they are (``unchanged``)."""
    rows = db.retrying(
        lambda: db.fetchall(
            "cancel_workflows",
            {"workflow_ids": ids, "include_roots": True, "channel": message_channel(db.schema)},
        )
    )
    cancelled = {r["workflow_id"] for r in rows}
    roots = len(cancelled.intersection(ids))
    return BulkResult("cancel", len(ids), roots, len(cancelled) - roots, len(ids) - roots)


def resume_ids(db: Database, ids: list[str]) -> BulkResult:
    """Resume the workflows among ``ids`` (one statement), as ``resume`` does one: ended ones
    run again from their last completed step; ENQUEUED ones lose their delay. One whose dedup
    id is held by an active workflow of its queue is left as it is (``unchanged``), as are
    running and succeeded ones."""
    params = {"workflow_ids": ids, "channel": queue_channel(db.schema)}
    try:
        row = db.retrying(lambda: db.fetchone("resume_workflows", params))
    except Deduplicated:
        # An enqueue took a dedup id between the statement's check and its write: the
        # batch again, one workflow at a time, leaving that one as it is.
        return _resume_one_by_one(db, ids)
    changed = int(row["resumed"]) + int(row["woken"]) if row else 0
    return BulkResult("resume", len(ids), changed, 0, len(ids) - changed)


def cancel_matching(
    db: Database,
    m: Match,
    *,
    batch: int = BATCH,
    on_batch: Callable[[BulkResult], None] | None = None,
) -> BulkResult:
    """Cancel the matching workflows and their descendants, as ``cancel`` does one (running
    ones are told by NOTIFY and stop at their next step)."""
    return _walk(db, m, batch, functools.partial(cancel_ids, db), on_batch)


def resume_matching(
    db: Database,
    m: Match,
    *,
    batch: int = BATCH,
    on_batch: Callable[[BulkResult], None] | None = None,
) -> BulkResult:
    """Resume the matching workflows, as ``resume`` does one: ended ones run again from
    their last completed step; ENQUEUED ones lose their delay. One whose dedup id is held by
    an active workflow of its queue is left as it is (counted in ``unchanged``)."""
    return _walk(db, m, batch, functools.partial(resume_ids, db), on_batch)


def _resume_one_by_one(db: Database, ids: list[str]) -> BulkResult:
    def one(workflow_id: str) -> dict[str, Any] | None:
        return db.fetchone(
            "resume_workflows", {"workflow_ids": [workflow_id], "channel": queue_channel(db.schema)}
        )

    changed = 0
    for workflow_id in ids:
        try:
            row = db.retrying(functools.partial(one, workflow_id))
        except Deduplicated:
            continue
        changed += int(row["resumed"]) + int(row["woken"]) if row else 0
    return BulkResult("resume", len(ids), changed, 0, len(ids) - changed)
