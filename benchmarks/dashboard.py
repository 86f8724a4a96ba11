"""The dashboard's server time per page with a large workflow_status table (not a timed test).

    python -m benchmarks.dashboard                       # 1,000,000 workflows
    python -m benchmarks.dashboard --rows 200000 --repeat 9
    python -m benchmarks.dashboard --database-url postgresql://user@host:5432/postgres

Creates a scratch database (``pgflow_bench_dashboard``) on the server, migrates it, fills it
with generate_series (the harness's own SQL: a week of history, 90% SUCCESS, failures,
cancellations, a backlog of ENQUEUED rows on five queues, PENDING rows under a live executor,
one workflow with steps and events, one with 100,000 children), runs VACUUM ANALYZE as
autovacuum eventually would, then calls the ASGI application directly (no socket: server time
only) for each route and prints each route's median and worst over the repeats. Drops the
database at the end unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.scratch import DEFAULT_URL, redact, with_database

SCRATCH = "pgflow_bench_dashboard"
TARGET_MS = 200.0

FILL = """
INSERT INTO pgflow.workflow_status (
    workflow_id, name, status, queue_name, dedup_id, priority, partition_key, executor_id,
    app_version, serializer, inputs, output, error, created_at, started_at, updated_at,
    completed_at)
SELECT 'wf-' || lpad(i::text, 8, '0'),
       'job_' || (i %% 20),
       CASE WHEN i > %(rows)s - %(backlog)s THEN 'ENQUEUED'
            WHEN i > %(rows)s - %(backlog)s - 1000 THEN 'PENDING'
            WHEN i %% 25 = 0 THEN 'ERROR'
            WHEN i %% 50 = 1 THEN 'CANCELLED'
            WHEN i %% 200 = 2 THEN 'MAX_RECOVERY_ATTEMPTS_EXCEEDED'
            ELSE 'SUCCESS' END,
       'q' || (i %% 5),
       CASE WHEN i %% 10 = 0 THEN 'dedup-' || i END,
       0,
       CASE WHEN i %% 3 = 0 THEN 'key-' || (i %% 100) END,
       CASE WHEN i > %(rows)s - %(backlog)s - 1000 AND i <= %(rows)s - %(backlog)s
            THEN 'bench-executor' END,
       'v1', 'json', '{"args":[' || i || '],"kwargs":{}}',
       CASE WHEN i <= %(rows)s - %(backlog)s - 1000 THEN '"done"' END,
       CASE WHEN i %% 25 = 0 THEN '{"type":"ValueError","module":"builtins","message":"bad",'
                                 '"args":["bad"],"traceback":""}' END,
       t, t + interval '1 second', t + interval '3 seconds',
       CASE WHEN i <= %(rows)s - %(backlog)s - 1000 THEN t + interval '3 seconds' END
FROM generate_series(1, %(rows)s) AS i,
     LATERAL (SELECT now() - interval '7 days' * (1 - i::float8 / %(rows)s) AS t) AS at
"""

EXTRAS = [
    "INSERT INTO pgflow.executors (executor_id, hostname, pid, app_version, kind, queues) "
    "VALUES ('bench-executor', 'bench-host', 1, 'v1', 'worker', ARRAY['q0','q1','q2','q3','q4'])",
    "INSERT INTO pgflow.queues (name, concurrency) "
    "SELECT 'q' || i, 200 FROM generate_series(0, 4) AS i",
    "INSERT INTO pgflow.operation_outputs (workflow_id, step_id, name, output, started_at, "
    "completed_at) SELECT 'wf-00000001', s, 'step_' || s, '\"ok\"', now(), now() "
    "FROM generate_series(1, 5) AS s",
    "INSERT INTO pgflow.workflow_events (workflow_id, key, value) "
    "VALUES ('wf-00000001', 'progress', '1')",
    # a call graph at its widest: one workflow with 100,000 children (the page shows 200)
    "UPDATE pgflow.workflow_status SET parent_workflow_id = 'wf-00000002' "
    "WHERE workflow_id > 'wf-00000002' AND workflow_id <= 'wf-00100002'",
]


def routes(rows: int, backlog: int) -> list[str]:
    enqueued = f"wf-{rows:08d}"
    return [
        "/",
        "/workflows",
        "/workflows?status=ERROR",
        "/workflows?status=ENQUEUED&queue=q1",
        "/workflows?name=no_such_name",  # a filter nothing matches: the bounded walk
        "/workflows?id=wf-0000012",
        "/workflows?dedup_id=dedup-500000",
        "/workflows?partition_key=key-7",
        f"/workflows?before={rows // 2}",
        "/workflows/wf-00000001",
        "/workflows/wf-00000002",  # 100,000 children: the tree's bounded walk
        f"/workflows/{enqueued}",
        "/queues",
        "/workers",
        "/metrics",  # not a page: what a Prometheus scrape costs
        "/healthz",
    ]


async def call(app: Any, target: str) -> tuple[int, int]:
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"bench")],
        "server": ("bench", 80),
        "client": ("127.0.0.1", 1),
    }
    status, size = 0, 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            size += len(message.get("body", b""))

    await app(scope, receive, send)
    return status, size


async def measure(app: Any, targets: list[str], repeat: int) -> None:
    for target in targets:
        times = []
        for i in range(repeat + 2):
            t0 = time.perf_counter()
            status, size = await call(app, target)
            if i >= 2:
                times.append((time.perf_counter() - t0) * 1000)
        median = statistics.median(times)
        flag = "" if median < TARGET_MS else "  OVER"
        print(
            f"{target:44} {median:10.1f} {max(times):8.1f} {status:>6} {size / 1024:6.0f}{flag}",
            flush=True,
        )


def fill(url: str, rows: int, backlog: int) -> None:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FILL, {"rows": rows, "backlog": backlog})
        for statement in EXTRAS:
            conn.execute(statement)
        conn.execute("VACUUM ANALYZE pgflow.workflow_status")
    print(f"filled {rows:,} workflows in {time.perf_counter() - started:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", default=os.environ.get("PGFLOW_BENCH_DATABASE_URL", DEFAULT_URL)
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    from pgflow.dashboard import create_app
    from pgflow.db.migrate import migrate
    from pgflow.db.pool import Database

    url = with_database(args.database_url, SCRATCH)
    with psycopg.connect(args.database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(SCRATCH)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(SCRATCH)))
    try:
        db = Database(url, "pgflow")
        migrate(db)
        db.close()
        fill(url, args.rows, args.backlog)
        app = create_app(url)
        print(
            f"server {redact(args.database_url)}; {args.repeat} calls per route after 2 "
            f"warm-up calls; target {TARGET_MS:.0f} ms\n"
        )
        print(f"{'route':44} {'median ms':>10} {'max ms':>8} {'status':>6} {'KB':>6}")
        asyncio.run(measure(app, routes(args.rows, args.backlog), args.repeat))
    finally:
        if not args.keep:
            with psycopg.connect(args.database_url, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(SCRATCH)
                    )
                )


if __name__ == "__main__":
    main()
