"""Retention: delete finished workflows older than a cutoff, with their checkpoints, the
messages sent to them and their events (``pgflow prune``, and the ``retention`` setting that
workers apply on their own).

Only terminal workflows go, judged by when they ended. A child stays as long as its parent
stays (the parent's replay reads the child's outcome from its row), so a family goes
children-and-parent together, once the parent is old enough too. Batches of ``batch`` rows,
each its own short transaction, walked in ``seq`` order, never one long lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .durations import parse_duration
from .errors import ConfigurationError
from .records import Status

if TYPE_CHECKING:
    from .db.pool import Database

BATCH = 5000
# The automatic pass (worker processes): smaller batches, a bounded time per pass.
AUTO_BATCH = 500
AUTO_BUDGET_S = 1.0
TERMINAL = ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")


@dataclass(frozen=True)
class PruneResult:
    """What a prune deleted: workflows, their checkpoints (steps), messages sent to them
    and events (latest values and history); ``more`` when a bounded pass stopped early."""

    workflows: int = 0
    steps: int = 0
    messages: int = 0
    events: int = 0
    batches: int = 0
    cutoff: datetime | None = None
    more: bool = False


def prune_statuses(status: str | Status | Iterable[str | Status] | None) -> tuple[str, ...]:
    """The statuses to prune (default: every terminal one); an active one is refused."""
    if status is None:
        return TERMINAL
    items = [status] if isinstance(status, (str, Status)) else list(status)
    try:
        found = tuple(
            dict.fromkeys(
                Status(str(s.value if isinstance(s, Status) else s).strip().upper()).value
                for s in items
            )
        )
    except ValueError:
        raise ConfigurationError(
            f"unknown status in {[str(s) for s in items]}; use one of {', '.join(TERMINAL)}"
        ) from None
    active = [s for s in found if s not in TERMINAL]
    if active or not found:
        raise ConfigurationError(
            f"prune deletes only finished workflows ({', '.join(TERMINAL)})"
            f", not {', '.join(active) or 'none'}"
        )
    return found


def _bounds(db: Database, older_than: str | float) -> dict[str, Any]:
    seconds = parse_duration(older_than, what="older_than")
    row = db.retrying(lambda: db.fetchone("prune_bounds", {"older_than_s": seconds}))
    assert row is not None
    return {"cutoff": row["cutoff"], "below_seq": int(row["below_seq"])}


def count_prunable(
    db: Database,
    older_than: str | float,
    status: str | Status | Iterable[str | Status] | None = None,
) -> int:
    """How many workflows :func:`prune` would delete now."""
    params = {**_bounds(db, older_than), "statuses": list(prune_statuses(status))}
    row = db.retrying(lambda: db.fetchone("count_prunable", params))
    return int(row["n"]) if row else 0


def prune(
    db: Database,
    older_than: str | float,
    status: str | Status | Iterable[str | Status] | None = None,
    *,
    batch: int = BATCH,
    on_batch: Callable[[PruneResult], None] | None = None,
    budget_s: float | None = None,
    conn: Any = None,
) -> PruneResult:
    """Delete the workflows that ended more than ``older_than`` ago (a duration: ``30d``, or
    seconds), in ``status`` (default: every terminal status), with all their rows.
    ``on_batch`` gets the running total after each batch; ``budget_s`` stops a pass after
    that long (``more`` then says whether rows are left); ``conn``: run the batches on this
    session (else each on a pooled one)."""
    if batch < 1:
        raise ConfigurationError(f"batch must be ≥ 1, not {batch}")
    statuses = list(prune_statuses(status))
    bounds = _bounds(db, older_than)
    params = {**bounds, "statuses": statuses, "limit": batch, "after_seq": 0}
    started = time.monotonic()
    total = PruneResult(cutoff=bounds["cutoff"])
    while True:
        row = _batch(db, conn, params)
        if row is None or not row["picked"]:
            return total
        total = PruneResult(
            total.workflows + row["workflows"],
            total.steps + row["steps"],
            total.messages + row["messages"],
            total.events + row["events"],
            total.batches + 1,
            total.cutoff,
        )
        if on_batch is not None:
            on_batch(total)
        if row["picked"] < batch:
            return total
        if budget_s is not None and time.monotonic() - started >= budget_s:
            return PruneResult(
                total.workflows,
                total.steps,
                total.messages,
                total.events,
                total.batches,
                total.cutoff,
                more=True,
            )
        params["after_seq"] = row["last_seq"]


def _batch(db: Database, conn: Any, params: dict[str, Any]) -> dict[str, Any] | None:
    if conn is not None:
        row: dict[str, Any] | None = db.execute(conn, "prune_batch", params).fetchone()
        return row
    return db.retrying(lambda: db.fetchone("prune_batch", params))


def apply_retention(
    db: Database, older_than: float, *, batch: int = AUTO_BATCH, budget_s: float = AUTO_BUDGET_S
) -> PruneResult | None:
    """One automatic pass, if no other process in the cluster runs one now (an advisory
    lock held for the pass); None when another does."""
    lock = {"lock_name": f"pgflow:{db.schema}:retention"}
    with db.connection() as conn:
        row = db.execute(conn, "retention_try_lock", lock).fetchone()
        if not row or not row["locked"]:
            return None
        try:
            # The batches run on the locking session: the lock holds exactly while they run.
            return prune(db, older_than, batch=batch, budget_s=budget_s, conn=conn)
        finally:
            db.execute(conn, "retention_unlock", lock).fetchone()
