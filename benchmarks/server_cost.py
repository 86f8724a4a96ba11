"""What pgflow's hot statements cost, next to plain statements doing the same write.

Each variant runs autocommit on one connection (so its commit and round trip count), the
variants interleaved so that noise hits them alike; WAL comes from EXPLAIN (ANALYZE, WAL) of the
statement itself, so no other session's WAL is in it. The parameters are the ones pgflow
really passed (captured during a real call), never rebuilt by hand.
"""

from __future__ import annotations

import functools
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from psycopg import sql

from pgflow.db.pool import Database

from .scratch import Scratch


@contextmanager
def _capturing(name: str) -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    execute = Database.execute

    @functools.wraps(execute)
    def spy(self: Database, conn: Any, query: str, params: Any = None) -> Any:
        if query == name:
            seen.append(dict(params or {}))
        return execute(self, conn, query, params)

    Database.execute = spy  # type: ignore[method-assign,assignment]
    try:
        yield seen
    finally:
        Database.execute = execute  # type: ignore[method-assign]


def capture(name: str, fn: Callable[[], Any]) -> dict[str, Any]:
    """The parameters pgflow passed to its statement ``name`` (first call) while ``fn`` ran."""
    with _capturing(name) as seen:
        fn()
    if not seen:
        raise RuntimeError(f"pgflow never ran {name!r}")
    return seen[0]


def _wal_of(conn: Any, query: str, params: dict[str, Any]) -> dict[str, float]:
    plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) " + query, params)
    row = plan.fetchone()
    doc = next(iter(row.values())) if isinstance(row, dict) else row[0]
    top = doc[0]["Plan"]
    return {
        "wal_records": top.get("WAL Records", 0),
        "wal_fpi": top.get("WAL FPI", 0),
        "wal_bytes": top.get("WAL Bytes", 0),
        "execution_ms": doc[0]["Execution Time"],
    }


def compare(
    db: Database,
    variants: dict[str, str],
    params_for: Callable[[int], dict[str, Any]],
    n: int,
    wal_runs: int = 8,
) -> dict[str, dict[str, float]]:
    """Per variant: median and mean µs over ``n`` interleaved autocommit executions, then the
    median WAL of runs 2..``wal_runs`` (the first may write a full-page image)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    wal: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    i = 0
    with db.connect() as conn:
        for round_ in range(n + 20):
            for name, query in variants.items():
                i += 1
                params = params_for(i) if "%(" in query else None
                t0 = time.perf_counter()
                conn.execute(query, params, prepare=True)
                if round_ >= 20:
                    times[name].append(time.perf_counter() - t0)
        for _ in range(wal_runs):
            for name, query in variants.items():
                i += 1
                if "%(" in query:
                    wal[name].append(_wal_of(conn, query, params_for(i)))
    out: dict[str, dict[str, float]] = {}
    for name in variants:
        out[name] = {
            "p50_us": statistics.median(times[name]) * 1e6,
            "mean_us": statistics.fmean(times[name]) * 1e6,
        }
        later = wal[name][1:]
        if later:
            out[name].update({k: statistics.median(r[k] for r in later) for k in later[0]})
    return out


def _table(name: str) -> str:
    """A pgflow table as pgflow's rendered statements spell it (``"pgflow".name``)."""
    return sql.Identifier("pgflow").as_string(None) + "." + name


def _replace_once(text: str, old: str, new: str) -> str | None:
    return text.replace(old, new) if text.count(old) == 1 else None


def enqueue_cost(scratch: Scratch, tasks: ModuleType, n: int) -> dict[str, Any]:
    """``enqueue_workflow`` against the same INSERT without its NOTIFY (into a copy of the
    table with every index), and without the secondary indexes (primary key only)."""
    db = tasks.app.db
    params = capture("enqueue_workflow", lambda: tasks.plain.enqueue(tasks.noop, 0))
    text = db.queries["enqueue_workflow"]
    table = _table("workflow_status")
    scratch.admin.execute("DROP TABLE IF EXISTS bench_all, bench_pk")
    scratch.admin.execute(f"CREATE TABLE bench_all (LIKE {table} INCLUDING ALL)")
    scratch.admin.execute(
        f"CREATE TABLE bench_pk (LIKE {table} INCLUDING DEFAULTS INCLUDING IDENTITY)"
    )
    scratch.admin.execute("ALTER TABLE bench_pk ADD PRIMARY KEY (workflow_id)")
    variants = {"select_1": "SELECT 1", "enqueue_workflow": text}
    quiet = _replace_once(text, "pg_notify(%(channel)s, %(queue_name)s)", "NULL")
    if quiet is not None:
        for name, copy in (("insert_all_indexes_no_notify", "bench_all"),
                           ("insert_pk_only_no_notify", "bench_pk")):  # fmt: skip
            variant = _replace_once(quiet, f"{table} (", f"{copy} (")
            if variant is not None:
                variants[name] = variant

    def params_for(i: int) -> dict[str, Any]:
        return {**params, "workflow_id": str(uuid.uuid4())}

    try:
        return compare(db, variants, params_for, n)
    finally:
        scratch.admin.execute("DROP TABLE IF EXISTS bench_all, bench_pk")


def step_cost(scratch: Scratch, tasks: ModuleType, n: int) -> dict[str, Any]:
    """``record_step`` (fenced by FOR SHARE on the workflow row, foreign key, ON CONFLICT),
    the same without the foreign key, and a plain INSERT of the same columns into a copy of
    the table."""
    db = tasks.app.db
    params = capture("record_step", lambda: tasks.ten_steps(0))
    # The workflow finished; make it PENDING again so the fence lets the checkpoints in.
    scratch.admin.execute(
        "UPDATE pgflow.workflow_status SET status = 'PENDING' WHERE workflow_id = %s",
        (params["workflow_id"],),
    )
    table = _table("operation_outputs")
    scratch.admin.execute("DROP TABLE IF EXISTS bench_steps")
    scratch.admin.execute(f"CREATE TABLE bench_steps (LIKE {table} INCLUDING ALL)")
    text = db.queries["record_step"]
    variants = {
        "select_1": "SELECT 1",
        "record_step": text,
        "plain_insert_same_columns": (
            "INSERT INTO bench_steps (workflow_id, step_id, name, output, error, "
            "child_workflow_id, executor_id, started_at) VALUES (%(workflow_id)s, %(step_id)s, "
            "%(name)s, %(output)s, %(error)s, %(child_workflow_id)s, %(executor_id)s, "
            "%(started_at)s)"
        ),
    }
    # The same fenced statement into the copy, which has no foreign key to workflow_status.
    no_fk = _replace_once(text, f"{table} (", "bench_steps (")
    if no_fk is not None:
        variants["record_step_without_foreign_key"] = no_fk

    def params_for(i: int) -> dict[str, Any]:
        return {**params, "step_id": 1_000 + i}

    try:
        return compare(db, variants, params_for, n)
    finally:
        scratch.admin.execute("DROP TABLE IF EXISTS bench_steps")


def _sum_wal(items: list[dict[str, float]], per: int) -> dict[str, float]:
    keys = ("wal_records", "wal_fpi", "wal_bytes", "execution_ms")
    return {k: sum(r[k] for r in items) / per for k in keys}


def job_wal(scratch: Scratch, tasks: ModuleType, batch: int = 10) -> dict[str, Any]:
    """WAL and server time per job of pgflow's three writes (enqueue, claim in batches of
    ``batch``, finish in batches of ``batch``) next to pgbench's job life (INSERT, UPDATE,
    UPDATE on a table with a primary key only). Measured on a second round, so that full-page
    images written after the last checkpoint do not count."""
    from .backlog import claim_params, register_claimer
    from .limit import CREATE_TABLE, SCRATCH_TABLE

    register_claimer(tasks)
    db = tasks.app.db
    enqueue = capture("enqueue_workflow", lambda: tasks.plain.enqueue(tasks.noop, 0))
    finish = capture("finish_workflows", lambda: tasks.noop(0))
    claim = {**claim_params(tasks, batch), "executor_id": "bench-claimer"}
    scratch.admin.execute(CREATE_TABLE)
    job_life = [
        f"INSERT INTO {SCRATCH_TABLE} (status, payload) VALUES ('queued', "
        '\'{"args": [42], "kwargs": {}}\') RETURNING id',
        f"UPDATE {SCRATCH_TABLE} SET status = 'running', started_at = now() WHERE id = %(id)s",
        f"UPDATE {SCRATCH_TABLE} SET status = 'done', completed_at = now(), output = '42' "
        "WHERE id = %(id)s",
    ]
    out: dict[str, Any] = {}
    try:
        with db.connect() as conn:
            for _ in range(2):  # the second round is the one reported
                scratch.reset_runs()
                pg = {
                    "enqueue": [
                        _wal_of(conn, db.queries["enqueue_workflow"],
                                {**enqueue, "workflow_id": str(uuid.uuid4())})
                        for _ in range(batch)
                    ],
                    "claim": [_wal_of(conn, db.queries["claim_workflows"], claim)],
                }  # fmt: skip
                rows = conn.execute(
                    "SELECT workflow_id, attempt FROM pgflow.workflow_status "
                    "WHERE executor_id = 'bench-claimer' AND status = 'PENDING'"
                ).fetchall()
                n = len(rows)
                params = {
                    k: [v[0]] * n if isinstance(v, list) and len(v) == 1 else v
                    for k, v in finish.items()
                }
                params.update(
                    executor_id="bench-claimer",
                    workflow_ids=[r["workflow_id"] for r in rows],
                    attempts=[r["attempt"] for r in rows],
                )
                pg["finish"] = [_wal_of(conn, db.queries["finish_workflows"], params)]
                life: list[list[dict[str, float]]] = [[], [], []]
                for _ in range(batch):
                    new_id = conn.execute(job_life[0]).fetchone()
                    ident = {"id": next(iter(new_id.values())) if new_id else None}
                    life[0].append(_wal_of(conn, job_life[0], {}))
                    life[1].append(_wal_of(conn, job_life[1], ident))
                    life[2].append(_wal_of(conn, job_life[2], ident))
            out["pgflow_per_job"] = {name: _sum_wal(items, batch) for name, items in pg.items()}
            out["pgbench_job_life_per_job"] = {
                name: _sum_wal(items, batch)
                for name, items in zip(
                    ("insert", "update_running", "update_done"), life, strict=True
                )
            }
            for key in ("pgflow_per_job", "pgbench_job_life_per_job"):
                out[key]["total"] = _sum_wal(list(out[key].values()), 1)
    finally:
        scratch.admin.execute(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")
    return out


def batch_cost(scratch: Scratch, tasks: ModuleType, size: int) -> dict[str, Any]:
    """Server time and WAL of one ``enqueue_batch`` of ``size`` rows (second of two runs),
    per row."""
    db = tasks.app.db
    batch = [(i,) for i in range(size)]
    params = capture("enqueue_batch", lambda: tasks.plain.enqueue_many(tasks.noop, batch))
    runs = []
    with db.connect() as conn:
        for _ in range(2):
            fresh = {**params, "workflow_ids": [str(uuid.uuid4()) for _ in range(size)]}
            runs.append(_wal_of(conn, db.queries["enqueue_batch"], fresh))
    return {k: v / size for k, v in runs[-1].items()} | {"per": "row"}
