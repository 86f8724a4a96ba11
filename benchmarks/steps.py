"""5. Steps: the cost of one step checkpoint, next to one INSERT round trip on one connection.

Workflows are plain calls in this process (durable, inline). The cost of a checkpoint is the
difference between a 10-step workflow and a 0-step one, divided by 10: the start and finish
of the workflow are not charged to its steps.
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


def insert_round_trip(scratch: Scratch, n: int) -> dict[str, float]:
    """Autocommit INSERT of a small jsonb row, prepared, on one connection: µs per INSERT."""
    scratch.admin.execute(
        f"CREATE TABLE IF NOT EXISTS {RTT_TABLE} (id bigserial PRIMARY KEY, payload jsonb)"
    )
    times: list[float] = []
    try:
        with psycopg.connect(scratch.url, autocommit=True) as conn:
            query = f"INSERT INTO {RTT_TABLE} (payload) VALUES (%s::jsonb)"
            for i in range(n + 50):
                t0 = time.perf_counter()
                conn.execute(query, (f'{{"step": {i}}}',), prepare=True)
                if i >= 50:
                    times.append(time.perf_counter() - t0)
    finally:
        scratch.admin.execute(f"DROP TABLE IF EXISTS {RTT_TABLE}")
    return {
        "mean_us": statistics.fmean(times) * 1e6,
        "p50_us": percentile(times, 0.5) * 1e6,
        "p99_us": percentile(times, 0.99) * 1e6,
    }


def _time_calls(fn: Any, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return time.perf_counter() - t0


def measure_steps(scratch: Scratch, tasks: ModuleType, plan: Plan) -> dict[str, Any]:
    """One run: the INSERT round trip, then 0-step and 10-step workflows in this process."""
    n = plan.step_workflows
    scratch.reset_runs()
    _time_calls(tasks.noop, 20)  # warm: executor row, pool, prepared statements
    _time_calls(tasks.ten_steps, 20)
    scratch.reset_runs()
    scratch.settle()
    noise = scratch.wait_quiet()
    rtt = insert_round_trip(scratch, plan.rtt_inserts)
    zero = _time_calls(tasks.noop, n)
    ten = _time_calls(tasks.ten_steps, n)
    steps = tasks.STEPS_PER_WORKFLOW
    per_step = (ten - zero) / (n * steps)
    return {
        "workflows": n,
        "steps_per_workflow": steps,
        "step_us": per_step * 1e6,
        "workflow_0_steps_us": zero / n * 1e6,
        "workflow_10_steps_us": ten / n * 1e6,
        "insert_rtt_us": rtt["mean_us"],
        "insert_rtt_p50_us": rtt["p50_us"],
        "insert_rtt_p99_us": rtt["p99_us"],
        "step_over_insert": per_step * 1e6 / rtt["mean_us"],
        **noise,
    }
