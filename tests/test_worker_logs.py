"""A worker says what it does: one line per workflow start and success, a failure at error
level with its traceback, one warning per step retry; ``workflows show`` gives the recorded
traceback and each step's attempts; ``--quiet`` keeps only warnings and errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import pgflow
from pgflow.cli import main
from pgflow.testing import use_database
from tests import logging_app
from tests.processes import Worker


@pytest.fixture
def app(database_url: str) -> Iterator[pgflow.App]:
    with use_database(logging_app.app, database_url) as a:
        yield a


def show(database_url: str, workflow_id: str, *args: str) -> str:
    result = CliRunner().invoke(
        main,
        ["workflows", "show", workflow_id, *args],
        env={"PGFLOW_DATABASE_URL": database_url, "PGFLOW_LOG_LEVEL": "warning"},
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_workflow_lines_retries_and_tracebacks(
    app: pgflow.App, database_url: str, tmp_path: Path
) -> None:
    jobs = logging_app.jobs
    jobs.options(workflow_id="fine-1").enqueue(logging_app.fine)
    jobs.options(workflow_id="flaky-1").enqueue(logging_app.flaky)
    jobs.options(workflow_id="broken-1").enqueue(logging_app.broken)
    worker = Worker(database_url, tmp_path, "--burst", "-P", "1", app="tests.logging_app")
    assert worker.wait(60) == 0, worker.stderr()[-3000:]

    started = {e["workflow_id"]: e for e in worker.events("workflow_started")}
    assert sorted(started) == ["broken-1", "fine-1", "flaky-1"]
    assert started["fine-1"]["workflow_name"] == "tests.logging_app.fine"
    assert started["fine-1"]["queue"] == "jobs" and started["fine-1"]["level"] == "info"

    succeeded = {e["workflow_id"]: e for e in worker.events("workflow_succeeded")}
    assert sorted(succeeded) == ["fine-1", "flaky-1"]
    assert all(isinstance(e["duration_ms"], int) for e in succeeded.values())
    assert succeeded["flaky-1"]["duration_ms"] >= 100  # two retry delays: 50 + 100 ms

    [failed] = worker.events("workflow_failed")
    assert failed["workflow_id"] == "broken-1" and failed["level"] == "error"
    assert "Traceback" in failed["exception"] and "in broken" in failed["exception"]
    assert "hunter2" not in json.dumps(failed) and "ValueError" in failed["error"]

    retries = worker.events("step_retrying")
    assert [(e["attempt"], e["max_attempts"], e["next_delay_s"]) for e in retries] == [
        (1, 4, 0.05),
        (2, 4, 0.1),
    ]
    assert retries[0]["level"] == "warning" and retries[0]["workflow_id"] == "flaky-1"
    assert retries[0]["step"] == "tests.logging_app.flaky_step"
    assert retries[1]["error"] == "ConnectionError: flaky attempt 2"
    assert retries[0]["error_at"].endswith("logging_app.py:20")

    shown = show(database_url, "broken-1")
    assert "traceback:" in shown and "in broken" in shown and "hunter2" not in shown
    detail = json.loads(show(database_url, "broken-1", "--json"))
    assert "Traceback" in detail["workflow"]["error"]["traceback"]

    shown = show(database_url, "flaky-1")
    header, row = shown.split("steps:")[1].strip().splitlines()[:2]
    assert header.split()[:4] == ["STEP", "NAME", "RESULT", "TRIES"]
    assert row.split()[:4] == ["1", "tests.logging_app.flaky_step", "ok", "3"]
    assert json.loads(show(database_url, "flaky-1", "--json"))["steps"][0]["attempts"] == 3
    assert json.loads(show(database_url, "fine-1", "--json"))["steps"] == []


def test_quiet_keeps_only_failures_and_retries(
    app: pgflow.App, database_url: str, tmp_path: Path
) -> None:
    logging_app.jobs.options(workflow_id="fine-2").enqueue(logging_app.fine)
    logging_app.jobs.options(workflow_id="flaky-2").enqueue(logging_app.flaky)
    logging_app.jobs.options(workflow_id="broken-2").enqueue(logging_app.broken)
    worker = Worker(
        database_url, tmp_path, "--burst", "-P", "1", "--quiet", app="tests.logging_app"
    )
    assert worker.wait(60) == 0, worker.stderr()[-3000:]
    levels = {e["level"] for e in worker.events()}
    assert levels <= {"warning", "error"}, worker.stderr()[-3000:]
    assert len(worker.events("step_retrying")) == 2
    assert [e["workflow_id"] for e in worker.events("workflow_failed")] == ["broken-2"]
