"""pgflow.testing's tools one by one: the database clock, drain, the fixture, use_database."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

import pgflow
from pgflow.db.pool import Database
from pgflow.executor import new_executor_id
from pgflow.testing import Clock, check_history, drain, pgflow_database, use_database

__all__ = ["pgflow_database"]  # the fixture, imported as a user's conftest.py would


def test_the_fixture_gives_a_migrated_database(pgflow_database: str) -> None:
    app = pgflow.App("fixture", database_url=pgflow_database, auto_migrate=False)
    try:
        assert app.list_workflows() == []
    finally:
        app.shutdown()


def test_clock_moves_database_time_for_its_app_only(database_url: str) -> None:
    app = pgflow.App("clocked", database_url=database_url)
    other = Database(database_url, "pgflow")
    try:
        clock = Clock(app)
        before = clock.now()
        clock.advance(3600)
        moved = clock.now()
        assert timedelta(seconds=3600) <= moved - before < timedelta(seconds=3610)
        assert clock.offset == 3600
        # Every session of the app's pool, and its one-off connections, see it...
        with app.db.connect() as conn:
            row = conn.execute(app.db.queries["clock_now"]).fetchone()
            assert row is not None and row["now"] - before >= timedelta(seconds=3600)
        # ... another Database on the same server does not.
        row = other.fetchone("clock_now")
        assert row is not None and row["now"] - before < timedelta(seconds=60)
        with pytest.raises(ValueError):
            clock.advance(-1)
    finally:
        other.close()
        app.shutdown()


def test_an_unmoved_clock_costs_no_statement_at_checkout(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(database_url, "pgflow")

    def refuse(*args: object) -> None:
        raise AssertionError("the clock offset was applied though it never changed")

    monkeypatch.setattr(Database, "_apply_clock", refuse)
    try:
        for _ in range(5):
            assert db.fetchone("clock_now") is not None
        with db.connect():
            pass
    finally:
        db.close()


def test_drain_without_a_clock_waits_in_real_time(database_url: str) -> None:
    app = pgflow.App("realtime", database_url=database_url)
    jobs = app.queue("jobs", concurrency=1)

    @app.workflow()
    def job(i: int) -> int:
        return i * 2

    try:
        handles = [jobs.options(delay=0.3).enqueue(job, i) for i in range(3)]
        start = time.monotonic()
        summary = drain(app)
        assert time.monotonic() - start >= 0.3
        assert (summary.done, summary.failed, summary.left, summary.advanced) == (3, 0, 0, 0.0)
        assert [h.result(timeout=0) for h in handles] == [0, 2, 4]
        check_history(app, jobs)
    finally:
        app.shutdown()


def test_drain_with_a_clock_skips_long_delays_and_windows(database_url: str) -> None:
    app = pgflow.App("skipping", database_url=database_url)
    slow = app.queue("slow", rate_limit=pgflow.Rate(1, per=600))

    @app.workflow()
    def job(i: int) -> int:
        return i

    try:
        for i in range(3):
            slow.options(delay=3600).enqueue(job, i)
        clock = Clock(app)
        start, db_start = time.monotonic(), clock.now()
        summary = drain(app, clock=clock)
        assert time.monotonic() - start < 10
        assert summary.done == 3 and summary.left == 0
        # An hour of delay, then two more windows of the rate limit, passed on the database.
        assert clock.now() - db_start >= timedelta(seconds=3600 + 2 * 600)
        assert summary.advanced <= clock.offset
        check_history(app, slow)
    finally:
        app.shutdown()


def test_drain_recovers_work_of_an_executor_that_stopped_heartbeating(database_url: str) -> None:
    app = pgflow.App("orphans", database_url=database_url, heartbeat_timeout=30)
    jobs = app.queue("jobs", concurrency=2)

    @app.workflow()
    def job(i: int) -> int:
        return i

    try:
        for i in range(2):
            jobs.enqueue(job, i)
        # A worker on another machine claimed both, then the machine stopped.
        gone = new_executor_id()
        app.db.fetchone(
            "register_executor",
            {
                "executor_id": gone,
                "hostname": "elsewhere",
                "pid": 1,
                "app_version": app.app_version,
                "kind": "worker",
                "queues": ["jobs"],
                "names": [],
            },
        )
        claimed = app.db.fetchall(
            "claim_workflows",
            {
                "queue_name": "jobs",
                "app_version": app.app_version,
                "names": sorted(app.registry.workflows),
                "executor_id": gone,
                "limit": 2,
                "strict": False,
            },
        )
        assert len(claimed) == 2
        summary = drain(app, clock=Clock(app), timeout=30)
        assert summary.done == 2 and summary.left == 0
        assert summary.advanced >= 30
    finally:
        app.shutdown()


def test_drain_gives_up_on_work_it_cannot_run(database_url: str) -> None:
    app = pgflow.App("stuck", database_url=database_url)
    jobs = app.queue("jobs")

    @app.workflow()
    def job() -> None:
        return None

    try:
        client = pgflow.Client(database_url)
        client.enqueue("jobs", "not_registered_here", app_version=app.app_version)
        client.close()
        with pytest.raises(TimeoutError, match="1 workflow"):
            drain(app, [jobs], timeout=1, clock=Clock(app))
    finally:
        app.shutdown()


def test_use_database_points_an_app_at_a_test_database_and_back(database_url: str) -> None:
    app = pgflow.App("pointed", database_url="postgresql://nobody@127.0.0.1:1/none")
    jobs = app.queue("jobs")

    @app.workflow()
    def job() -> str:
        return "ok"

    with use_database(app, database_url):
        handle = jobs.enqueue(job)
        drain(app)
        assert handle.result(timeout=0) == "ok"
    assert app.settings.database_url == "postgresql://nobody@127.0.0.1:1/none"
