"""The connection pool: most recently returned session first, dead idle sessions skipped."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

import pgflow
from pgflow.db.pool import Database
from pgflow.errors import ConfigurationError
from pgflow.settings import Settings


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    db = Database(database_url, "pgflow", max_size=4)
    yield db
    db.close()


def _backend(db: Database) -> int:
    with db.connection() as conn:
        return int(conn.info.backend_pid)


def test_the_session_returned_last_is_handed_out_next(db: Database) -> None:
    with db.connection() as outer:
        with db.connection() as inner:  # a second session; returned first
            inner_pid = inner.info.backend_pid
        outer_pid = outer.info.backend_pid
    assert inner_pid != outer_pid
    # Returned last: outer. A FIFO pool would hand out inner, the longest idle.
    assert [_backend(db) for _ in range(5)] == [outer_pid] * 5


def test_an_idle_session_the_server_ended_is_skipped(db: Database, database_url: str) -> None:
    victim = _backend(db)
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", (victim,))  # waits for its exit
    with db.connection() as conn:  # no error: the closed session is dropped at checkout
        assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
        assert conn.info.backend_pid != victim


def test_named_statements_share_one_cursor_per_session(db: Database) -> None:
    # A new cursor per statement starts psycopg's adaptation caches cold (40 µs of client CPU
    # per statement on the benchmark machine); a session keeps one for pgflow's statements.
    with db.connection() as conn:
        first = db.execute(conn, "set_clock_offset", {"offset": "0"})
        assert first.fetchone() is not None
        second = db.execute(conn, "set_clock_offset", {"offset": "0"})
        assert second is first
    with db.connection() as again:  # the same session, back from the pool: the same cursor
        assert again is conn
        assert db.execute(again, "set_clock_offset", {"offset": "0"}) is first


def test_a_failed_statement_leaves_the_session_and_its_cursor_usable(db: Database) -> None:
    with db.connection() as conn:
        pid = conn.info.backend_pid
    with pytest.raises(Exception) as caught, db.connection() as conn:
        db.execute(conn, "set_clock_offset", {"offset": "0"})
        with conn.transaction():
            conn.execute("SELECT 1/0")
    assert not isinstance(caught.value, psycopg.Error)  # translated at the boundary
    with db.connection() as conn:  # the same session, idle again, its cursor working
        assert conn.info.backend_pid == pid
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert db.execute(conn, "set_clock_offset", {"offset": "0"}).fetchone() is not None


def test_a_session_returned_inside_a_transaction_is_rolled_back(db: Database) -> None:
    with db.connection() as conn:
        conn.execute("BEGIN")
        conn.execute("CREATE TEMP TABLE left_open (x int)")
    with db.connection() as again:
        assert again.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        found = again.execute("SELECT to_regclass('pg_temp.left_open') AS t").fetchone()
        assert found == {"t": None}


def _sessions(url: str, name: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_idle_sessions_go_back_to_the_server_after_the_idle_timeout(database_url: str) -> None:
    # psycopg_pool alone closes one idle connection per max_idle (10 minutes): a process
    # that once needed 36 sessions kept them for hours.
    name = "pgflow:idle-test"
    db = Database(database_url, "pgflow", max_size=6, idle_timeout=0.5, application_name=name)
    try:
        with db.connection(), db.connection(), db.connection(), db.connection():
            assert _sessions(database_url, name) == 4
        time.sleep(0.2)
        with db.connection():  # one used again: kept while in use, the others go
            time.sleep(1.2)
            assert _sessions(database_url, name) == 1
        time.sleep(1.2)
        assert _sessions(database_url, name) == 0  # idle: nothing kept (min_size 0)
        with db.connection() as conn:  # and a new one when needed
            assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
    finally:
        db.close()


def test_pool_settings_defaults_variables_and_checks() -> None:
    assert Settings.from_env({}).connections == 4 + 3  # threads + 3
    assert Settings.from_env({}, threads=32).connections == 35
    assert Settings.from_env({"PGFLOW_POOL_SIZE": "5"}, threads=32).connections == 5
    assert Settings.from_env({"PGFLOW_POOL_IDLE_TIMEOUT": "2.5"}).pool_idle_timeout == 2.5
    assert Settings.from_env({}).pool_idle_timeout == 60.0
    with pytest.raises(ConfigurationError, match="pool"):
        Settings.from_env({"PGFLOW_POOL_SIZE": "-1"})
    with pytest.raises(ConfigurationError, match="pool"):
        Settings.from_env({"PGFLOW_POOL_IDLE_TIMEOUT": "0"})


def test_threads_sharing_a_small_pool_never_wait_for_a_second_session(database_url: str) -> None:
    # Two threads, two sessions, each thread inside a transaction step (holding one) whose
    # checkpoint is then refused: explaining the refusal must not need a second session, or
    # both wait for each other until the pool's timeout.
    app = pgflow.App("small-pool", database_url=database_url, pool_size=2)
    both_inside = threading.Barrier(2, timeout=10)

    @app.transaction()
    def write() -> int:
        both_inside.wait()
        with psycopg.connect(database_url, autocommit=True) as other:  # finished elsewhere
            other.execute(
                "UPDATE pgflow.workflow_status SET status = 'SUCCESS' WHERE workflow_id = %s",
                (pgflow.workflow_id(),),
            )
        return 1

    @app.workflow()
    def wf() -> int:
        return write()

    outcomes: dict[str, BaseException | int] = {}

    def run(wid: str) -> None:
        try:
            outcomes[wid] = app.options(workflow_id=wid).call(wf)
        except BaseException as exc:
            outcomes[wid] = exc

    began = time.monotonic()
    threads = [threading.Thread(target=run, args=(f"small-pool-{i}",)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        took = time.monotonic() - began
        print(f"\nrefused checkpoints on a 2-session pool: {took:.2f}s {outcomes}")
        # Fenced out, each caller gets what the workflow's new owner recorded (nothing here).
        assert outcomes == {"small-pool-0": None, "small-pool-1": None}
        assert all(app.steps(wid) == [] for wid in outcomes)  # both checkpoints refused
        assert took < 5
    finally:
        app.shutdown()
