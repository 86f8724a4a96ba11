"""Plans that survive growth: statements prepared while workflow_status was tiny must still
find their rows through an index once it holds many, with no ANALYZE in between."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgflow
from tests.apps import MakeApp


def show(conn: psycopg.Connection[Any] | psycopg.Cursor[Any], setting: str) -> str:
    """The session's value of ``setting``."""
    row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting))).fetchone()
    assert row is not None
    return str(row[setting])


@pytest.fixture
def app(make_app: MakeApp) -> pgflow.App:
    return make_app("plans")


def test_pgflow_sessions_plan_with_indexes_and_user_sql_gets_the_default(app: pgflow.App) -> None:
    seen: dict[str, str] = {}

    @app.transaction()
    def look() -> str:
        return str(show(pgflow.db(), "enable_seqscan"))

    @app.workflow()
    def wf() -> str:
        return look()

    with app.db.connection() as conn:
        seen["pgflow"] = show(conn, "enable_seqscan")
    assert seen["pgflow"] == "off"
    assert wf() == "on"  # the user's SQL in a transaction step
    with app.db.connection() as conn:  # and only for that transaction
        assert show(conn, "enable_seqscan") == "off"


def test_a_step_prepared_on_a_tiny_table_still_uses_an_index_after_growth(
    app: pgflow.App, database_url: str
) -> None:
    @app.step()
    def one(i: int) -> int:
        return i

    @app.workflow()
    def steps(i: int) -> int:
        return one(i) + one(i)

    # One pooled session prepares the step and finish statements on a nearly empty table
    # (more than 5 runs: PostgreSQL then settles on a generic plan), and runs them again
    # after 30,000 rows arrived with no ANALYZE since the tiny table's.
    plans: list[str] = []
    with app.db.connection() as conn, psycopg.connect(database_url, autocommit=True) as admin:
        assert _run_on(app, conn, lambda: steps(0)) == 0
        admin.execute("ANALYZE pgflow.workflow_status")  # the statistics of a tiny table
        for i in range(1, 9):
            assert _run_on(app, conn, lambda i=i: steps(i)) == 2 * i
        admin.execute(
            "INSERT INTO pgflow.workflow_status (workflow_id, name, status, inputs)"
            " SELECT 'g' || g, 'x', 'SUCCESS', '[]' FROM generate_series(1, 30000) g"
        )
        try:
            conn.execute("LOAD 'auto_explain'")
        except psycopg.Error as exc:
            pytest.skip(f"auto_explain is not available on this server: {exc}")
        conn.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
        for setting in ("auto_explain.log_min_duration = 0", "client_min_messages = log"):
            conn.execute(f"SET {setting}")
        assert _run_on(app, conn, lambda: steps(100)) == 200
        conn.execute("RESET client_min_messages")
        conn.execute("RESET auto_explain.log_min_duration")
    stepping = [p for p in plans if "operation_outputs" in p or "workflow_status" in p]
    assert stepping, plans
    for plan in stepping:
        assert "Seq Scan on workflow_status" not in plan, plan


def _run_on(app: pgflow.App, conn: Any, fn: Any) -> Any:
    """Run ``fn`` with every pooled checkout handing out ``conn`` (the session being watched)."""
    import contextlib

    original = app.db.connection

    @contextlib.contextmanager
    def same() -> Iterator[Any]:
        yield conn

    app.db.connection = same  # type: ignore[method-assign]
    try:
        return fn()
    finally:
        app.db.connection = original  # type: ignore[method-assign]


def test_reports_over_the_whole_table_may_scan_it(app: pgflow.App) -> None:
    """Counts and reports (marked `-- plan: scans`) run with sequential scans allowed, in a
    transaction of their own, and the session keeps pgflow's setting afterwards."""
    db = app.db
    assert {
        "work_left",
        "queue_progress",
        "stranded_work",
        "testing_queue_history",
    } <= db.queries.scanning
    # The queue reports count through the ENQUEUED and PENDING partial indexes instead (and
    # a scanning statement also gets JIT, which compiled for half a second per report).
    assert not {"claim_workflows", "queue_overview", "queue_partitions"} & db.queries.scanning
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO pgflow.workflow_status (workflow_id, name, status, queue_name,"
            " inputs, completed_at) SELECT 'r' || g, 'x', 'SUCCESS', 'q', '[]', now()"
            " FROM generate_series(1, 2000) g"
        )
        conn.execute("ANALYZE pgflow.workflow_status")
    row = db.fetchone("queue_progress", {"queues": ["q"], "since": "2000-01-01"})
    assert row is not None and row["done"] == 2000 and row["left_"] == 0
    explain = "EXPLAIN SELECT count(*) FROM pgflow.workflow_status WHERE seq > 0"
    with db.connection() as conn:
        with conn.transaction():
            conn.execute(db.queries["allow_scans"])
            plan = "\n".join(r["QUERY PLAN"] for r in conn.execute(explain).fetchall())
        assert "Seq Scan" in plan, plan
        plan = "\n".join(r["QUERY PLAN"] for r in conn.execute(explain).fetchall())
        assert "Seq Scan" not in plan and "workflow_status_seq" in plan, plan
        assert show(conn, "enable_seqscan") == "off"


def test_session_options_keep_the_urls_own(database_url: str, monkeypatch: Any) -> None:
    """pgflow's settings are added to the URL's `options` (or PGOPTIONS), not put instead."""
    from pgflow.db.pool import PGFLOW_SESSION_OPTIONS, Database

    sep = "&" if "?" in database_url else "?"
    db = Database(f"{database_url}{sep}options=-c%20statement_timeout%3D12345", "pgflow")
    try:
        with db.connection() as conn:
            assert show(conn, "statement_timeout") == "12345ms"
            assert show(conn, "enable_seqscan") == "off"
    finally:
        db.close()
    monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=4321")
    db = Database(database_url, "pgflow")
    try:
        assert db._options() == f"-c lock_timeout=4321 {PGFLOW_SESSION_OPTIONS}"
        with db.connection() as conn:
            assert show(conn, "lock_timeout") == "4321ms"
            assert show(conn, "jit") == "off"
    finally:
        db.close()
