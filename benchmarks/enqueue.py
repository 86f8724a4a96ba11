"""2. Enqueue: ``queue.enqueue`` one call at a time from one process, and ``enqueue_many``.

One call at a time is one INSERT round trip each, so the calls alternate in rounds with bare
INSERT round trips on one connection (as in the steps phase): their ratio says what pgflow adds,
whatever the machine's speed at that moment.
"""

from __future__ import annotations

import time
from types import ModuleType
from typing import Any

from .plan import Plan
from .scratch import Scratch
from .steps import ROUNDS, InsertRoundTrip


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
    one = 0.0
    per_round = max(1, plan.enqueue_one // ROUNDS)
    with InsertRoundTrip(scratch) as rtt:
        for r in range(ROUNDS):
            rtt.run(max(1, plan.rtt_inserts // ROUNDS))
            t0 = time.perf_counter()
            for i in range(r * per_round, (r + 1) * per_round):
                queue.enqueue(tasks.noop, i)
            one += time.perf_counter() - t0
    calls = per_round * ROUNDS
    rtt_us = rtt.summary()["mean_us"]

    scratch.reset()
    scratch.settle()
    t0 = time.perf_counter()
    n, batch = plan.enqueue_many, plan.enqueue_batch
    for b in range(0, n, batch):
        queue.enqueue_many(tasks.noop, [(i,) for i in range(b, min(b + batch, n))])
    many = time.perf_counter() - t0
    return {
        "one_per_s": calls / one,
        "one_us": one / calls * 1e6,
        "insert_rtt_us": rtt_us,
        "one_over_insert": one / calls * 1e6 / rtt_us,
        "many_per_s": n / many,
        "batch": batch,
        **noise,
    }
