"""The benchmark suite: ``python -m benchmarks.run [--database-url URL] [--quick] [--repeat N]``.

Creates a scratch database on the server of ``--database-url`` (default: $PGFLOW_BENCH_DATABASE_URL,
then $PGFLOW_DATABASE_URL, then postgresql://postgres@127.0.0.1:5432/postgres), runs every
benchmark in it, prints a table and writes ``benchmarks/results/<timestamp>.json``; the scratch
database is dropped at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from . import backlog, drain, enqueue, limit, report, steady, steps
from .plan import Plan
from .scratch import DEFAULT_URL, Scratch, redact
from .worker import REPO_ROOT

RESULTS = Path(__file__).resolve().parent / "results"
PHASES = ("limit", "enqueue", "drain", "steady", "steps", "flow", "backlog")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="pgflow's throughput and latency against the server's own limit.",
    )
    p.add_argument(
        "--database-url",
        default=None,
        help="a postgresql:// URL of the server (any database; a scratch one is "
        "created next to it) [env PGFLOW_BENCH_DATABASE_URL, PGFLOW_DATABASE_URL]",
    )
    p.add_argument(
        "--quick", action="store_true", help="small counts: the whole suite in a minute or two"
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per figure (median and spread) [default: 3, quick: 1]",
    )
    p.add_argument("--only", default=None, help=f"comma-separated phases of {','.join(PHASES)}")
    p.add_argument("--skip", default="", help="comma-separated phases to leave out")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="worker threads for steady/flow when the drain sweep is skipped "
        "[default: the best of the sweep, else 8]",
    )
    p.add_argument("--pgbench", default=None, help="path of pgbench [default: on PATH]")
    p.add_argument("--output", type=Path, default=RESULTS, help="folder for the JSON results")
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="JSON",
        help="print the table of an earlier results file and exit (runs nothing)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="seconds to wait before each timed run for the machine to be idle "
        "(others' load skews figures) [default: 15, quick: 3; 0: never wait]",
    )
    p.add_argument(
        "--quiet-below",
        type=float,
        default=0.25,
        help="busy share of all cores that counts as idle [default: 0.25]",
    )
    return p.parse_args(argv)


def environment(scratch: Scratch, url: str) -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                check=False,
                timeout=10,
            )
            return done.stdout.strip()
        except OSError:
            return ""

    import pgflow

    return {
        "server": redact(url),
        "scratch_database": scratch.name,
        "server_settings": scratch.server_info(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "pgflow": getattr(pgflow, "__version__", "?"),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--", "pgflow", "sql")),
    }


def load_tasks(scratch: Scratch) -> ModuleType:
    """Import the task module with pgflow pointed at the scratch database; migrate it."""
    os.environ["PGFLOW_DATABASE_URL"] = scratch.url
    os.environ.setdefault("PGFLOW_LOG_LEVEL", "warning")
    # The steady-state producer enqueues from many threads at once (workers get the default).
    os.environ["PGFLOW_POOL_SIZE"] = "48"
    try:
        from pgflow.logs import configure_logging

        configure_logging("console", "warning")
    except Exception:
        pass
    tasks = importlib.import_module("benchmarks.tasks")
    tasks.app.settings = tasks.app.settings.replace(database_url=scratch.url)
    tasks.app.db  # noqa: B018 - connects and migrates now, not inside a timed section
    return tasks


class Suite:
    """The phases, in order, each writing its raw results as soon as it ends."""

    def __init__(self, args: argparse.Namespace, scratch: Scratch, out: Path) -> None:
        self.args = args
        self.scratch = scratch
        self.plan = Plan.quick() if args.quick else Plan.full()
        self.repeat = args.repeat or (1 if args.quick else 3)
        self.out = out
        self.logs = out.with_suffix("")  # worker logs: results/<timestamp>/
        self.results: dict[str, Any] = {
            "started_at": datetime.now(timezone.utc).isoformat(),
            "mode": "quick" if args.quick else "full",
            "repeat": self.repeat,
            "plan": dataclasses.asdict(self.plan),
        }
        self.tasks: ModuleType | None = None
        self.best_threads: int = args.threads or 8

    @property
    def t(self) -> ModuleType:
        """The task module (loaded at the start of :meth:`run`)."""
        if self.tasks is None:
            raise RuntimeError("the task module is not loaded yet")
        return self.tasks

    def save(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.results, indent=2, default=str), encoding="utf-8")

    def run(self, phases: list[str]) -> None:
        self.results["environment"] = environment(self.scratch, self.scratch.server_url)
        self.tasks = load_tasks(self.scratch)
        self.results["app_version"] = self.tasks.app.app_version
        steps_: dict[str, Callable[[], Any]] = {
            "limit": self.limit,
            "enqueue": self.enqueue,
            "drain": self.drain,
            "steady": self.steady,
            "steps": self.steps,
            "flow": self.flow,
            "backlog": self.backlog,
        }
        timings = self.results.setdefault("phase_seconds", {})
        for name in phases:
            print(f"[{datetime.now():%H:%M:%S}] {name} ...", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            self.results[name] = steps_[name]()
            timings[name] = round(time.monotonic() - t0, 1)
            self.save()
        self.results["finished_at"] = datetime.now(timezone.utc).isoformat()

    def limit(self) -> Any:
        pgbench = limit.find_pgbench(self.args.pgbench)
        return limit.measure_limits(self.scratch, self.plan, self.repeat, pgbench)

    def enqueue(self) -> Any:
        return [
            enqueue.measure_enqueue(self.scratch, self.t, self.plan) for _ in range(self.repeat)
        ]

    def drain(self) -> Any:
        out = drain.measure_drain(self.scratch, self.t, self.plan, self.repeat, self.logs)
        if self.args.threads is None:
            self.best_threads = out["best_threads"]
        return out

    def steady(self) -> Any:
        return steady.measure_steady(
            self.scratch,
            self.t,
            self.plan,
            self.repeat,
            self.logs,
            self.best_threads,
        )

    def steps(self) -> Any:
        return [steps.measure_steps(self.scratch, self.t, self.plan) for _ in range(self.repeat)]

    def flow(self) -> Any:
        return drain.measure_flow_control(
            self.scratch,
            self.t,
            self.plan,
            self.repeat,
            self.logs,
            self.best_threads,
        )

    def backlog(self) -> Any:
        out = backlog.measure_backlog(self.scratch, self.t, self.plan, self.repeat)
        self.results["plan_trap"] = backlog.measure_plan_trap(self.scratch, self.t, self.plan)
        return out


def print_report(results: dict[str, Any]) -> None:
    rows, refs = report.build_rows(results)
    results["summary"] = [
        {
            "benchmark": f"{r.section} {r.label.strip()}",
            "unit": r.unit,
            **r.stats,
            "vs_limit": refs.ratio(r),
            "target": r.target,
            "passed": r.passed,
        }
        for r in rows
    ]
    results["targets"] = report.targets(rows)
    print()
    print(report.render(rows, refs))
    for entry in (results.get("backlog") or {}).values():
        for kind in ("custom", "generic"):
            if kind in entry["explain"]:
                print(
                    f"\nEXPLAIN (ANALYZE, BUFFERS) claim_workflows, {entry['rows']:,} waiting, "
                    f"{kind} plan:\n{entry['explain'][kind]}"
                )
    missed = [t for t in results["targets"] if t["passed"] is False]
    print(f"\ntargets: {len(results['targets']) - len(missed)} PASS, {len(missed)} MISS")


def _stop_on_sigterm() -> None:
    """SIGTERM (and SIGINT, even where a background shell ignores it) end the run through the
    ``finally`` blocks: workers stopped, scratch database dropped, partial results written."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        results = json.loads(args.report.read_text(encoding="utf-8"))
        print_report(results)
        args.report.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
        return 0
    _stop_on_sigterm()
    url = (
        args.database_url
        or os.environ.get("PGFLOW_BENCH_DATABASE_URL")
        or os.environ.get("PGFLOW_DATABASE_URL")
        or DEFAULT_URL
    )
    phases = [p for p in (args.only.split(",") if args.only else PHASES) if p]
    unknown = [p for p in phases + args.skip.split(",") if p and p not in PHASES]
    if unknown:
        raise SystemExit(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}")
    phases = [p for p in phases if p not in args.skip.split(",")]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.output / f"{stamp}.json"
    scratch = Scratch(url)
    scratch.quiet_wait = (
        args.quiet_wait if args.quiet_wait is not None else (3.0 if args.quick else 15.0)
    )
    scratch.quiet_below = args.quiet_below
    scratch.create()
    suite = Suite(args, scratch, out)
    try:
        suite.run(phases)
    finally:
        if suite.tasks is not None:
            suite.tasks.app.shutdown(timeout=5)
        if args.keep:
            scratch.close()
        else:
            scratch.drop()
        if "summary" not in suite.results:
            try:
                print_report(suite.results)
            except Exception as exc:
                print(f"(no report: {exc!r})", file=sys.stderr)
            suite.save()
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
