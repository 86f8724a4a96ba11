"""2. Enqueue: ``queue.enqueue`` one call at a time from one process, and ``enqueue_many``."""

from __future__ import annotations

import time
from types import ModuleType
from typing import Any

from .plan import Plan
from .scratch import Scratch


def fill(tasks: ModuleType, queue: Any, n: int, *, batch: int = 1_000, keys: int = 0) -> None:
    """Put ``n`` no-op workflows on ``queue`` (spread over ``keys`` partition keys if given)."""
    if keys:
        per_key = [n // keys + (1 if k < n % keys else 0) for k in range(keys)]
        start = 0
        for k, count in enumerate(per_key):
            q = queue.options(partition_key=f"key-{k}")
            for b in range(start, start + count, batch):
                q.enqueue_many(tasks.noop, [(i,) for i in range(b, min(b + batch, start + count))])
            start += count
        return
    for b in range(0, n, batch):
        queue.enqueue_many(tasks.noop, [(i,) for i in range(b, min(b + batch, n))])


def measure_enqueue(scratch: Scratch, tasks: ModuleType, plan: Plan) -> dict[str, Any]:
    """One run: jobs/s of one-by-one enqueue and of batched enqueue_many, on empty tables."""
    queue = tasks.plain
    scratch.reset()
    queue.enqueue(tasks.noop, 0)  # warm: pool, prepared statements
    queue.enqueue_many(tasks.noop, [(0,)])
    scratch.reset()
    scratch.settle()
    noise = scratch.wait_quiet()
    t0 = time.perf_counter()
    for i in range(plan.enqueue_one):
        queue.enqueue(tasks.noop, i)
    one = time.perf_counter() - t0

    scratch.reset()
    scratch.settle()
    t0 = time.perf_counter()
    n, batch = plan.enqueue_many, plan.enqueue_batch
    for b in range(0, n, batch):
        queue.enqueue_many(tasks.noop, [(i,) for i in range(b, min(b + batch, n))])
    many = time.perf_counter() - t0
    return {
        "one_per_s": plan.enqueue_one / one,
        "one_us": one / plan.enqueue_one * 1e6,
        "many_per_s": n / many,
        "batch": batch,
        **noise,
    }
