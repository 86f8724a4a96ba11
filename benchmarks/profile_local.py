"""Profiles of the in-process paths: steps (plain workflow calls) and one-by-one enqueue.

For each: round trips per call, the wall time split between pgflow's statements, pool checkouts
and everything else (Python), cProfile's top functions, and the server-side cost of the hot
statement next to a plain INSERT (``server_cost``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from psycopg_pool import ConnectionPool

from pgflow.db.pool import Database

from .instrumented import counting
from .scratch import Scratch
from .server_cost import batch_cost, enqueue_cost, step_cost


class _Timed:
    """Wall time spent inside the named statements and inside pool checkouts."""

    def __init__(self) -> None:
        self.in_execute = 0.0
        self.in_pool = 0.0

    def install(self) -> tuple[Any, Any, Any]:
        saved = (Database.execute, ConnectionPool.getconn, ConnectionPool.putconn)
        execute, getconn, putconn = saved

        def timed_execute(db: Database, conn: Any, name: str, params: Any = None) -> Any:
            t0 = time.perf_counter()
            try:
                return execute(db, conn, name, params)
            finally:
                self.in_execute += time.perf_counter() - t0

        def timed_getconn(pool: ConnectionPool, *a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return getconn(pool, *a, **k)
            finally:
                self.in_pool += time.perf_counter() - t0

        def timed_putconn(pool: ConnectionPool, *a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return putconn(pool, *a, **k)
            finally:
                self.in_pool += time.perf_counter() - t0

        Database.execute = timed_execute  # type: ignore[method-assign,assignment]
        ConnectionPool.getconn = timed_getconn  # type: ignore[method-assign,assignment]
        ConnectionPool.putconn = timed_putconn  # type: ignore[method-assign,assignment]
        return saved

    @staticmethod
    def uninstall(saved: tuple[Any, Any, Any]) -> None:
        Database.execute, ConnectionPool.getconn, ConnectionPool.putconn = saved  # type: ignore[method-assign]


def _top(profiler: cProfile.Profile, key: str, n: int) -> str:
    buf = io.StringIO()
    pstats.Stats(profiler, stream=buf).sort_stats(key).print_stats(n)
    text = buf.getvalue()
    return text[text.find("   ncalls") :] if "   ncalls" in text else text


def _profile_calls(
    fn: Callable[[int], Any], n: int, out: Path, name: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Round trips of ``n`` calls, their wall-time split, and a cProfile of ``n`` more."""
    with counting() as counter:
        for i in range(n):
            fn(i)
    timed = _Timed()
    saved = timed.install()
    try:
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        wall = time.perf_counter() - t0
    finally:
        _Timed.uninstall(saved)
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(n):
        fn(i)
    profiler.disable()
    profiler.dump_stats(out / f"{name}.prof")
    split = {
        "wall_us_per_call": wall / n * 1e6,
        "share_in_statements": timed.in_execute / wall,
        "share_in_pool_checkout": timed.in_pool / wall,
        "share_elsewhere": 1 - (timed.in_execute + timed.in_pool) / wall,
        "cprofile_tottime": _top(profiler, "tottime", 25),
        "cprofile_cumtime": _top(profiler, "cumulative", 30),
    }
    return counter.as_dict(), split


def _per_call(counts: dict[str, Any], n: int) -> dict[str, float]:
    return {k: v / n for k, v in counts["statements"].items()}


def profile_steps(
    scratch: Scratch, tasks: ModuleType, args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    """10-step workflows as plain calls: one round trip per step? where does the time go?"""
    n: int = args.workflows
    steps_per: int = tasks.STEPS_PER_WORKFLOW
    scratch.reset_runs()
    for i in range(20):
        tasks.noop(i)
        tasks.ten_steps(i)
    scratch.reset_runs()
    scratch.settle()
    with counting() as zero:
        for i in range(n):
            tasks.noop(i)
    ten, split = _profile_calls(tasks.ten_steps, n, out, "steps")
    zero_rt = zero.as_dict()["round_trips"] / n
    return {
        "workflows": n,
        "round_trips_per_workflow_0_steps": zero_rt,
        "round_trips_per_workflow_10_steps": ten["round_trips"] / n,
        "round_trips_per_step": (ten["round_trips"] / n - zero_rt) / steps_per,
        "statements_10_steps": _per_call(ten, n),
        "statements_0_steps": _per_call(zero.as_dict(), n),
        **split,
        "server_cost": step_cost(scratch, tasks, args.statements),
    }


def profile_enqueue(
    scratch: Scratch, tasks: ModuleType, args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    """``queue.enqueue`` one call at a time: its round trips, its time, its statement."""
    n: int = args.enqueues
    scratch.reset_runs()
    for i in range(50):
        tasks.plain.enqueue(tasks.noop, i)
    scratch.reset_runs()
    scratch.settle()
    counts, split = _profile_calls(lambda i: tasks.plain.enqueue(tasks.noop, i), n, out, "enqueue")
    batch = [(i,) for i in range(500)]
    many_counts, many_split = _profile_calls(
        lambda i: tasks.plain.enqueue_many(tasks.noop, batch), max(4, n // 100), out, "enqueue_many"
    )
    return {
        "enqueues": n,
        "round_trips_per_enqueue": counts["round_trips"] / n,
        "statements_per_enqueue": _per_call(counts, n),
        **split,
        "server_cost": enqueue_cost(scratch, tasks, args.statements),
        "enqueue_many_500": {
            "round_trips_per_batch": many_counts["round_trips"] / max(4, n // 100),
            **many_split,
            "server_cost": batch_cost(scratch, tasks, 500),
        },
    }
