"""Profiles of a real worker: py-spy on each worker process, pgflow's round trips counted by
statement name (``benchmarks.instrumented``), commits from ``pg_stat_database``."""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from . import steady
from .enqueue import fill
from .pyspy import Sampler, summarize_stacks
from .scratch import CpuSample, Scratch
from .server_cost import job_wal
from .worker import WorkerRun


def read_counts(folder: Path) -> dict[str, Any]:
    """Round trips of the worker processes (summed) and of the supervisor."""
    workers: dict[str, Any] = {
        "statements": collections.Counter(),
        "transactions": 0,
        "connections": 0,
        "round_trips": 0,
        "done": 0,
    }
    supervisor: dict[str, Any] = {}
    for path in folder.glob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("supervisor"):
            supervisor = data
            continue
        workers["statements"].update(data["statements"])
        for key in ("transactions", "connections", "round_trips", "done"):
            workers[key] += data[key]
    workers["statements"] = dict(workers["statements"].most_common())
    return {"workers": workers, "supervisor": supervisor}


def per_job(counts: dict[str, Any], jobs: int) -> dict[str, Any]:
    w = counts["workers"]
    return {
        "round_trips_per_job": w["round_trips"] / jobs,
        "statements_per_job": {k: round(v / jobs, 3) for k, v in w["statements"].items()},
        "transactions_per_job": w["transactions"] / jobs,
        "connections": w["connections"],
        "supervisor_round_trips": counts["supervisor"].get("round_trips"),
        "supervisor_connections": counts["supervisor"].get("connections"),
    }


def wal_lsn(scratch: Scratch) -> int:
    return int(scratch.one("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))


def profile_drain(
    scratch: Scratch, tasks: ModuleType, args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    n = args.jobs
    queue = args.queue
    scratch.reset()
    fill(tasks, getattr(tasks, queue), n, keys=args.keys if queue == "partitioned" else 0)
    scratch.settle()
    commits0 = scratch.commits()
    wal0 = wal_lsn(scratch)
    counts_dir = out / "drain-counts"
    cpu0 = CpuSample.now()
    t0 = scratch.db_now()
    worker = WorkerRun(
        scratch,
        queue=queue,
        threads=args.threads,
        processes=args.processes,
        burst=True,
        log_path=out / "drain.log",
        module="benchmarks.instrumented",
        env={"BENCH_COUNTS_DIR": str(counts_dir)},
    ).start()
    try:
        sampler = Sampler(worker.wait_children(), out, "drain", args.rate)
        worker.wait(timeout=300 + n / 20)
    finally:
        worker.stop()
    stacks = sampler.finish()
    cpu = CpuSample.now().since(cpu0)
    ok, last = scratch.row(
        "SELECT count(*) FILTER (WHERE status = 'SUCCESS'), max(completed_at) "
        "FROM pgflow.workflow_status"
    )
    if ok != n:
        raise RuntimeError(f"{ok} of {n} workflows succeeded")
    wal = wal_lsn(scratch) - wal0
    commits = scratch.commits() - commits0
    counts = read_counts(counts_dir)
    return {
        "queue": queue,
        "jobs": n,
        "threads": args.threads,
        "processes": args.processes,
        "jobs_per_s_under_profiler": n / (last - t0).total_seconds(),
        "commits_per_job": commits / n,
        "wal_bytes_per_job": wal / n,
        "cpu_ms_per_job_incl_profiler": cpu["children_cpu_s"] / n * 1e3,
        **per_job(counts, n),
        "workers": summarize_stacks(stacks),
        "server_cost": job_wal(scratch, tasks) if queue == "plain" else {},
    }


def profile_steady(
    scratch: Scratch, tasks: ModuleType, args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    scratch.reset()
    counts_dir = out / "steady-counts"
    worker = WorkerRun(
        scratch,
        queue="plain",
        threads=args.threads,
        processes=args.processes,
        burst=False,
        log_path=out / "steady.log",
        module="benchmarks.instrumented",
        env={"BENCH_COUNTS_DIR": str(counts_dir)},
    ).start()
    try:
        worker.wait_ready()
        commits0 = scratch.commits()
        cpu0 = CpuSample.now()
        sampler = Sampler(worker.children(), out, "steady", args.rate)
        window = steady.window(scratch, tasks, args.rate_per_s, args.seconds)
        stacks = sampler.finish()
        busy = CpuSample.now().since(cpu0)["machine_busy"]
        commits = scratch.commits() - commits0
    finally:
        worker.stop()
    jobs = window["jobs"]
    counts = read_counts(counts_dir)
    return {
        "rate": args.rate_per_s,
        "seconds": args.seconds,
        "window": window,
        "machine_busy_during_window": busy,
        "commits_per_job_incl_idle": commits / jobs,
        "note": "commits and round trips include the worker's idle time around the window",
        **per_job(counts, jobs),
        "workers": summarize_stacks(stacks),
    }
