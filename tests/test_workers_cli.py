"""`pgflow workers` (live executors and what each runs, then stale ones) and `pgflow explain`
through click's CliRunner, against a real in-process worker running a blocked workflow."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import pgflow
from pgflow.cli import main
from tests.apps import MakeApp
from tests.inprocess import running_worker, wait_for


@pytest.fixture
def app(make_app: MakeApp) -> pgflow.App:
    return make_app("operate", app_version="ops-1")


@pytest.fixture
def cli(database_url: str) -> Any:
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(
            main,
            list(args),
            env={"PGFLOW_DATABASE_URL": database_url, "PGFLOW_LOG_LEVEL": "warning"},
        )
        assert result.exit_code == code, (result.output, result.exception)
        return result

    return run


def held(app: pgflow.App, gate: threading.Event) -> Any:
    @app.step(name="wait_for_gate")
    def wait_for_gate() -> bool:
        return gate.wait(30)

    @app.workflow(name="held")
    def held_wf() -> bool:
        return wait_for_gate()

    return held_wf


def stale_executor(url: str, workflow_id: str) -> None:
    """An executor on another machine whose heartbeat stopped a minute ago, holding a
    workflow (not reaped yet: a live executor reaps only after heartbeating for a timeout)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgflow.executors (executor_id, hostname, pid, app_version, "
            "kind, queues, started_at, heartbeat_at) VALUES ('stale-1', 'far-host', "
            "4242, 'ops-0', 'worker', ARRAY['jobs'], pgflow.clock() - interval '1 hour', "
            "pgflow.clock() - interval '60 seconds')"
        )
        conn.execute(
            "UPDATE pgflow.workflow_status SET status = 'PENDING', "
            "executor_id = 'stale-1', started_at = pgflow.clock() - interval '70 s' "
            "WHERE workflow_id = %s",
            (workflow_id,),
        )


def test_workers_lists_live_and_stale_executors_with_their_work(
    app: pgflow.App, cli: Any, database_url: str
) -> None:
    jobs = app.queue("jobs", concurrency=1)
    gate = threading.Event()
    wf = held(app, gate)
    orphan = app.queue("other").options(delay=3600).enqueue(wf)
    stale_executor(database_url, orphan.workflow_id)
    with running_worker(app, "jobs") as worker:
        h = jobs.enqueue(wf)
        wait_for(lambda: h.status().status is pgflow.Status.PENDING, what="the workflow to run")

        found = app.workers()
        assert [(w.executor_id, w.alive) for w in found] == [
            (worker.executor_id, True),
            ("stale-1", False),
        ]
        live, stale = found
        assert (live.kind, live.queues, live.app_version, live.pid) == (
            "worker",
            ["jobs"],
            "ops-1",
            os.getpid(),
        )
        assert 0 <= live.heartbeat_age_s < 10
        [running] = live.workflows
        assert (running.workflow_id, running.name, running.queue_name) == (
            h.workflow_id,
            "held",
            "jobs",
        )
        assert running.running_s is not None and 0 <= running.running_s < 10
        assert 60 <= stale.heartbeat_age_s < 70 and stale.hostname == "far-host"
        assert [a.workflow_id for a in stale.workflows] == [orphan.workflow_id]

        table = cli("workers").output
        lines = table.splitlines()
        assert lines[0].split() == [
            "EXECUTOR",
            "HOST",
            "PID",
            "VERSION",
            "KIND",
            "QUEUES",
            "HEARTBEAT",
            "STARTED",
            "RUNNING",
        ]
        assert lines[1].startswith(worker.executor_id) and " jobs " in lines[1]
        assert "running now:" in table and h.workflow_id in table
        assert "stale heartbeat (dead, not reaped yet):" in table and "stale-1" in table
        assert "held by them:" in table and orphan.workflow_id in table

        listed = json.loads(cli("workers", "--json").output)["workers"]
        assert [w["executor_id"] for w in listed] == [worker.executor_id, "stale-1"]
        assert listed[0]["workflows"][0]["workflow_id"] == h.workflow_id
        assert listed[1]["alive"] is False and listed[1]["hostname"] == "far-host"

        # And the workflow the stale executor holds: its owner is dead.
        dead = json.loads(cli("explain", orphan.workflow_id, "--json").output)
        assert [r["code"] for r in dead["reasons"]] == ["owner_dead"]
        assert dead["reasons"][0]["numbers"]["executor_id"] == "stale-1"
        gate.set()
        assert h.result(timeout=10) is True


def test_reaped_executors_are_listed_as_died_recently_and_the_record_is_bounded(
    app: pgflow.App, cli: Any, database_url: str
) -> None:
    from pgflow.recovery import KEEP_DEATHS, reap_dead_executors

    wf = held(app, threading.Event())
    orphan = app.queue("other").options(delay=3600).enqueue(wf)
    stale_executor(database_url, orphan.workflow_id)
    with psycopg.connect(database_url, autocommit=True) as conn:  # older deaths on record
        conn.execute(
            "INSERT INTO pgflow.executor_deaths SELECT 'old-' || i, 'h', i, NULL, "
            "'worker', pgflow.clock() - interval '2 days', pgflow.clock() - "
            "interval '2 days', 'x', 0 FROM generate_series(1, 3) AS i"
        )
        conn.execute(
            "INSERT INTO pgflow.executor_deaths SELECT 'recent-' || i, 'h', i, NULL, "
            "'worker', pgflow.clock() - interval '2 hours', pgflow.clock() - "
            "i * interval '1 second' - interval '1 hour', 'x', 0 "
            "FROM generate_series(1, %s) AS i",
            (KEEP_DEATHS,),
        )
    assert reap_dead_executors(app, "reaper-1", ["stale-1"]) == ["stale-1"]

    dead = app.dead_workers(limit=1000)
    # the newest kept, none past a day: the new death and the newest KEEP_DEATHS - 1 others
    assert len(dead) == KEEP_DEATHS
    assert {d.executor_id for d in dead} == {"stale-1"} | {
        f"recent-{i}" for i in range(1, KEEP_DEATHS)
    }
    first = dead[0]
    assert (
        first.executor_id,
        first.hostname,
        first.pid,
        first.app_version,
        first.kind,
        first.reaped_by,
        first.released,
    ) == ("stale-1", "far-host", 4242, "ops-0", "worker", "reaper-1", 1)
    assert 0 <= first.died_ago_s < 10
    assert orphan.status().status is pgflow.Status.ENQUEUED  # handed back to its queue

    table = cli("workers").output
    assert "died recently:" in table and "HANDED BACK" in table
    row = next(line for line in table.splitlines() if line.startswith("stale-1"))
    assert "far-host" in row and "reaper-1" in row and row.split()[-1] == "1"
    listed = json.loads(cli("workers", "--json").output)["died_recently"]
    assert listed[0]["executor_id"] == "stale-1" and listed[0]["released"] == 1


def test_explain_cli_says_why_in_a_paragraph_or_json(app: pgflow.App, cli: Any) -> None:
    jobs = app.queue("jobs", concurrency=1)
    gate = threading.Event()
    wf = held(app, gate)
    with running_worker(app):
        first = jobs.enqueue(wf)
        wait_for(lambda: first.status().status is pgflow.Status.PENDING, what="it to run")
        second = jobs.enqueue(wf)
        text = cli("explain", second.workflow_id).output
        as_json = json.loads(cli("explain", second.workflow_id, "--json").output)
        running = cli("explain", first.workflow_id).output
        gate.set()
        assert second.result(timeout=10) is True
    flat = " ".join(text.split())
    assert flat.startswith(f"Workflow {second.workflow_id} (held) is ENQUEUED on queue 'jobs'.")
    assert f"The queue's concurrency is 1 of 1, taken by {first.workflow_id} (for " in flat
    assert max(len(line) for line in text.splitlines()) <= 100
    assert as_json["workflow_id"] == second.workflow_id and as_json["status"] == "ENQUEUED"
    [full] = as_json["reasons"]
    assert full["code"] == "concurrency_full"
    assert full["numbers"]["running"] == 1 and full["numbers"]["concurrency"] == 1
    assert full["numbers"]["taken_by"][0]["workflow_id"] == first.workflow_id
    assert "in its step 1 for " in " ".join(running.split())

    done = " ".join(cli("explain", second.workflow_id).output.split())
    assert "It is done: SUCCESS at " in done
    assert cli("explain", "nope", code=1).output.strip() == "pgflow: no workflow has id 'nope'"
