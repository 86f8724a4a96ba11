"""4. Steady state: a producer enqueues at a fixed rate while a worker runs (not --burst).

Latency is ``started_at - created_at`` of each workflow, both on the server's clock: from the
enqueue's INSERT to the claim that started it. The rate is stepped up until the backlog grows.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from .plan import Plan
from .scratch import Scratch
from .stats import slope
from .worker import WorkerRun

# Enqueues/s asked of one producer thread: one enqueue takes 1-3 ms, and the producer must
# not be what limits the rate (it is reported when it is).
PER_PRODUCER = 100
MAX_PRODUCERS = 40  # the suite's pool has 48 connections
SAMPLE_EVERY = 0.25

LATENCY = """
SELECT count(*),
       count(*) FILTER (WHERE started_at IS NULL),
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (
           ORDER BY extract(epoch FROM started_at - created_at))
FROM pgflow.workflow_status
WHERE queue_name = 'plain' AND created_at >= %s AND created_at <= %s"""

BACKLOG = "SELECT count(*) FROM pgflow.workflow_status WHERE status = 'ENQUEUED'"
IN_FLIGHT = "SELECT count(*) FROM pgflow.workflow_status WHERE status IN ('ENQUEUED', 'PENDING')"


def _produce(tasks: ModuleType, rate: float, seconds: float) -> tuple[int, float]:
    """Open loop: job i is due at t0 + i/rate, whatever happened to the ones before it.
    Returns how many were enqueued and over how long."""
    total = int(rate * seconds)
    producers = min(MAX_PRODUCERS, max(1, math.ceil(rate / PER_PRODUCER)))
    t0 = time.monotonic() + 0.05
    sent = [0] * producers
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            for i in range(k, total, producers):
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                tasks.plain.enqueue(tasks.noop, i)
                sent[k] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sum(sent), time.monotonic() - t0


def _wait_idle(scratch: Scratch, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if scratch.one(IN_FLIGHT) == 0:
            return True
        time.sleep(0.1)
    return False


def window(scratch: Scratch, tasks: ModuleType, rate: float, seconds: float) -> dict[str, Any]:
    """Enqueue at ``rate`` for ``seconds``; the latency of those jobs and the backlog's trend."""
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    sampler_conn = Scratch(scratch.server_url, scratch.name)

    def sample() -> None:
        start = time.monotonic()
        while not stop.wait(SAMPLE_EVERY):
            samples.append((time.monotonic() - start, float(sampler_conn.one(BACKLOG))))

    noise = scratch.wait_quiet()
    t0 = scratch.db_now()
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        sent, elapsed = _produce(tasks, rate, seconds)
    finally:
        stop.set()
        sampler.join()
        sampler_conn.close()
    t1 = scratch.db_now()
    final_backlog = scratch.one(BACKLOG)
    drained = _wait_idle(scratch, timeout=60.0)
    n, waiting, (p50, p99) = scratch.row(LATENCY, (t0, t1))
    growth = slope(samples)
    achieved = sent / elapsed
    producer_kept_up = achieved >= 0.95 * rate
    worker_kept_up = drained and growth <= 0.02 * rate and final_backlog <= max(50, 0.25 * rate)
    scratch.reset_runs()
    return {
        "rate": rate,
        "seconds": seconds,
        "achieved_per_s": achieved,
        "jobs": n,
        "never_started": waiting,
        "p50_ms": p50 * 1e3 if p50 is not None else math.nan,
        "p99_ms": p99 * 1e3 if p99 is not None else math.nan,
        "backlog_growth_per_s": growth,
        "backlog_max": max((s for _, s in samples), default=0.0),
        "backlog_final": final_backlog,
        "sustained": producer_kept_up and worker_kept_up,
        "producer_kept_up": producer_kept_up,
        "worker_kept_up": worker_kept_up,
        **noise,
    }


def measure_steady(
    scratch: Scratch, tasks: ModuleType, plan: Plan, repeat: int, logs: Path, threads: int
) -> dict[str, Any]:
    """``repeat`` windows at 100/s, then one window per rate of ``plan.rates`` until one is not
    sustained (``achieved`` below 95% of the rate, or the backlog grows)."""
    scratch.reset()
    worker = WorkerRun(
        scratch,
        queue="plain",
        threads=threads,
        processes=plan.processes,
        burst=False,
        log_path=logs / "steady.log",
    ).start()
    try:
        worker.wait_ready()
        window(scratch, tasks, 100, 1.0)  # warm-up, not reported
        at_100 = [window(scratch, tasks, 100, plan.steady_seconds) for _ in range(repeat)]
        steps = []
        for rate in plan.rates:
            scratch.checkpoint()
            step = window(scratch, tasks, rate, plan.step_seconds)
            steps.append(step)
            if not step["sustained"]:
                break
    finally:
        worker.stop()
    sustained = [s for s in steps if s["sustained"]]
    return {
        "threads": threads,
        "processes": plan.processes,
        "at_100": at_100,
        "steps": steps,
        "max_sustained": sustained[-1] if sustained else None,
    }
