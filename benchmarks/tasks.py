"""The benchmark's task module: one App, no-op workflows and the three queues the suite drains.

Workers load it with ``pgflow worker -A benchmarks.tasks``; the suite imports it after pointing
``PGFLOW_DATABASE_URL`` at its scratch database, so both sides agree on names and app version.
"""

from __future__ import annotations

import pgflow

app = pgflow.App("bench")

plain = app.queue("plain")
limited = app.queue("limited", concurrency=64)
# Limits of a partitioned queue hold per key: at most 4 running per partition key.
partitioned = app.queue("partitioned", concurrency=4, partitioned=True)

STEPS_PER_WORKFLOW = 10


@app.step()
def noop_step(i: int) -> int:
    """Does nothing: what is left is the cost of the checkpoint."""
    return i


@app.workflow()
def noop(i: int) -> int:
    """A workflow with no steps: what is left is the cost of queueing, claiming, finishing."""
    return i


@app.workflow()
def ten_steps(i: int) -> int:
    """Ten no-op steps, each checkpointed."""
    for _ in range(STEPS_PER_WORKFLOW):
        noop_step(i)
    return i
