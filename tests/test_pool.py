"""The connection pool: most recently returned session first, dead idle sessions skipped."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from pgflow.db.pool import Database


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
