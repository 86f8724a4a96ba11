"""The table people read and the targets of the issue, from the raw results (pure)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .stats import summary


@dataclass
class Row:
    """One line of the table: a figure over repeats, how it compares, and its target."""

    section: str
    label: str
    unit: str
    values: list[float]
    kind: str = "plain"  # "rate": vs JL and CR; "latency": vs RTT; "plain": no ratio
    target: str = ""
    passed: bool | None = None
    note: str = ""
    stats: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        self.stats = summary(self.values)

    @property
    def median(self) -> float:
        return self.stats["median"]


@dataclass
class Refs:
    """The server's limits every figure is compared with."""

    job_life: float = math.nan  # pgbench job-life TPS
    commits: float = math.nan  # pgbench single-INSERT TPS
    rtt_us: float = math.nan  # one autocommit INSERT round trip, µs

    def ratio(self, row: Row) -> str:
        m = row.median
        if row.kind == "rate" and not math.isnan(m) and not math.isnan(self.job_life):
            return f"{m / self.job_life:.2f}× JL  {m / self.commits:.2f}× CR"
        if row.kind == "latency_ms" and not math.isnan(m) and not math.isnan(self.rtt_us):
            return f"{m * 1e3 / self.rtt_us:.1f}× RTT"
        if row.kind == "latency_us" and not math.isnan(m) and not math.isnan(self.rtt_us):
            return f"{m / self.rtt_us:.2f}× RTT"
        return ""


def _medians(runs: Sequence[dict[str, Any]], key: str) -> list[float]:
    """The values of ``key`` over runs (older result files may lack newer keys)."""
    return [float(r[key]) for r in runs if r.get(key) is not None]


def _check(value: float, ok: Callable[[float], bool], *refs: float) -> bool | None:
    """PASS/MISS, or None when the figure or a reference it needs was not measured."""
    return None if any(math.isnan(v) for v in (value, *refs)) else ok(value)


def build_rows(results: dict[str, Any]) -> tuple[list[Row], Refs]:
    """Rows in the order of the issue; targets evaluated on medians."""
    rows: list[Row] = []
    refs = Refs()
    limit = results.get("limit")
    if limit:
        jl = Row(
            "1 limit",
            "pgbench job life (INSERT+2 UPDATE, 3 commits)",
            "jobs/s",
            _medians(limit["job_life"], "tps"),
            "rate",
        )
        cr = Row(
            "1 limit",
            "pgbench single INSERT (the commit rate)",
            "tx/s",
            _medians(limit["insert"], "tps"),
            "rate",
        )
        refs.job_life, refs.commits = jl.median, cr.median
        rows += [jl, cr]
        if limit.get("insert_1"):
            rows.append(
                Row(
                    "1 limit",
                    "pgbench single INSERT, 1 client (one caller's ceiling)",
                    "tx/s",
                    _medians(limit["insert_1"], "tps"),
                    "rate",
                )
            )
    steps = results.get("steps")
    if steps:
        refs.rtt_us = Row("", "", "", _medians(steps, "insert_rtt_us")).median

    enq = results.get("enqueue")
    if enq:
        one = Row(
            "2 enqueue",
            "queue.enqueue, one call at a time",
            "jobs/s",
            _medians(enq, "one_per_s"),
            "rate",
            "≥ 2,000/s",
        )
        one.passed = _check(one.median, lambda v: v >= 2_000)
        many = Row(
            "2 enqueue",
            f"queue.enqueue_many, batches of {enq[0]['batch']}",
            "jobs/s",
            _medians(enq, "many_per_s"),
            "rate",
            "≥ 40,000/s",
        )
        many.passed = _check(many.median, lambda v: v >= 40_000)
        # One call is one INSERT round trip: what it costs next to bare ones run alongside.
        per_call = Row(
            "2 enqueue",
            "— one call ÷ one bare INSERT round trip, alternated",
            "×",
            _medians(enq, "one_over_insert"),
        )
        if per_call.values:
            per_call.note = (
                f"{statistics.median(_medians(enq, 'one_us')):.0f} µs per call, "
                f"{statistics.median(_medians(enq, 'insert_rtt_us')):.0f} µs per bare INSERT"
            )
        rows += [one, per_call, many]

    drain = results.get("drain")
    unlimited = math.nan
    if drain:
        for run in drain["sweep"]:
            rows.append(
                Row(
                    "3 drain",
                    f"sweep: -P {run['processes']} -c {run['threads']} (1 run)",
                    "jobs/s",
                    [run["jobs_per_s"]],
                    "rate",
                )
            )
        runs = drain["runs"]
        best = Row(
            "3 drain",
            f"drain {runs[0]['jobs']:,} no-op, best -P "
            f"{runs[0]['processes']} -c {drain['best_threads']}",
            "jobs/s",
            _medians(runs, "jobs_per_s"),
            "rate",
            "≥ 2× JL",
        )
        best.passed = _check(best.median, lambda v: v >= 2 * refs.job_life, refs.job_life)
        unlimited = best.median
        rows += [
            best,
            Row(
                "3 drain",
                "  claim→done only (excl. start-up)",
                "jobs/s",
                _medians(runs, "claim_to_done_jobs_per_s"),
                "rate",
            ),
            Row("3 drain", "  worker start-up (to first claim)", "s", _medians(runs, "startup_s")),
            Row(
                "3 drain",
                "  commits per job (xact_commit)",
                "commits",
                _medians(runs, "commits_per_job"),
            ),
            Row(
                "3 drain",
                "  worker CPU per job (user+sys, all processes)",
                "ms",
                _medians(runs, "worker_cpu_ms_per_job"),
            ),
            Row(
                "3 drain",
                "  PostgreSQL CPU per job (whole server, all backends)",
                "ms",
                _medians(runs, "server_cpu_ms_per_job"),
            ),
            Row(
                "3 drain",
                "  machine busy during the drain",
                "%",
                [100 * v for v in _medians(runs, "machine_busy")],
            ),
        ]

    steady = results.get("steady")
    if steady:
        at = steady["at_100"]
        p50 = Row(
            "4 steady",
            "enqueue→start p50 at 100/s",
            "ms",
            _medians(at, "p50_ms"),
            "latency_ms",
            "≤ 5 ms",
        )
        p50.passed = _check(p50.median, lambda v: v <= 5)
        p99 = Row(
            "4 steady",
            "enqueue→start p99 at 100/s",
            "ms",
            _medians(at, "p99_ms"),
            "latency_ms",
            "≤ 50 ms",
        )
        p99.passed = _check(p99.median, lambda v: v <= 50)
        rows += [p50, p99]
        top = steady.get("max_sustained")
        tried = ", ".join(f"{s['rate']:g}{'' if s['sustained'] else '✗'}" for s in steady["steps"])
        last = steady["steps"][-1] if steady["steps"] else None
        if last is not None and not last["sustained"]:
            tried += (
                f" (stopped at {last['rate']:g}/s: "
                + (
                    "backlog grew"
                    if last.get("producer_kept_up", True)
                    else f"the producer reached only {last['achieved_per_s']:.0f}/s"
                )
                + ")"
            )
        if top:
            rows += [
                Row(
                    "4 steady",
                    "highest rate sustained (1 run)",
                    "jobs/s",
                    [top["rate"]],
                    "rate",
                    note=f"stepped: {tried}",
                ),
                Row(
                    "4 steady",
                    f"  enqueue→start p50 at {top['rate']:g}/s",
                    "ms",
                    [top["p50_ms"]],
                    "latency_ms",
                ),
                Row(
                    "4 steady",
                    f"  enqueue→start p99 at {top['rate']:g}/s",
                    "ms",
                    [top["p99_ms"]],
                    "latency_ms",
                ),
            ]

    if steps:
        step = Row(
            "5 steps",
            "step checkpoint (10-step minus 0-step workflow)",
            "µs",
            _medians(steps, "step_us"),
            "latency_us",
            "≤ 1.5× RTT",
        )
        step.passed = _check(step.median, lambda v: v <= 1.5 * refs.rtt_us, refs.rtt_us)
        rows += [
            step,
            Row(
                "5 steps",
                "one INSERT round trip (autocommit, 1 conn) = RTT",
                "µs",
                _medians(steps, "insert_rtt_us"),
                "latency_us",
            ),
            Row(
                "5 steps",
                "workflow with 0 steps, plain call",
                "µs",
                _medians(steps, "workflow_0_steps_us"),
                "latency_us",
            ),
            Row(
                "5 steps",
                "workflow with 10 steps, plain call",
                "µs",
                _medians(steps, "workflow_10_steps_us"),
                "latency_us",
            ),
        ]

    flow = results.get("flow")
    if flow:
        for key, label, target in (
            ("limited", "drain, queue concurrency=64", "cost ≤ 30%"),
            ("partitioned", "drain, partitioned queue (concurrency 4 per key)", ""),
        ):
            runs = flow[key]
            keys = f", {results['plan']['partition_keys']} keys" if key == "partitioned" else ""
            best = flow.get(f"{key}_threads", flow.get("threads"))
            keys += f", -P 2 -c {best}" if best else ""
            row = Row("6 flow", f"{label}{keys}", "jobs/s", _medians(runs, "jobs_per_s"), "rate")
            costs = [100 * (1 - v / unlimited) for v in row.values]
            cost = Row("6 flow", "  cost vs unlimited drain", "%", costs, target=target)
            if target:
                cost.passed = _check(cost.median, lambda v: v <= 30, unlimited)
            rows += [
                row,
                cost,
                Row(
                    "6 flow", "  worker CPU per job", "ms", _medians(runs, "worker_cpu_ms_per_job")
                ),
                Row(
                    "6 flow",
                    "  PostgreSQL CPU per job",
                    "ms",
                    _medians(runs, "server_cpu_ms_per_job"),
                ),
                Row("6 flow", "  commits per job", "commits", _medians(runs, "commits_per_job")),
            ]

    backlog = results.get("backlog")
    if backlog:
        p99s: dict[int, float] = {}
        for entry in backlog.values():
            size = entry["rows"]
            runs = entry["runs"]
            p99_row = Row(
                "7 backlog",
                f"claim p99, {size:,} waiting",
                "ms",
                _medians(runs, "p99_ms"),
                "latency_ms",
            )
            p99s[size] = p99_row.median
            rows += [
                Row(
                    "7 backlog",
                    f"claim p50, {size:,} waiting (fetchall, autocommit)",
                    "ms",
                    _medians(runs, "p50_ms"),
                    "latency_ms",
                ),
                p99_row,
                Row(
                    "7 backlog",
                    f"  statement only p50/rolled back, {size:,}",
                    "ms",
                    _medians(runs, "statement_p50_ms"),
                    "latency_ms",
                ),
                Row(
                    "7 backlog",
                    f"  statement only p99/rolled back, {size:,}",
                    "ms",
                    _medians(runs, "statement_p99_ms"),
                    "latency_ms",
                ),
            ]
            plans = entry["explain"]
            ok = bool(plans.get("uses_claim_index"))
            rows.append(
                Row(
                    "7 backlog",
                    f"  plan: index scan on workflow_status_claim_order, {size:,}",
                    "",
                    [],
                    target="custom+generic",
                    passed=ok,
                )
            )
            seq = plans.get("seq_scan") or {}
            generic = [r.get("prepared_generic_plans") or 0 for r in runs]
            rows.append(
                Row(
                    "7 backlog",
                    f"  plan: no Seq Scan on workflow_status, {size:,}",
                    "",
                    [],
                    target="custom+generic (extra)",
                    passed=not any(seq.values()) if seq else None,
                    note=f"seq scan in: {', '.join(k for k, v in seq.items() if v) or 'none'}"
                    f"; pgflow's prepared claim ran {max(generic)} generic plan(s)",
                )
            )
        if len(p99s) >= 2:
            small, large = min(p99s), max(p99s)
            ratio = Row(
                "7 backlog",
                f"claim p99 at {large:,} ÷ at {small:,}",
                "×",
                [p99s[large] / p99s[small]],
                target="≤ 3×",
            )
            ratio.passed = _check(ratio.median, lambda v: v <= 3)
            rows.append(ratio)
    trap = results.get("plan_trap")
    if trap:
        at_1k = math.nan
        if backlog and "1000" in backlog:
            at_1k = Row("", "", "", _medians(backlog["1000"]["runs"], "p50_ms")).median
        row = Row("7 backlog", f"claim p50, prepared at 20 rows, grown to {trap['rows']:,} "
                  "without ANALYZE", "ms", [trap["claim_p50_ms"]], "latency_ms",
                  target="≤ 3× p50 at 1k (extra)",
                  note=f"generic plans on that session: {trap['generic_plans_before_growth']} "
                  f"before the growth, {trap['generic_plans_after_growth']} after")  # fmt: skip
        row.passed = _check(row.median, lambda v: v <= 3 * at_1k, at_1k)
        rows.append(row)
    noise = list(_find(results, "busy_before"))
    if noise:
        rows.append(
            Row(
                "0 noise",
                "machine busy just before timed runs (not us)",
                "%",
                [100 * v for v in noise],
                note=f"{len(noise)} runs; max {100 * max(noise):.0f}%",
            )
        )
    return rows, refs


def _find(tree: Any, key: str) -> list[float]:
    """Every value of ``key`` anywhere in nested dicts and lists."""
    found: list[float] = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == key and isinstance(v, (int, float)):
                found.append(float(v))
            else:
                found += _find(v, key)
    elif isinstance(tree, list):
        for item in tree:
            found += _find(item, key)
    return found


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    if abs(value) >= 1_000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render(rows: list[Row], refs: Refs) -> str:
    """A fixed-width table: median, spread (min–max, and as % of the median), ratio, target."""
    header = ("benchmark", "median", "min–max (spread)", "unit", "vs limit", "target", "")
    table = [header]
    for row in rows:
        s = row.stats
        if s["n"] == 0:
            spread = ""
        elif s["n"] == 1:
            spread = "(1 run)"
        else:
            spread = f"{_fmt(s['min'])}–{_fmt(s['max'])} ({100 * s['spread']:.0f}%)"
        verdict = "" if row.passed is None else ("PASS" if row.passed else "MISS")
        table.append(
            (
                f"{row.section:<9} {row.label}",
                _fmt(row.median) if s["n"] else "",
                spread,
                row.unit,
                refs.ratio(row),
                row.target,
                verdict,
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = []
    for i, r in enumerate(table):
        cells = [r[0].ljust(widths[0]), r[1].rjust(widths[1])]
        cells += [c.ljust(w) for c, w in zip(r[2:], widths[2:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("-" * len(lines[0]))
    notes = [f"  {r.label.strip()}: {r.note}" for r in rows if r.note]
    lines += [
        "",
        f"JL = pgbench job-life TPS ({_fmt(refs.job_life)}/s), CR = pgbench single-INSERT "
        f"commit rate ({_fmt(refs.commits)}/s), RTT = one INSERT round trip "
        f"({_fmt(refs.rtt_us)} µs).",
        *notes,
    ]
    return "\n".join(lines)


def targets(rows: list[Row]) -> list[dict[str, Any]]:
    return [
        {
            "benchmark": f"{r.section} {r.label.strip()}",
            "median": r.median,
            "unit": r.unit,
            "target": r.target,
            "passed": r.passed,
        }
        for r in rows
        if r.target
    ]
