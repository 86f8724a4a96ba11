"""PURE: how many rows a claimer may take, given limits, running counts and recent starts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def claim_budget(*, free_slots: int, local_running: int, worker_concurrency: int | None,
                 concurrency: int | None, running: int, rate_limit: int | None,
                 started_in_window: int) -> int:
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


def partition_room(*, concurrency: int | None, running: int, rate_limit: int | None,
                   started_in_window: int, cap: int) -> int:
    """Room in one partition key (limits apply per key); ``cap`` bounds an unlimited key."""
    room = cap
    if concurrency is not None:
        room = min(room, concurrency - running)
    if rate_limit is not None:
        room = min(room, rate_limit - started_in_window)
    return max(0, room)


def split_fairly(total: int, rooms: Mapping[str, int], order: Sequence[str]) -> dict[str, int]:
    """Share ``total`` claims across keys one at a time in ``order`` (round robin), never
    giving a key more than its room: a hot key cannot starve the others."""
    shares = {key: 0 for key in order}
    left = max(0, total)
    active = [k for k in order if rooms.get(k, 0) > 0]
    while left > 0 and active:
        still = []
        for key in active:
            if left == 0:
                break
            shares[key] += 1
            left -= 1
            if shares[key] < rooms[key]:
                still.append(key)
        else:
            active = still
            continue
        break
    return {k: v for k, v in shares.items() if v > 0}
