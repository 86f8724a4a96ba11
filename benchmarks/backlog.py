"""7. Backlog: the claim's latency with 1,000 and with 1,000,000 rows waiting.

The backlog is copied from a row that ``enqueue_many`` wrote (every column but the id), with
``generate_series``, so it is what enqueue writes. The timed statement is pgflow's own named
query ``claim_workflows`` through ``Database.fetchall`` (autocommit, as the worker runs it);
the claimed rows are put back to ENQUEUED after each claim so the backlog keeps its size.
Alongside, the same statement inside a transaction that is rolled back (no commit, no reset:
the statement's own cost), and EXPLAIN (ANALYZE, BUFFERS) of the custom and generic plans.
"""

from __future__ import annotations

import re
import time
from types import ModuleType
from typing import Any

import psycopg
from psycopg import sql

from .plan import Plan
from .scratch import Scratch
from .stats import percentile

TABLE = sql.Identifier("pgflow", "workflow_status")
COPIED_COLUMNS = """
SELECT column_name FROM information_schema.columns
WHERE table_schema = 'pgflow' AND table_name = 'workflow_status'
  AND column_name NOT IN ('workflow_id', 'created_at', 'updated_at')
  AND is_generated = 'NEVER' AND is_identity = 'NO'
ORDER BY ordinal_position"""
PUT_BACK = sql.SQL(
    "UPDATE {} SET status = 'ENQUEUED', executor_id = NULL, attempt = 0, started_at = NULL, "
    "deadline = NULL WHERE workflow_id = ANY(%s)"
).format(TABLE)
CLAIM_INDEX = re.compile(r"Index (Only )?Scan using workflow_status_claim_order on")
SEQ_SCAN = re.compile(r"Seq Scan on workflow_status")
# Which plan the server gave pgflow's own prepared claim on this session (PG 14+ counts them).
PLAN_CHOICE = """
SELECT generic_plans, custom_plans FROM pg_prepared_statements
WHERE statement LIKE '%%SKIP LOCKED%%' AND statement LIKE '%%''ENQUEUED''%%'
  AND statement NOT LIKE '%%partition_key =%%'"""


def build_backlog(scratch: Scratch, tasks: ModuleType, rows: int) -> float:
    """Empty the tables and queue ``rows`` no-op workflows on ``plain``; returns seconds."""
    scratch.reset()
    t0 = time.perf_counter()
    (template,) = tasks.plain.enqueue_many(tasks.noop, [(0,)])
    columns = [c for (c,) in scratch.admin.execute(COPIED_COLUMNS).fetchall()]
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    scratch.admin.execute(
        sql.SQL(
            "INSERT INTO {table} (workflow_id, {names}) "
            "SELECT gen_random_uuid()::text, {names} FROM {table}, generate_series(2, %s) "
            "WHERE workflow_id = %s"
        ).format(table=TABLE, names=names),
        (rows, template.workflow_id),
    )
    scratch.settle()
    return time.perf_counter() - t0


def claim_params(tasks: ModuleType, limit: int) -> dict[str, Any]:
    """What the worker passes to ``claim_workflows`` for the plain queue."""
    app = tasks.app
    return {
        "queue_name": "plain",
        "app_version": app.app_version,
        "names": sorted(app.registry.workflows),
        "executor_id": "bench-claimer",
        "limit": limit,
        "strict": False,
    }


def register_claimer(tasks: ModuleType) -> None:
    """Claims are taken only by a live executor: give the benchmark's claimer its row."""
    app = tasks.app
    app.db.fetchone(
        "register_executor",
        {
            "executor_id": "bench-claimer",
            "hostname": "bench",
            "pid": 0,
            "app_version": app.app_version,
            "kind": "bench",
            "queues": ["plain"],
            "names": [],
        },
    )


def time_claims(scratch: Scratch, tasks: ModuleType, n: int, limit: int) -> dict[str, Any]:
    """``n`` claims through Database.fetchall, each put back; and ``n`` rolled back."""
    db = tasks.app.db
    register_claimer(tasks)
    params = claim_params(tasks, limit)
    committed: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        rows = db.fetchall("claim_workflows", params)
        committed.append(time.perf_counter() - t0)
        if len(rows) != limit:
            raise RuntimeError(f"claimed {len(rows)} rows, expected {limit}")
        scratch.admin.execute(PUT_BACK, ([r["workflow_id"] for r in rows],))
    # Which plans did the server use for those (prepared) claims? Ask the pooled sessions.
    choice: dict[str, Any] = {}
    for _ in range(4):
        with db.connection() as conn:
            row = conn.execute(PLAN_CHOICE).fetchone()
        if row and row["generic_plans"] + row["custom_plans"] > sum(choice.values()):
            choice = dict(row)
    rolled_back: list[float] = []
    with db.connection() as conn:
        for _ in range(n):
            with conn.transaction(force_rollback=True):
                t0 = time.perf_counter()
                db.execute(conn, "claim_workflows", params).fetchall()
                rolled_back.append(time.perf_counter() - t0)
    # Put-backs leave dead row versions at the head of the claim index: clear them between
    # runs so every run sees the same backlog (autovacuum may be off on the server).
    scratch.settle()
    return {
        "p50_ms": percentile(committed, 0.5) * 1e3,
        "p99_ms": percentile(committed, 0.99) * 1e3,
        "first_half_p50_ms": percentile(committed[: n // 2], 0.5) * 1e3,
        "second_half_p50_ms": percentile(committed[n // 2 :], 0.5) * 1e3,
        "statement_p50_ms": percentile(rolled_back, 0.5) * 1e3,
        "statement_p99_ms": percentile(rolled_back, 0.99) * 1e3,
        "prepared_generic_plans": choice.get("generic_plans"),
        "prepared_custom_plans": choice.get("custom_plans"),
    }


def _as_prepared(text: str) -> tuple[str, list[str]]:
    """``%(name)s`` (or binary ``%(name)b``) placeholders as ``$n`` (in order of first use) for a
    server PREPARE."""
    order: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in order:
            order.append(name)
        return f"${order.index(name) + 1}"

    return re.sub(r"%\((\w+)\)[sb]", number, text).replace("%%", "%"), order


def explain(tasks: ModuleType, limit: int) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the claim, rolled back: the plan with these values
    (custom) and the plan a prepared statement may settle on (generic)."""
    db = tasks.app.db
    register_claimer(tasks)
    params = claim_params(tasks, limit)
    text = db.queries["claim_workflows"]
    out: dict[str, Any] = {}
    prepared, order = _as_prepared(text)
    args = sql.SQL(", ").join(sql.Literal(params[name]) for name in order)
    # A connection of its own: the pool's connections hold pgflow's prepared statements.
    with db.connect() as conn:
        with conn.transaction(force_rollback=True):
            rows = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS) " + text,
                params,
            ).fetchall()
            out["custom"] = "\n".join(next(iter(r.values())) for r in rows)
        with conn.transaction(force_rollback=True):
            conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            conn.execute(sql.SQL("PREPARE bench_claim AS {}").format(sql.SQL(prepared)))
            rows = conn.execute(
                sql.SQL("EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_claim ({})").format(args)
            ).fetchall()
            out["generic"] = "\n".join(next(iter(r.values())) for r in rows)
    out["uses_claim_index"] = all(CLAIM_INDEX.search(out[k]) for k in ("custom", "generic"))
    out["seq_scan"] = {k: bool(SEQ_SCAN.search(out[k])) for k in ("custom", "generic")}
    return out


def plan_trap(scratch: Scratch, tasks: ModuleType, grow_to: int, limit: int) -> dict[str, Any]:
    """The claim prepared on a small queue, then the queue grown to ``grow_to`` rows with no
    ANALYZE in between (autovacuum off, or not yet run): does the session keep a plan made for
    20 rows? Times 20 claims on that same session after the growth."""
    db = tasks.app.db
    register_claimer(tasks)
    params = claim_params(tasks, limit)
    build_backlog(scratch, tasks, 20)
    with db.connect() as conn:  # one session of its own, prepared like pgflow's
        for _ in range(12):
            rows = db.execute(conn, "claim_workflows", params).fetchall()
            scratch.admin.execute(PUT_BACK, ([r["workflow_id"] for r in rows],))
        before = conn.execute(PLAN_CHOICE).fetchone() or {}
        template = scratch.one("SELECT workflow_id FROM pgflow.workflow_status LIMIT 1")
        columns = [c for (c,) in scratch.admin.execute(COPIED_COLUMNS).fetchall()]
        names = sql.SQL(", ").join(map(sql.Identifier, columns))
        scratch.admin.execute(
            sql.SQL(
                "INSERT INTO {table} (workflow_id, {names}) "
                "SELECT gen_random_uuid()::text, {names} FROM {table}, generate_series(21, %s) "
                "WHERE workflow_id = %s"
            ).format(table=TABLE, names=names),
            (grow_to, template),
        )
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            rows = db.execute(conn, "claim_workflows", params).fetchall()
            times.append(time.perf_counter() - t0)
            scratch.admin.execute(PUT_BACK, ([r["workflow_id"] for r in rows],))
        after = conn.execute(PLAN_CHOICE).fetchone() or {}
    return {
        "rows": grow_to,
        "claim_p50_ms": percentile(times, 0.5) * 1e3,
        "claim_max_ms": max(times) * 1e3,
        "generic_plans_before_growth": before.get("generic_plans"),
        "generic_plans_after_growth": after.get("generic_plans"),
    }


def measure_backlog(scratch: Scratch, tasks: ModuleType, plan: Plan, repeat: int) -> dict[str, Any]:
    """Per backlog size: the time to build it, ``repeat`` timed runs, and the plans."""
    out: dict[str, Any] = {}
    for size in plan.backlogs:
        built = build_backlog(scratch, tasks, size)
        time_claims(scratch, tasks, 20, plan.claim_limit)  # warm-up
        noise = scratch.wait_quiet()
        runs = [time_claims(scratch, tasks, plan.claims, plan.claim_limit) for _ in range(repeat)]
        for run in runs:
            run.update(noise)
        try:
            plans = explain(tasks, plan.claim_limit)
        except psycopg.Error as exc:
            plans = {"error": str(exc), "uses_claim_index": False}
        out[str(size)] = {"rows": size, "build_s": built, "runs": runs, "explain": plans}
    return out


def measure_plan_trap(scratch: Scratch, tasks: ModuleType, plan: Plan) -> dict[str, Any]:
    grow_to = min(max(plan.backlogs), 200_000)
    return plan_trap(scratch, tasks, grow_to, plan.claim_limit)
