"""The operator commands through click's CliRunner, and each once as a real subprocess
(``python -m pgflow.cli``). They use a Client: nothing here imports the app for them."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import pgflow
from pgflow.cli import main
from tests import mgmt_app
from tests.inprocess import running_worker
from tests.processes import run_pgflow


@pytest.fixture
def app(database_url: str) -> Iterator[pgflow.App]:
    a = mgmt_app.app
    a.settings = a.settings.replace(database_url=database_url)
    yield a
    a.shutdown(timeout=5)
    a._stop.clear()
    a._executor = None


@pytest.fixture
def cli(database_url: str) -> Any:
    runner = CliRunner()

    def run(*args: str, code: int = 0, url: str | None = None) -> Any:
        result = runner.invoke(
            main,
            list(args),
            env={"PGFLOW_DATABASE_URL": url or database_url, "PGFLOW_LOG_LEVEL": "warning"},
        )
        assert result.exit_code == code, (result.output, result.exception)
        return result

    return run


def run_real(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGFLOW_DATABASE_URL": database_url, "PGFLOW_LOG_LEVEL": "warning"}
    return run_pgflow(*args, env=env)


def test_workflows_list_and_show(app: pgflow.App, cli: Any) -> None:
    assert app.options(workflow_id="w1").call(mgmt_app.double, 4) == 8
    mgmt_app.jobs.options(workflow_id="w2").enqueue(mgmt_app.double, 5)

    table = cli("workflows", "list").output
    assert table.splitlines()[0].split()[:4] == ["WORKFLOW_ID", "NAME", "STATUS", "QUEUE"]
    assert "w1" in table and "w2" in table
    listed = json.loads(cli("workflows", "list", "--json", "--status", "ENQUEUED").output)
    assert [w["workflow_id"] for w in listed] == ["w2"]
    assert listed[0]["queue_name"] == "jobs" and listed[0]["inputs"] == {"args": [5], "kwargs": {}}
    assert (
        json.loads(
            cli(
                "workflows", "list", "--json", "--queue", "jobs", "--status", "success,error"
            ).output
        )
        == []
    )
    assert len(json.loads(cli("workflows", "list", "--json", "--limit", "1").output)) == 1

    shown = cli("workflows", "show", "w1").output
    assert "SUCCESS" in shown and "tests.mgmt_app.double_step" in shown and "steps:" in shown
    detail = json.loads(cli("workflows", "show", "w1", "--json").output)
    assert detail["workflow"]["output"] == 8
    assert [s["name"] for s in detail["steps"]] == ["tests.mgmt_app.double_step"]
    assert detail["steps"][0]["output"] == 8 and detail["children"] == []

    missing = cli("workflows", "show", "nope", code=1)
    assert missing.output.strip() == "pgflow: no workflow has id 'nope'"


def test_cancel_resume_fork(app: pgflow.App, cli: Any) -> None:
    queued = mgmt_app.jobs.options(workflow_id="c1").enqueue(mgmt_app.double, 1)
    assert app.options(workflow_id="done").call(mgmt_app.double, 3) == 6

    assert cli("workflows", "cancel", "c1").output.strip() == "c1: CANCELLED"
    both = cli("workflows", "cancel", "c1", "nope", code=1)
    assert "c1: CANCELLED" in both.output and "no workflow has id 'nope'" in both.output
    assert json.loads(cli("workflows", "resume", "c1", "--json").output) == {
        "c1": {"status": "ENQUEUED"}
    }
    # A succeeded workflow is left as it is (as in DBOS): no error (before: "fork it", exit 1).
    assert cli("workflows", "resume", "done").output.strip() == "done: SUCCESS"

    forked = cli("workflows", "fork", "done", "--step", "2", "--workflow-id", "f1")
    assert forked.output.strip() == "f1"
    assert json.loads(cli("workflows", "fork", "done", "--json").output)["forked_from"] == "done"
    with running_worker(app):
        assert queued.result(timeout=10) == 2
    app.recover_now()  # the forks are ownerless PENDING: a launched executor adopts them
    assert app.retrieve("f1").result(timeout=10) == 6
    assert [s.step_id for s in app.steps("f1")] == [1]


def test_enqueue_and_queues(app: pgflow.App, cli: Any, database_url: str) -> None:
    # No worker ever ran: the enqueue works (the row has no version yet) and says so.
    early = cli("enqueue", "jobs", "double", "[1]")
    assert "no worker has registered yet" in early.output
    refused = cli("enqueue", "jobs", "double", "[1]", "--app-version", "old", "--strict", code=1)
    assert "app_version 'old'" in refused.output and "nothing was enqueued" in refused.output
    first = cli("enqueue", "jobs", "double", "[20]", "--dedup-id", "d").stdout.strip()
    dup = cli("enqueue", "jobs", "double", "[20]", "--dedup-id", "d", code=1)
    assert first in dup.output and "dedup_id" in dup.output
    later = json.loads(
        cli("enqueue", "jobs", "double", '{"x": 7}', "--delay", "60", "--json").stdout
    )
    assert cli("enqueue", "jobs", "double", "not json", code=2).exit_code == 2

    report = json.loads(cli("queues", "--json").output)
    [jobs] = report["queues"]
    assert (jobs["name"], jobs["enqueued"], jobs["delayed"], jobs["pending"]) == ("jobs", 3, 1, 0)
    assert {(s["app_version"], s["name"], s["reason"], s["count"]) for s in report["stranded"]} == {
        (None, "double", "no_worker", 3)
    }
    table = cli("queues").output
    assert table.startswith("QUEUE") and "no worker" in table and "pgflow worker" in table

    with running_worker(app):
        assert app.retrieve(first).result(timeout=10) == 40
        assert app.retrieve(first).status().app_version == "mgmt-v1"
        # A name no registered version knows: a warning, or a refusal with --strict.
        unknown = cli("enqueue", "jobs", "tasks.nope", "[1]")
        assert "no registered version knows workflow 'tasks.nope'" in unknown.output
        nope = unknown.stdout.strip()
        strict = cli("enqueue", "jobs", "tasks.nope", "[1]", "--strict", code=1)
        assert "nothing was enqueued" in strict.output
        # A workflow that started on a version no live worker runs (a parked one, say).
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE pgflow.workflow_status SET app_version = 'old', "
                "started_at = now(), not_before = NULL WHERE workflow_id = %s",
                (later["workflow_id"],),
            )
        report = json.loads(cli("queues", "--json").output)
        assert report["queues"][0]["live_workers"] == 1
        reasons = {
            (s["app_version"], s["name"], s["reason"], s["count"]): s["remedy"]
            for s in report["stranded"]
        }
        assert set(reasons) == {
            (None, "tasks.nope", "unknown_name", 1),
            ("old", "double", "wrong_version", 1),
        }
        assert (
            "pgflow workflows retarget --from old --to mgmt-v1"
            in reasons[("old", "double", "wrong_version", 1)]
        )
        dry = cli("workflows", "retarget", "--from", "old", "--to", "mgmt-v1", "--dry-run")
        assert "1 workflow(s) of version old" in dry.output and "would move" in dry.output
        assert app.retrieve(later["workflow_id"]).status().app_version == "old"
        cli("workflows", "retarget", "--from", "old", "--to", "nowhere", "--yes", code=1)
        moved = cli("workflows", "retarget", "--from", "old", "--to", "mgmt-v1", "--yes")
        assert "moved 1 workflow(s)" in moved.output
        assert app.retrieve(later["workflow_id"]).result(timeout=10) == 14
    assert app.retrieve(nope).status().status is pgflow.Status.ENQUEUED
    versions = json.loads(cli("versions", "--json").output)["versions"]
    mine = [v for v in versions if v["app_version"] == "mgmt-v1"]
    assert len(mine) == 1 and mine[0]["work"]["SUCCESS"] == 3 and mine[0]["workflows"] == 1
    assert mine[0]["first_seen"] is not None and mine[0]["live_executors"] == 0
    assert any(v["app_version"] is None and v["work"] == {"ENQUEUED": 1} for v in versions)
    assert "MGMT-V1" in cli("versions").output.upper()


def test_errors_are_one_line_that_say_what_to_do(cli: Any, pg_server_url: str) -> None:
    unreachable = cli(
        "workflows", "list", code=1, url="postgresql://someone:s3cret@127.0.0.1:1/nowhere"
    )
    line = unreachable.output.strip()
    assert line.startswith("pgflow: cannot reach the database at 127.0.0.1:1/nowhere")
    assert "s3cret" not in line and len(line.splitlines()) == 1
    unmigrated = cli("queues", code=1, url=pg_server_url)
    assert "run `pgflow migrate`" in unmigrated.output


def test_every_command_as_a_real_subprocess(app: pgflow.App, database_url: str) -> None:
    assert app.options(workflow_id="s1").call(mgmt_app.double, 2) == 4
    enq = run_real(
        database_url,
        "enqueue",
        "jobs",
        "double",
        "[3]",
        "--app-version",
        "mgmt-v1",
        "--workflow-id",
        "s2",
    )
    assert (enq.returncode, enq.stdout.strip()) == (0, "s2"), enq.stderr
    listed = run_real(database_url, "workflows", "list", "--json")
    assert {w["workflow_id"] for w in json.loads(listed.stdout)} == {"s1", "s2"}
    shown = run_real(database_url, "workflows", "show", "s1")
    assert shown.returncode == 0 and "double_step" in shown.stdout
    assert run_real(database_url, "workflows", "cancel", "s2").stdout.strip() == "s2: CANCELLED"
    assert run_real(database_url, "workflows", "resume", "s2").stdout.strip() == "s2: ENQUEUED"
    assert (
        run_real(
            database_url, "workflows", "fork", "s1", "--step", "2", "--workflow-id", "s3"
        ).stdout.strip()
        == "s3"
    )
    queues = run_real(database_url, "queues", "--json")
    assert json.loads(queues.stdout)["queues"][0]["enqueued"] == 1
    missing = run_real(database_url, "workflows", "show", "nope")
    assert (missing.returncode, missing.stderr.strip()) == (1, "pgflow: no workflow has id 'nope'")
