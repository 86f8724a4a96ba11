"""Pausing a queue: every worker stops claiming from it within about a second, running work
finishes, it stays paused across worker restarts, and resuming lets the claims go on."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import pgflow
from pgflow.cli import main
from tests.apps import MakeApp
from tests.inprocess import running_worker, wait_for
from tests.processes import run_pgflow

BURST = ("worker", "-A", "tests.mgmt_app", "--burst", "-P", "1", "-c", "2")


@pytest.fixture
def app(make_app: MakeApp) -> pgflow.App:
    return make_app("pause-tests")


def test_a_paused_queue_is_not_claimed_until_resumed(app: pgflow.App, database_url: str) -> None:
    q = app.queue("mail")
    other = app.queue("other")
    release = threading.Event()

    @app.workflow(name="send")
    def send(n: int) -> int:
        if n == 0:
            assert release.wait(20)
        return n

    try:
        with pgflow.Client(database_url) as client, running_worker(app):
            running = q.enqueue(send, 0)
            wait_for(lambda: running.status().status is pgflow.Status.PENDING, what="run")
            assert client.pause_queue("mail") is True
            assert client.pause_queue("mail") is False  # already paused
            time.sleep(1.2)  # every worker reads the paused queues at least once a second
            held = [q.enqueue(send, n) for n in range(1, 4)]
            elsewhere = other.enqueue(send, 9)
            assert elsewhere.result(timeout=10) == 9  # other queues flow
            time.sleep(1.5)
            assert {h.status().status for h in held} == {pgflow.Status.ENQUEUED}
            release.set()
            assert running.result(timeout=10) == 0  # in-flight work finished
            [info] = [i for i in client.queue_report()[0] if i.name == "mail"]
            assert info.paused and info.paused_at is not None and info.enqueued == 3
            assert client.resume_queue("mail") is True
            t = time.monotonic()
            assert [h.result(timeout=10) for h in held] == [1, 2, 3]
            resumed_in = time.monotonic() - t
            print(f"\nresumed queue drained 3 workflows {resumed_in:.2f}s after the resume")
            assert resumed_in < 3.0
    finally:
        release.set()


def test_pause_survives_a_worker_restart_and_the_cli_shows_it(
    database_url: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    env = {"PGFLOW_DATABASE_URL": database_url, "PGFLOW_LOG_LEVEL": "warning"}

    def cli(*args: str, code: int = 0) -> Any:
        result = runner.invoke(main, list(args), env=env)
        assert result.exit_code == code, (result.output, result.exception)
        return result

    assert "queue jobs paused" in cli("queues", "pause", "jobs").output
    with pgflow.Client(database_url) as client:
        h = client.enqueue("jobs", "double", 21)
    report = json.loads(cli("queues", "--json").output)
    [jobs] = [q for q in report["queues"] if q["name"] == "jobs"]
    assert jobs["paused"] is True and jobs["enqueued"] == 1
    table = cli("queues").output
    assert "jobs (paused)" in table and "pgflow queues resume jobs" in table
    # A worker started now (a restart) finds the queue paused: its burst ends, saying why.
    burst = run_pgflow(
        *BURST,
        "--log-format",
        "json",
        env={**env, "PATH": "/usr/bin:/bin", "PGFLOW_LOG_LEVEL": "info"},
        timeout=120,
    )
    assert burst.returncode == 0, burst.stderr
    out = burst.stdout + burst.stderr
    assert "left: queue jobs is paused (`pgflow queues resume jobs`)" in out, out
    banner = [json.loads(line) for line in burst.stderr.splitlines() if '"worker_starting"' in line]
    assert banner and banner[0]["paused"] == "jobs"
    with pgflow.Client(database_url) as client:
        assert client.retrieve(h.workflow_id).status().status is pgflow.Status.ENQUEUED
    assert "queue jobs resumed" in cli("queues", "resume", "jobs").output
    again = run_pgflow(*BURST, env={**env, "PATH": "/usr/bin:/bin"}, timeout=120)
    assert again.returncode == 0, again.stderr
    with pgflow.Client(database_url) as client:
        assert client.retrieve(h.workflow_id).result(timeout=5) == 42
