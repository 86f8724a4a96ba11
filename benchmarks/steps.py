"""5. Steps: the cost of one step checkpoint, next to one INSERT round trip on one connection.

Workflows are plain calls in this process (durable, inline). The cost of a checkpoint is the
difference between a 10-step workflow and a 0-step one, divided by 10: the start and finish
of the workflow are not charged to its steps. The round trips and both kinds of workflow
alternate in rounds, so that drift in the machine's speed does not favour one of them.
"""

from __future__ import annotations

import statistics
import time
from types import ModuleType
from typing import Any

import psycopg

from .plan import Plan
from .scratch import Scratch
from .stats import percentile

RTT_TABLE = "bench_rtt"
# The three measures alternate in this many rounds.
ROUNDS = 10


class InsertRoundTrip:
    """Autocommit INSERTs of a small jsonb row, prepared, on one connection (the RTT)."""

    def __init__(self, scratch: Scratch) -> None:
        self.scratch = scratch
        self.times: list[float] = []
        self.i = 0

    def __enter__(self) -> InsertRoundTrip:
        self.scratch.admin.execute(
            f"CREATE TABLE IF NOT EXISTS {RTT_TABLE} (id bigserial PRIMARY KEY, payload jsonb)"
        )
        self.conn = psycopg.connect(self.scratch.url, autocommit=True)
        self.run(50, keep=False)  # warm: connection, prepared statement, table pages
        return self

    def run(self, n: int, keep: bool = True) -> None:
        query = f"INSERT INTO {RTT_TABLE} (payload) VALUES (%s::jsonb)"
        for _ in range(n):
            self.i += 1
            t0 = time.perf_counter()
            self.conn.execute(query, (f'{{"step": {self.i}}}',), prepare=True)
            if keep:
                self.times.append(time.perf_counter() - t0)

    def __exit__(self, *exc: object) -> None:
        self.conn.close()
        self.scratch.admin.execute(f"DROP TABLE IF EXISTS {RTT_TABLE}")

    def summary(self) -> dict[str, float]:
        """µs per INSERT: mean, p50, p99."""
        return {
            "mean_us": statistics.fmean(self.times) * 1e6,
            "p50_us": percentile(self.times, 0.5) * 1e6,
            "p99_us": percentile(self.times, 0.99) * 1e6,
        }


def _time_calls(fn: Any, n: int, first: int = 0) -> float:
    t0 = time.perf_counter()
    for i in range(first, first + n):
        fn(i)
    return time.perf_counter() - t0


def measure_steps(scratch: Scratch, tasks: ModuleType, plan: Plan) -> dict[str, Any]:
    """One run: INSERT round trips, 0-step and 10-step workflows in this process, interleaved
    in ``ROUNDS`` rounds so that a machine slowing down or speeding up mid-run (a neighbour's
    load, a checkpoint) weighs on the three alike."""
    n = plan.step_workflows
    scratch.reset_runs()
    _time_calls(tasks.noop, 20)  # warm: executor row, pool, prepared statements
    _time_calls(tasks.ten_steps, 20)
    scratch.reset_runs()
    scratch.settle()
    noise = scratch.wait_quiet()
    zero = ten = 0.0
    per_round = max(1, n // ROUNDS)
    with InsertRoundTrip(scratch) as rtt:
        for r in range(ROUNDS):
            rtt.run(max(1, plan.rtt_inserts // ROUNDS))
            zero += _time_calls(tasks.noop, per_round, r * per_round)
            ten += _time_calls(tasks.ten_steps, per_round, r * per_round)
    rt = rtt.summary()
    n = per_round * ROUNDS
    steps = tasks.STEPS_PER_WORKFLOW
    per_step = (ten - zero) / (n * steps)
    return {
        "workflows": n,
        "steps_per_workflow": steps,
        "step_us": per_step * 1e6,
        "workflow_0_steps_us": zero / n * 1e6,
        "workflow_10_steps_us": ten / n * 1e6,
        "insert_rtt_us": rt["mean_us"],
        "insert_rtt_p50_us": rt["p50_us"],
        "insert_rtt_p99_us": rt["p99_us"],
        "step_over_insert": per_step * 1e6 / rt["mean_us"],
        **noise,
    }
