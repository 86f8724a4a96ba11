"""One claim from one queue: the local budget, then one statement, one round trip:
``claim_workflows`` (no global limit), ``claim_limited`` (a concurrency or rate limit, under
the queue's lock) or ``claim_partitions`` (a partitioned queue)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..budget import claim_budget

if TYPE_CHECKING:
    from ..db.pool import Database
    from ..queues import Queue


def claim_from(
    db: Database,
    q: Queue,
    *,
    free: int,
    local_running: int,
    common: dict[str, Any],
    rotation: int,
) -> list[dict[str, Any]]:
    """The rows claimed (none when this process has no room for the queue). ``common``: queue
    name, app version, known names, executor id, strictness."""
    # On a partitioned queue worker_concurrency holds per key: the claim applies it.
    base = claim_budget(
        free_slots=free,
        local_running=local_running,
        worker_concurrency=None if q.partitioned else q.worker_concurrency,
        concurrency=None,
        running=0,
        rate_limit=None,
        started_in_window=0,
    )
    if base <= 0:
        return []
    limited = q.concurrency is not None or q.rate_limit is not None
    if not limited and not q.partitioned:
        return db.fetchall("claim_workflows", {**common, "limit": base})
    # Limits hold across processes: the claim takes the queue's lock (in the function, one
    # round trip) and counts the room left after it.
    params = {
        **common,
        "limit": base,
        "concurrency": q.concurrency,
        "rate_limit": q.rate_limit.limit if q.rate_limit else None,
        "per_s": q.rate_limit.per if q.rate_limit else 0.0,
        "lock_name": f"pgflow:{db.schema}:queue:{q.name}" if limited else None,
    }
    if q.partitioned:
        return db.fetchall(
            "claim_partitions",
            {**params, "rotation": rotation, "worker_concurrency": q.worker_concurrency},
        )
    return db.fetchall("claim_limited", params)


def strict_versions(q: Queue, app_default: bool) -> bool:
    """Whether ``q`` takes only rows of this version (the queue's option, else the app's)."""
    return app_default if q.strict_versions is None else q.strict_versions


def queue_declaration(q: Queue, app_strict: bool) -> dict[str, Any]:
    """The parameters of ``declare_queue``: the queue's options as the database keeps them."""
    return {
        "name": q.name,
        "concurrency": q.concurrency,
        "worker_concurrency": q.worker_concurrency,
        "rate_limit": q.rate_limit.limit if q.rate_limit else None,
        "rate_per_seconds": q.rate_limit.per if q.rate_limit else None,
        "priority_enabled": q.priority_enabled,
        "partitioned": q.partitioned,
        "strict_versions": strict_versions(q, app_strict),
    }
