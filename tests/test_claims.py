"""The limited and partitioned claim statements, on a real database.

claim_limited must take exactly the room pgflow.budget.claim_budget computes from the same
counts; claim_partitions must respect each key's room and hand rows out round robin.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgflow.budget import claim_budget
from pgflow.db.pool import Database

EXECUTOR = "claims-test-executor"
VERSION = "v1"
_ids = itertools.count()


@pytest.fixture
def claims_db(db: Database) -> Iterator[Database]:
    db.run(
        "register_executor",
        {
            "executor_id": EXECUTOR,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "app_version": VERSION,
            "kind": "test",
            "queues": [],
            "names": ["wf"],
        },
    )
    yield db


def add(
    db: Database,
    queue: str,
    status: str,
    n: int,
    *,
    key: str | None = None,
    started_ago: float | None = None,
    priority: int = 0,
) -> None:
    """n rows of a queue in one status; started ``started_ago`` seconds ago when given."""
    with db.connection() as conn:
        for _ in range(n):
            conn.execute(
                "INSERT INTO pgflow.workflow_status (workflow_id, name, status, queue_name,"
                " partition_key, app_version, inputs, priority, executor_id, started_at)"
                " VALUES (%s, 'wf', %s, %s, %s, %s, '[]', %s, %s,"
                " CASE WHEN %s::float8 IS NULL THEN NULL"
                "      ELSE now() - %s::float8 * interval '1 second' END)",
                (
                    f"w{next(_ids)}",
                    status,
                    queue,
                    key,
                    VERSION,
                    priority,
                    EXECUTOR if status == "PENDING" else None,
                    started_ago,
                    started_ago,
                ),
            )


def claim(
    db: Database,
    statement: str,
    queue: str,
    limit: int,
    *,
    concurrency: int | None = None,
    rate_limit: int | None = None,
    per_s: float = 1.0,
    rotation: int = 0,
    conn: psycopg.Connection[Any] | None = None,
) -> list[dict[str, Any]]:
    params = {
        "queue_name": queue,
        "app_version": VERSION,
        "names": ["wf"],
        "executor_id": EXECUTOR,
        "limit": limit,
        "concurrency": concurrency,
        "rate_limit": rate_limit,
        "per_s": per_s,
        "rotation": rotation,
        "lock_name": f"test:{queue}",
        "strict": False,
        "worker_concurrency": None,
    }
    if conn is not None:
        return db.execute(conn, statement, params).fetchall()
    return db.fetchall(statement, params)


def keys_of(db: Database, rows: list[dict[str, Any]]) -> list[str]:
    ids = [r["workflow_id"] for r in rows]
    with db.connection() as conn:
        got = conn.execute(
            "SELECT workflow_id, partition_key FROM pgflow.workflow_status"
            " WHERE workflow_id = ANY(%s)",
            (ids,),
        ).fetchall()
    by_id = {g["workflow_id"]: g["partition_key"] for g in got}
    return [by_id[i] for i in ids]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    limit=st.integers(0, 12),
    waiting=st.integers(0, 12),
    running=st.integers(0, 8),
    started=st.integers(0, 8),
    concurrency=st.none() | st.integers(1, 10),
    rate_limit=st.none() | st.integers(1, 10),
)
def test_claim_limited_takes_exactly_the_budget(
    claims_db: Database,
    limit: int,
    waiting: int,
    running: int,
    started: int,
    concurrency: int | None,
    rate_limit: int | None,
) -> None:
    queue = f"q{next(_ids)}"
    add(claims_db, queue, "ENQUEUED", waiting)
    add(claims_db, queue, "PENDING", running, started_ago=100.0)  # outside the window
    add(claims_db, queue, "SUCCESS", started, started_ago=0.5)  # inside a 10 s window
    rows = claim(
        claims_db,
        "claim_limited",
        queue,
        limit,
        concurrency=concurrency,
        rate_limit=rate_limit,
        per_s=10.0,
    )
    room = claim_budget(
        free_slots=limit,
        local_running=0,
        worker_concurrency=None,
        concurrency=concurrency,
        running=running,
        rate_limit=rate_limit,
        started_in_window=started,
    )
    assert len(rows) == min(room, waiting)
    assert all(r["attempt"] == 1 for r in rows)


def test_claim_limited_counts_only_its_own_queue_and_the_window(claims_db: Database) -> None:
    add(claims_db, "mine", "ENQUEUED", 10)
    add(claims_db, "mine", "SUCCESS", 3, started_ago=30.0)  # long ago: outside a 10 s window
    add(claims_db, "other", "PENDING", 5, started_ago=0.1)
    rows = claim(claims_db, "claim_limited", "mine", 10, concurrency=4, rate_limit=3, per_s=10.0)
    assert len(rows) == 3  # the rate is the tightest: 3 starts per 10 s
    rows = claim(claims_db, "claim_limited", "mine", 10, concurrency=4, rate_limit=3, per_s=10.0)
    assert rows == []  # the window is full now
    rows = claim(claims_db, "claim_limited", "mine", 10, concurrency=4)
    assert len(rows) == 1  # 3 running of 4


def test_claim_partitions_respects_each_keys_room(claims_db: Database) -> None:
    add(claims_db, "p", "ENQUEUED", 6, key="a")
    add(claims_db, "p", "PENDING", 2, key="a")
    add(claims_db, "p", "ENQUEUED", 6, key="b")
    add(claims_db, "p", "PENDING", 3, key="b")
    add(claims_db, "p", "ENQUEUED", 1, key="c")
    rows = claim(claims_db, "claim_partitions", "p", 20, concurrency=3)
    assert Counter(keys_of(claims_db, rows)) == {"a": 1, "c": 1}  # b is full
    assert claim(claims_db, "claim_partitions", "p", 20, concurrency=3) == []


def test_claim_partitions_is_round_robin_and_rotates(claims_db: Database) -> None:
    for key in ("a", "b", "c", "d"):
        add(claims_db, "rr", "ENQUEUED", 10 if key == "a" else 3, key=key)
    # Every key with room gets its first row before any key gets a second one.
    rows = claim(claims_db, "claim_partitions", "rr", 6)
    counts = Counter(keys_of(claims_db, rows))
    assert sum(counts.values()) == 6
    assert set(counts) == {"a", "b", "c", "d"} and max(counts.values()) == 2
    # Fewer slots than keys: the rotation decides who goes first, so nobody always wins.
    firsts = set()
    for rotation in range(4):
        (row,) = claim(claims_db, "claim_partitions", "rr", 1, rotation=rotation)
        firsts.add(keys_of(claims_db, [row])[0])
    assert len(firsts) >= 3
    # A hot key alone gets everything its room allows.
    rows = claim(claims_db, "claim_partitions", "rr", 50)
    assert Counter(keys_of(claims_db, rows)).total() == 10 + 3 * 3 - 6 - 4


def test_claim_partitions_priority_then_fifo_within_a_key(claims_db: Database) -> None:
    add(claims_db, "pp", "ENQUEUED", 2, key="k", priority=5)
    add(claims_db, "pp", "ENQUEUED", 2, key="k", priority=1)
    rows = claim(claims_db, "claim_partitions", "pp", 2)
    with claims_db.connection() as conn:
        prios = conn.execute(
            "SELECT priority FROM pgflow.workflow_status WHERE workflow_id = ANY(%s)",
            ([r["workflow_id"] for r in rows],),
        ).fetchall()
    assert [p["priority"] for p in prios] == [1, 1]


def test_claim_partitions_skips_keys_through_the_index(claims_db: Database) -> None:
    """The key search is an index skip, not a scan of the backlog: the plans of the
    function's statements, as auto_explain reports them."""
    add(claims_db, "ix", "ENQUEUED", 3, key="a")
    plans: list[str] = []
    with claims_db.connection() as conn:
        try:
            conn.execute("LOAD 'auto_explain'")
        except psycopg.Error as exc:
            pytest.skip(f"auto_explain is not available on this server: {exc}")
        conn.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
        for setting in (
            "auto_explain.log_min_duration = 0",
            "auto_explain.log_nested_statements = on",
            "client_min_messages = log",
            "enable_seqscan = off",
        ):
            conn.execute(f"SET {setting}")
        rows = claim(claims_db, "claim_partitions", "ix", 4, concurrency=2, conn=conn)
        conn.execute("RESET ALL")
    assert len(rows) == 2
    plan = "\n".join(plans)
    assert "Seq Scan on workflow_status" not in plan, plan
    assert "workflow_status_claim_partition" in plan, plan


@pytest.mark.parametrize("statement", ["list_workflows", "list_workflows_newest"])
def test_listing_walks_the_seq_index_and_stops_at_its_limit(
    claims_db: Database, statement: str
) -> None:
    """Listing a big table does not sort it: it walks workflow_status_seq (generic plan)."""
    with claims_db.connection() as conn:
        conn.execute(
            "INSERT INTO pgflow.workflow_status (workflow_id, name, status, inputs)"
            " SELECT 'l' || g, 'wf', 'SUCCESS', '[]' FROM generate_series(1, 20000) g"
        )
        conn.execute("ANALYZE pgflow.workflow_status")
        conn.execute("SET plan_cache_mode = force_generic_plan")
        params = {
            "status": None,
            "name": None,
            "queue_name": None,
            "created_after": None,
            "created_before": None,
            "parent_workflow_id": None,
            "limit": 5,
            "offset": 0,
        }
        plan = "\n".join(
            r["QUERY PLAN"]
            for r in conn.execute(
                "EXPLAIN " + claims_db.queries[statement], params, prepare=True
            ).fetchall()
        )
        conn.execute("RESET plan_cache_mode")
    assert "workflow_status_seq" in plan, plan
    assert "Sort" not in plan, plan


def test_a_partitioned_queue_refuses_work_without_a_key(database_url: str) -> None:
    """A keyless row of a partitioned queue would never be claimed: refuse it up front."""
    import pgflow

    app = pgflow.App("keys", database_url=database_url)
    parts = app.queue("parts", partitioned=True)

    @app.workflow()
    def job(i: int) -> int:
        return i

    try:
        with pytest.raises(pgflow.ConfigurationError, match="partition_key"):
            parts.enqueue(job, 1)
        with pytest.raises(pgflow.ConfigurationError, match="partition_key"):
            parts.enqueue_many(job, [(1,), (2,)])
        assert len(parts.options(partition_key="k").enqueue_many(job, [(1,), (2,)])) == 2
        with app.db.connection() as conn:
            keys = conn.execute("SELECT partition_key FROM pgflow.workflow_status").fetchall()
        assert [k["partition_key"] for k in keys] == ["k", "k"]
    finally:
        app.shutdown(timeout=5)


def test_enqueue_many_rows_carry_the_batch_options(database_url: str) -> None:
    """A batch has one priority, one partition key and one delay; each row gets its own id
    and inputs."""
    import pgflow

    app = pgflow.App("batch", database_url=database_url)
    urgent = app.queue("urgent", priority_enabled=True, partitioned=True)

    @app.workflow()
    def job(i: int) -> int:
        return i

    try:
        handles = urgent.options(priority=7, partition_key="p", delay=60).enqueue_many(
            job, [(1,), (2,), (3,)]
        )
        with app.db.connection() as conn:
            rows = conn.execute(
                "SELECT workflow_id, priority, partition_key, dedup_id, inputs, status,"
                " not_before > now() + interval '50 seconds' AS delayed"
                " FROM pgflow.workflow_status ORDER BY seq"
            ).fetchall()
        assert [r["workflow_id"] for r in rows] == [h.workflow_id for h in handles]
        assert len({r["workflow_id"] for r in rows}) == 3
        assert {
            (r["priority"], r["partition_key"], r["dedup_id"], r["status"], r["delayed"])
            for r in rows
        } == {(7, "p", None, "ENQUEUED", True)}
        assert [r["inputs"] for r in rows] == [
            '{"args":[1],"kwargs":{}}',
            '{"args":[2],"kwargs":{}}',
            '{"args":[3],"kwargs":{}}',
        ]
    finally:
        app.shutdown(timeout=5)


def test_enqueue_many_retried_after_a_lost_reply_inserts_the_batch_once(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch commits, then its session dies before the client hears back: the retry finds
    the ids taken and reports success; every call is in exactly once."""
    import psycopg

    import pgflow
    from pgflow.db.pool import Database

    app = pgflow.App("lostreply", database_url=database_url)
    q = app.queue("q")

    @app.workflow()
    def job(i: int) -> int:
        return i

    real = Database.execute
    lost: list[int] = []

    def reply_lost(self: Database, conn: Any, name: str, params: Any = None) -> Any:
        cur = real(self, conn, name, params)
        if name == "enqueue_batch" and not lost:
            lost.append(conn.info.backend_pid)
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s, 5000)", (lost[0],))
            conn.execute("SELECT 1")  # the dead session: psycopg's own OperationalError
        return cur

    monkeypatch.setattr(Database, "execute", reply_lost)
    try:
        handles = q.enqueue_many(job, [(i,) for i in range(5)])
        assert lost, "the fault was not injected"
        with app.db.connection() as conn:
            assert conn.info.backend_pid != lost[0]
            rows = conn.execute(
                "SELECT workflow_id FROM pgflow.workflow_status ORDER BY seq"
            ).fetchall()
        assert [r["workflow_id"] for r in rows] == [h.workflow_id for h in handles]
    finally:
        app.shutdown(timeout=5)
