"""Bulk cancel and resume by filter (pgflow/bulk.py): the library calls and the CLI."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import pgflow
from pgflow.cli import main
from pgflow.errors import ConfigurationError
from tests.apps import MakeApp
from tests.inprocess import wait_for


@pytest.fixture
def app(make_app: MakeApp) -> pgflow.App:
    return make_app("bulk-tests")


def _statuses(database_url: str) -> dict[str, str]:
    with psycopg.connect(database_url) as conn:
        return dict(
            conn.execute("SELECT workflow_id, status FROM pgflow.workflow_status").fetchall()
        )


def _age(database_url: str, ids: list[str], days: int) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE pgflow.workflow_status SET created_at = now() - %s * interval "
            "'1 day' WHERE workflow_id = ANY(%s)",
            (days, ids),
        )


def _declare(app: pgflow.App) -> tuple[Any, Any, Any]:
    jobs, other, kids = app.queue("jobs"), app.queue("other"), app.queue("kids")

    @app.workflow(name="noop")
    def noop(x: int) -> int:
        return x

    @app.workflow(name="parent")
    def parent() -> str:
        kids.options(workflow_id="kid").enqueue(noop, 0)
        pgflow.recv(timeout=30)
        return "done"

    for i in range(5):
        jobs.options(workflow_id=f"j{i}").enqueue(noop, i)
    for i in range(3):
        other.options(workflow_id=f"o{i}").enqueue(noop, i)
    return noop, parent, jobs


def test_cancel_by_filter_counts_then_cancels_exactly_those(
    app: pgflow.App, database_url: str
) -> None:
    _declare(app)
    before = _statuses(database_url)
    assert app.count_matching("cancel", status="ENQUEUED", queue="jobs") == 5
    assert _statuses(database_url) == before  # counting changes nothing

    seen: list[int] = []
    done = app.cancel_matching(
        status="ENQUEUED", queue="jobs", batch=2, on_batch=lambda r: seen.append(r.matched)
    )
    assert (done.matched, done.changed, done.children, done.batches) == (5, 5, 0, 3)
    assert seen == [2, 4, 5]
    after = _statuses(database_url)
    assert {after[f"j{i}"] for i in range(5)} == {"CANCELLED"}
    assert {after[f"o{i}"] for i in range(3)} == {"ENQUEUED"}
    assert app.count_matching("cancel", queue="jobs") == 0


def test_cancel_by_name_takes_the_children_of_a_running_parent(
    app: pgflow.App, database_url: str
) -> None:
    _, parent, _ = _declare(app)
    handle = app.start(parent)
    wait_for(lambda: _statuses(database_url).get("kid") == "ENQUEUED", what="the child")
    done = app.cancel_matching(name="parent")
    assert (done.changed, done.children) == (1, 1)
    assert _statuses(database_url)["kid"] == "CANCELLED"
    # The NOTIFY wakes the parent in recv: it ends now, not after its 30 s.
    wait_for(lambda: handle.status().status.value == "CANCELLED", timeout=10, what="the parent")


def test_older_than_takes_only_old_ones(app: pgflow.App, database_url: str) -> None:
    _declare(app)
    _age(database_url, ["j0", "o1"], days=3)
    assert app.count_matching("cancel", older_than="2d") == 2
    assert app.cancel_matching(older_than="2d").changed == 2
    states = _statuses(database_url)
    assert [w for w, s in sorted(states.items()) if s == "CANCELLED"] == ["j0", "o1"]


def test_resume_by_filter(app: pgflow.App, database_url: str) -> None:
    _declare(app)
    app.cancel_matching(everything=True)
    assert app.count_matching("resume", queue="jobs") == 5
    done = app.resume_matching(queue="jobs", batch=3)
    assert (done.matched, done.changed, done.batches) == (5, 5, 2)
    states = _statuses(database_url)
    assert {states[f"j{i}"] for i in range(5)} == {"ENQUEUED"}
    assert {states[f"o{i}"] for i in range(3)} == {"CANCELLED"}


def test_resume_leaves_one_whose_dedup_id_is_taken(app: pgflow.App, database_url: str) -> None:
    noop, _, jobs = _declare(app)
    jobs.options(workflow_id="d1", dedup_id="same").enqueue(noop, 1)
    app.cancel("d1")
    jobs.options(workflow_id="d2", dedup_id="same").enqueue(noop, 2)  # holds it now
    done = app.resume_matching(status="CANCELLED", queue="jobs")
    assert (done.matched, done.changed, done.unchanged) == (1, 0, 1)
    assert _statuses(database_url)["d1"] == "CANCELLED"


def test_filters_are_checked(app: pgflow.App) -> None:
    with pytest.raises(ConfigurationError, match="all=True"):
        app.cancel_matching()
    with pytest.raises(ConfigurationError, match="drop it"):
        app.cancel_matching(everything=True, queue="jobs")
    with pytest.raises(ConfigurationError, match="ENQUEUED, PENDING"):
        app.cancel_matching(status="SUCCESS")
    with pytest.raises(ConfigurationError, match="not a duration"):
        app.resume_matching(older_than="yesterday")


@pytest.fixture
def cli(database_url: str) -> Any:
    runner = CliRunner()

    def run(*args: str, code: int = 0, input: str | None = None) -> Any:
        result = runner.invoke(
            main,
            list(args),
            input=input,
            env={"PGFLOW_DATABASE_URL": database_url, "PGFLOW_LOG_LEVEL": "warning"},
        )
        assert result.exit_code == code, (result.output, result.exception)
        return result

    return run


def test_cli_cancel_and_resume_by_filter(app: pgflow.App, cli: Any, database_url: str) -> None:
    _declare(app)
    before = _statuses(database_url)
    dry = cli("workflows", "cancel", "--status", "ENQUEUED", "--queue", "jobs", "--dry-run")
    assert "5 workflow(s) match (status ENQUEUED, queue jobs)" in dry.output
    assert "nothing changed" in dry.output
    assert _statuses(database_url) == before

    refused = cli("workflows", "cancel", "--queue", "jobs", input="n\n", code=1)
    assert "Cancel 5 workflow(s)" in refused.output
    assert _statuses(database_url) == before

    done = cli(
        "workflows",
        "cancel",
        "--status",
        "ENQUEUED",
        "--queue",
        "jobs",
        "--yes",
        "--batch-size",
        "2",
    )
    assert "cancelled 5 workflow(s)" in done.output and "3 batch(es)" in done.output
    assert "cancel: 2 of about 5 done" in done.output  # the progress line
    states = _statuses(database_url)
    assert [w for w, s in sorted(states.items()) if s == "CANCELLED"] == [f"j{i}" for i in range(5)]

    resumed = cli("workflows", "resume", "--queue", "jobs", "--older-than", "0s", "--yes")
    assert "resumed 5 workflow(s)" in resumed.output
    assert all(s == "ENQUEUED" for s in _statuses(database_url).values())


def test_cli_refuses_no_filter_and_ids_with_filters(cli: Any) -> None:
    none = cli("workflows", "cancel", code=2)
    assert "--all" in none.output
    both = cli("workflows", "resume", "w1", "--queue", "jobs", code=2)
    assert "not both" in both.output
    bad = cli("workflows", "cancel", "--older-than", "soon", code=2)
    assert "not a duration" in bad.output
    nothing = cli("workflows", "cancel", "--all", "--yes")
    assert "no workflow matches" in nothing.output
