"""3. Drain (and 6. flow control): a real ``pgflow worker --burst`` empties a full queue.

Throughput is jobs / (last ``completed_at`` - the server's clock just before the worker process
was started): it includes the worker's start-up, as a user waiting for a backlog sees it.
Commits per job come from ``pg_stat_database.xact_commit`` over the run (every transaction in
the scratch database: claims, completions, heartbeats, the supervisor's progress line).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from .enqueue import fill
from .plan import Plan
from .scratch import CpuSample, Scratch
from .worker import WorkerRun

RESULT = """
SELECT count(*) FILTER (WHERE status = 'SUCCESS'), count(*),
       min(started_at), max(completed_at)
FROM pgflow.workflow_status WHERE queue_name = %s"""


def drain_once(
    scratch: Scratch,
    tasks: ModuleType,
    plan: Plan,
    logs: Path,
    *,
    queue: str = "plain",
    threads: int,
    jobs: int | None = None,
    keys: int = 0,
    module: str = "pgflow.cli",
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Fill ``queue`` with ``jobs`` no-op workflows, then time a burst worker emptying it."""
    n = jobs or plan.drain_jobs
    scratch.reset()
    fill(tasks, getattr(tasks, queue), n, keys=keys)
    scratch.settle()
    commits0 = scratch.commits()
    noise = scratch.wait_quiet()
    cpu0 = CpuSample.now()
    server0 = scratch.server_cpu()
    t0 = scratch.db_now()
    worker = WorkerRun(
        scratch,
        queue=queue,
        threads=threads,
        processes=plan.processes,
        burst=True,
        log_path=logs / f"drain-{queue}-{threads}.log",
        module=module,
        env=env,
    ).start()
    try:
        worker.wait(timeout=120 + n / 50)
    finally:
        worker.stop()
    cpu = CpuSample.now().since(cpu0)
    server = scratch.server_cpu() - server0
    wall = CpuSample.now().wall - cpu0.wall
    commits = scratch.commits() - commits0
    ok, total, first_start, last_done = scratch.row(RESULT, (queue,))
    if ok != n:
        raise RuntimeError(f"drain of {queue!r}: {ok} of {total} succeeded, expected {n}")
    span = (last_done - t0).total_seconds()
    return {
        "queue": queue,
        "threads": threads,
        "processes": plan.processes,
        "jobs": n,
        "jobs_per_s": n / span,
        "seconds": span,
        "startup_s": (first_start - t0).total_seconds(),
        "claim_to_done_jobs_per_s": n / (last_done - first_start).total_seconds(),
        "process_wall_s": wall,
        "commits_per_job": commits / n,
        "worker_cpu_ms_per_job": cpu["children_cpu_s"] / n * 1e3,
        "server_cpu_ms_per_job": server / n * 1e3,
        "machine_busy": cpu["machine_busy"],
        **noise,
    }


def measure_drain(
    scratch: Scratch, tasks: ModuleType, plan: Plan, repeat: int, logs: Path
) -> dict[str, Any]:
    """A sweep over thread counts (one run each), then ``repeat`` runs at the best one."""
    sweep = [drain_once(scratch, tasks, plan, logs, threads=t) for t in plan.drain_threads]
    best = max(sweep, key=lambda r: r["jobs_per_s"])["threads"]
    runs = [drain_once(scratch, tasks, plan, logs, threads=best) for _ in range(repeat)]
    return {"sweep": sweep, "best_threads": best, "runs": runs}


def measure_flow_control(
    scratch: Scratch, tasks: ModuleType, plan: Plan, repeat: int, logs: Path, threads: int
) -> dict[str, Any]:
    """The same drain on a queue with concurrency=64, and on a partitioned queue
    (``plan.partition_keys`` keys, concurrency 4 per key). Each is run once at the unlimited
    drain's best thread count and once at half of it (a queue capped at 64 running may do
    better with fewer threads fighting for the GIL), then ``repeat`` times at the better one."""
    candidates = sorted({threads, max(4, threads // 2)})
    out: dict[str, Any] = {"threads": threads}
    for queue, keys in (("limited", 0), ("partitioned", plan.partition_keys)):
        sweep = [
            drain_once(scratch, tasks, plan, logs, queue=queue, threads=t, keys=keys)
            for t in candidates
        ]
        best = max(sweep, key=lambda r: r["jobs_per_s"])["threads"]
        out[queue] = [
            drain_once(scratch, tasks, plan, logs, queue=queue, threads=best, keys=keys)
            for _ in range(repeat)
        ]
        out[f"{queue}_sweep"] = sweep
        out[f"{queue}_threads"] = best
    return out
