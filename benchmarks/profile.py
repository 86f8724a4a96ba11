"""Profiles of the slow paths, with round trips per job:
``python -m benchmarks.profile [--database-url URL] [--only drain,steady,steps,enqueue]``.

- drain: a burst worker, py-spy on each worker process (samples of the thread holding the GIL:
  where Python's CPU goes), pgflow's round trips counted by statement name;
- steady: the same for a worker fed at a fixed rate (each job arrives on its own);
- steps, enqueue: in this process, round trips per call, the wall time split between pgflow's
  statements and the rest, cProfile, and the hot statement's server cost next to a plain
  INSERT (time and WAL).

Figures measured under a profiler are slower than the suite's: use them for shares, not speed.
Writes ``benchmarks/results/<timestamp>-profile.json``, and the raw py-spy stacks and cProfile
stats in the folder of the same name (flamegraph.pl or speedscope read the ``.txt`` stacks).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from typing import Any

from .profile_local import profile_enqueue, profile_steps
from .profile_worker import profile_drain, profile_steady
from .run import RESULTS, load_tasks
from .scratch import DEFAULT_URL, Scratch

# -- the command -----------------------------------------------------------------------------


def _print_shares(title: str, rows: list[tuple[str, float]]) -> None:
    print(f"  {title}:")
    for name, pct in rows:
        print(f"    {pct:5.1f}%  {name}")


def print_profile(name: str, data: dict[str, Any]) -> None:
    print(f"\n== {name} ==")
    for key, value in data.items():
        if isinstance(value, (int, float, str)) and not key.startswith("cprofile"):
            print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}")
    many = data.get("enqueue_many_500")
    if many:
        print(
            "  enqueue_many (500 per call): "
            + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in many.items()
                if not k.startswith("cprofile")
            )
        )
        print(
            "    cprofile_tottime:\n"
            + "\n".join("      " + line for line in many["cprofile_tottime"].splitlines()[:18])
        )
    for variant, cost in (data.get("server_cost") or {}).items():
        flat = {k: v for k, v in cost.items() if not isinstance(v, dict)}
        print(f"  server cost {variant}: " + ", ".join(f"{k}={v:.4g}" for k, v in flat.items()))
        for part, sub in cost.items():
            if isinstance(sub, dict):
                print(f"    {part}: " + ", ".join(f"{k}={v:.4g}" for k, v in sub.items()))
    for key in (
        "statements_per_job",
        "statements_10_steps",
        "statements_0_steps",
        "statements_per_enqueue",
    ):
        if key in data:
            print(f"  {key}: " + ", ".join(f"{k}={v:.2f}" for k, v in data[key].items()))
    workers = data.get("workers")
    if workers:
        print(f"  worker processes: {workers['samples']} samples of the GIL holder")
        for key in ("by_thread", "by_area", "top_self", "top_inclusive_pgflow"):
            _print_shares(key, workers[key])
    for key in ("cprofile_tottime", "cprofile_cumtime"):
        if key in data:
            print(f"  {key}:\n" + "\n".join("    " + line for line in data[key].splitlines()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.profile", description=__doc__.split("\n")[0]
    )
    p.add_argument("--database-url", default=None)
    p.add_argument("--only", default="drain,steady,steps,enqueue")
    p.add_argument("--jobs", type=int, default=20_000, help="drain: workflows")
    p.add_argument(
        "--queue",
        default="plain",
        choices=("plain", "limited", "partitioned"),
        help="drain: the queue to fill and drain",
    )
    p.add_argument("--keys", type=int, default=100, help="drain: partition keys")
    p.add_argument("--threads", type=int, default=8, help="worker threads per process")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--rate-per-s", type=float, default=500.0, help="steady: enqueues/s")
    p.add_argument("--seconds", type=float, default=10.0, help="steady: window")
    p.add_argument("--workflows", type=int, default=500, help="steps: 10-step workflows")
    p.add_argument("--enqueues", type=int, default=2_000, help="enqueue: calls")
    p.add_argument(
        "--statements", type=int, default=1_000, help="server cost: runs of each statement"
    )
    args = p.parse_args(argv)
    url = (
        args.database_url
        or os.environ.get("PGFLOW_BENCH_DATABASE_URL")
        or os.environ.get("PGFLOW_DATABASE_URL")
        or DEFAULT_URL
    )
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"{stamp}-profile"
    out.mkdir(parents=True, exist_ok=True)
    scratch = Scratch(url, name="pgflow_bench_profile")
    scratch.create()
    tasks = load_tasks(scratch)
    results: dict[str, Any] = {"args": vars(args), "app_version": tasks.app.app_version}
    runners = {
        "drain": profile_drain,
        "steady": profile_steady,
        "steps": profile_steps,
        "enqueue": profile_enqueue,
    }
    try:
        for name in args.only.split(","):
            print(f"[{datetime.now():%H:%M:%S}] profiling {name} ...", file=sys.stderr)
            results[name] = runners[name](scratch, tasks, args, out)
            print_profile(name, results[name])
            (out.with_suffix(".json")).write_text(json.dumps(results, indent=2, default=str))
    finally:
        tasks.app.shutdown(timeout=5)
        scratch.drop()
    print(f"\nprofile: {out.with_suffix('.json')} (stacks and stats in {out}/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
