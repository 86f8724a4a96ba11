"""PURE: how many rows a claimer may take, given limits, running counts and recent starts.

The worker applies it to its own threads and worker_concurrency; the claim statements
(sql/queries/queues.sql: claim_limited, claim_partitions) compute the global part the same
way inside the database, and tests/test_claims.py checks them against this function.
"""

from __future__ import annotations


def claim_budget(
    *,
    free_slots: int,
    local_running: int,
    worker_concurrency: int | None,
    concurrency: int | None,
    running: int,
    rate_limit: int | None,
    started_in_window: int,
) -> int:
    """Rows to claim now: the tightest of free threads, per-worker room, global room and rate
    room; never negative."""
    room = free_slots
    if worker_concurrency is not None:
        room = min(room, worker_concurrency - local_running)
    if concurrency is not None:
        room = min(room, concurrency - running)
    if rate_limit is not None:
        room = min(room, rate_limit - started_in_window)
    return max(0, room)
