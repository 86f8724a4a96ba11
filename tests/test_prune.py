"""Retention: ``prune`` deletes old finished workflows with all their rows, in batches, and
keeps active ones, recent ones and children whose parent stays; the CLI; the automatic
``retention`` setting applied by a worker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import pgflow
from pgflow.cli import main
from pgflow.errors import ConfigurationError
from tests.inprocess import running_worker, wait_for

TABLES = {
    "workflow_status": "workflow_id",
    "operation_outputs": "workflow_id",
    "notifications": "destination_id",
    "workflow_events": "workflow_id",
    "workflow_event_history": "workflow_id",
}
OLD = ["old1", "old2", "olderr", "fam", "fam-1", "fam-2"]
KEPT = ["queued", "wp", "wp-1", "recent"]


def _make(database_url: str, **settings: Any) -> pgflow.App:
    app = pgflow.App("prune-tests", database_url=database_url, **settings)
    jobs = app.queue("jobs")

    @app.step()
    def step(x: int) -> int:
        return x

    @app.workflow(name="chatty")
    def chatty(x: int) -> int:
        step(x)
        pgflow.set_event("k", 1)
        pgflow.set_event("k", 2)
        if x < 0:
            raise ValueError("negative")
        return x

    @app.workflow(name="child")
    def child(x: int) -> int:
        return step(x)

    @app.workflow(name="family")
    def family() -> int:
        return int(child(1)) + int(child(2))

    @app.workflow(name="waiting_parent")
    def waiting_parent() -> int:
        child(3)
        pgflow.recv(timeout=60)
        return 0

    app.options(workflow_id="old1").call(chatty, 1)
    app.options(workflow_id="old2").call(chatty, 2)
    with pytest.raises(ValueError):
        app.options(workflow_id="olderr").call(chatty, -1)
    assert app.options(workflow_id="fam").call(family) == 3
    jobs.options(workflow_id="queued").enqueue(child, 4)
    app.options(workflow_id="wp").start(waiting_parent)
    app.options(workflow_id="recent").call(chatty, 5)
    for target in ("old1", "recent", "queued"):
        app.send(target, "hello")
    wait_for(
        lambda: _rows(database_url).get("wp-1", {}).get("workflow_status"),
        what="the running parent's child",
    )
    # Everything but "recent" was created and ended 40 days ago.
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE pgflow.workflow_status SET created_at = now() - interval "
            "'40 days', completed_at = CASE WHEN completed_at IS NULL THEN NULL "
            "ELSE now() - interval '40 days' END WHERE workflow_id <> 'recent'"
        )
    return app


def _rows(database_url: str) -> dict[str, dict[str, int]]:
    """Rows per workflow id per table."""
    found: dict[str, dict[str, int]] = {}
    with psycopg.connect(database_url) as conn:
        for table, column in TABLES.items():
            for wf, n in conn.execute(
                f"SELECT {column}, count(*) FROM pgflow.{table} GROUP BY 1"
            ).fetchall():
                found.setdefault(wf, {})[table] = n
    return found


@pytest.fixture
def app(database_url: str) -> Iterator[pgflow.App]:
    a = _make(database_url)
    yield a
    a.cancel("wp")
    a.shutdown(timeout=5)


def test_prune_deletes_old_finished_workflows_with_all_their_rows(
    app: pgflow.App, database_url: str
) -> None:
    before = _rows(database_url)
    assert before["old1"] == {
        "workflow_status": 1,
        "operation_outputs": 3,
        "notifications": 1,
        "workflow_events": 1,
        "workflow_event_history": 2,
    }
    assert app.count_prunable("30d") == len(OLD)
    assert _rows(database_url) == before

    seen: list[int] = []
    done = app.prune("30d", batch=2, on_batch=lambda r: seen.append(r.workflows))
    assert done.workflows == len(OLD) and done.batches == 3 and seen == [2, 4, 6]
    assert (done.messages, done.events) == (1, 9)  # 3 chatty: 1 latest + 2 history each
    assert done.steps == sum(before[w].get("operation_outputs", 0) for w in OLD)
    after = _rows(database_url)
    assert not set(OLD) & set(after), after
    for kept in KEPT:  # active, recent, and the finished child of a running parent
        assert after[kept] == before[kept]
    assert app.prune("30d").workflows == 0


def test_prune_by_status_and_its_checks(app: pgflow.App, database_url: str) -> None:
    assert app.prune("30d", status="ERROR").workflows == 1
    assert "olderr" not in _rows(database_url)
    with pytest.raises(ConfigurationError, match="only finished workflows"):
        app.prune("30d", status="PENDING")
    with pytest.raises(ConfigurationError, match="not a duration"):
        app.prune("a month")


def test_cli_prune(app: pgflow.App, database_url: str) -> None:
    runner = CliRunner()

    def cli(*args: str, code: int = 0) -> Any:
        result = runner.invoke(
            main,
            list(args),
            env={"PGFLOW_DATABASE_URL": database_url, "PGFLOW_LOG_LEVEL": "warning"},
        )
        assert result.exit_code == code, (result.output, result.exception)
        return result.output

    before = _rows(database_url)
    dry = cli("prune", "--older-than", "30d", "--dry-run")
    assert f"{len(OLD)} workflow(s) ended more than 30d ago would be deleted" in dry
    assert _rows(database_url) == before
    assert "not a duration" in cli("prune", "--older-than", "30 days", code=2)
    out = cli(
        "prune", "--older-than", "30d", "--status", "SUCCESS,ERROR", "--yes", "--batch-size", "4"
    )
    assert f"deleted {len(OLD)} workflow(s)" in out and "2 batch(es)" in out
    assert "prune: 4 of about 6 deleted" in out
    assert not set(OLD) & set(_rows(database_url))
    assert "0 workflow(s) ended more than 30d ago: nothing to delete" in cli(
        "prune", "--older-than", "30d"
    )


def test_a_worker_applies_the_retention_setting(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgflow.worker import upkeep

    monkeypatch.setattr(upkeep, "RETENTION_EVERY", 0.2)
    app = _make(database_url, retention="30d")
    try:
        with running_worker(app, "jobs"):
            wait_for(
                lambda: not set(OLD) & set(_rows(database_url)),
                timeout=15,
                what="the automatic prune",
            )
        left = _rows(database_url)
        assert set(KEPT) <= set(left)
    finally:
        app.cancel("wp")
        app.shutdown(timeout=5)


def test_the_retention_setting_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="PGFLOW_RETENTION"):
        pgflow.Settings.from_env(environ={"PGFLOW_RETENTION": "monthly"})
    assert pgflow.Settings.from_env(environ={"PGFLOW_RETENTION": "30d"}).retention == "30d"
