"""Metrics and health: ``pgflow worker --metrics-port`` as a real subprocess, scraped over HTTP.

The worker runs workflows that succeed, fail and retry in two worker processes; the scrape adds
up both processes' counters (prometheus_client multiprocess mode) and reads the queue gauges
from the database. Readiness follows the database: a private cluster is stopped and started.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import pgflow
from pgflow import metrics
from pgflow.testing import use_database
from tests import metrics_app
from tests.private_cluster import free_port, start_private_cluster
from tests.processes import Worker, run_python, started_workers, wait_for
from tests.test_worker import FAST, statuses

ADDS = "tests.metrics_app.adds"
FAILS = "tests.metrics_app.fails"
FLAKY = "tests.metrics_app.flaky"


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())


def samples(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, body = get(port, "/metrics")
    assert status == 200, body
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            found[(s.name, frozenset(s.labels.items()))] = s.value
    return found


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return found.get((name, frozenset(labels.items())))


@pytest.fixture
def app(database_url: str) -> Iterator[pgflow.App]:
    with use_database(metrics_app.app, database_url) as a:
        yield a


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """``worker(url, port, *args)``: a worker of tests.metrics_app serving ``port``."""
    with started_workers(None, tmp_path, app="tests.metrics_app") as start:

        def on_port(url: str, port: int, *args: str) -> Worker:
            return start("--metrics-port", str(port), *FAST, *args, url=url)

        yield on_port


def health(port: int, path: str = "/healthz") -> tuple[int, dict[str, Any]]:
    status, body = get(port, path)
    return status, json.loads(body)


@pytest.mark.slow
def test_worker_metrics_add_up_every_process(
    app: pgflow.App, database_url: str, worker: Callable[..., Worker]
) -> None:
    for n in range(3):
        metrics_app.jobs.enqueue(metrics_app.adds, n)
    metrics_app.jobs.enqueue(metrics_app.fails)
    metrics_app.jobs.enqueue(metrics_app.flaky)
    port = free_port()
    w = worker(database_url, port, "-P", "2", "-c", "2", "-Q", "jobs")
    wait_for(
        "five workflows done",
        lambda: (
            sum(r["status"] in ("SUCCESS", "ERROR") for r in statuses(database_url).values()) == 5
        ),
        30,
    )

    def counted() -> Any:
        found = samples(port)
        done = value(
            found, "pgflow_workflows_completed_total", queue="jobs", workflow=ADDS, status="SUCCESS"
        )
        return found if done == 3 else None

    found = wait_for("the completions in the scrape", counted, 10, interval=0.2)
    assert value(found, "pgflow_claims_total", queue="jobs") == 5
    assert (
        value(
            found, "pgflow_workflows_completed_total", queue="jobs", workflow=FAILS, status="ERROR"
        )
        == 1
    )
    assert (
        value(
            found,
            "pgflow_workflows_completed_total",
            queue="jobs",
            workflow=FLAKY,
            status="SUCCESS",
        )
        == 1
    )
    assert (
        value(
            found,
            "pgflow_workflow_duration_seconds_count",
            queue="jobs",
            workflow=ADDS,
            status="SUCCESS",
        )
        == 3
    )
    assert (
        value(
            found,
            "pgflow_workflow_duration_seconds_bucket",
            queue="jobs",
            workflow=ADDS,
            status="SUCCESS",
            le="+Inf",
        )
        == 3
    )
    assert (
        value(
            found,
            "pgflow_workflow_duration_seconds_sum",
            queue="jobs",
            workflow=ADDS,
            status="SUCCESS",
        )
        or 0
    ) > 0
    assert (
        value(
            found,
            "pgflow_step_duration_seconds_count",
            step="tests.metrics_app.add",
            status="success",
        )
        == 3
    )
    assert (
        value(
            found,
            "pgflow_step_duration_seconds_count",
            step="tests.metrics_app.explode",
            status="error",
        )
        == 1
    )
    assert value(found, "pgflow_step_retries_total", step="tests.metrics_app.flaky_step") == 1
    assert value(found, "pgflow_step_retries_total", step="tests.metrics_app.explode") is None
    # Read from the database at scrape time.
    assert value(found, "pgflow_database_up") == 1
    assert value(found, "pgflow_workflows", status="SUCCESS") == 4
    assert value(found, "pgflow_workflows", status="ERROR") == 1
    assert value(found, "pgflow_queue_enqueued", queue="jobs") == 0
    assert value(found, "pgflow_queue_paused", queue="jobs") == 0
    assert (value(found, "pgflow_live_executors") or 0) >= 2
    assert value(found, "pgflow_worker_processes_ready") == 2

    # Each worker process wrote its own files; the supervisor removes the folder at exit.
    folder = Path(w.events("metrics_listening")[0]["folder"])
    writers = {f.stem.rpartition("_")[2] for f in folder.glob("*.db")}
    assert len(writers) >= 2, sorted(folder.iterdir())

    status, body = health(port)
    assert status == 200 and body["live"] and body["ready"], body
    assert body["processes"]["ready"] == 2 and body["database"]["ok"]
    assert health(port, "/healthz/live")[0] == 200
    assert health(port, "/healthz/ready")[0] == 200
    assert get(port, "/nope")[0] == 404
    w.proc.terminate()
    assert w.wait(30) == 0
    assert not folder.exists()


@pytest.mark.slow
@pytest.mark.chaos
def test_readiness_follows_the_database(worker: Callable[..., Worker], tmp_path: Path) -> None:
    cluster = start_private_cluster()
    try:
        port = free_port()
        w = worker(cluster.url, port, "-P", "1", "-c", "1")
        wait_for("ready", lambda: _status(port) == 200, 30, interval=0.2)
        cluster.stop()
        wait_for("not ready", lambda: _status(port) == 503, 30, interval=0.2)
        _, body = health(port)
        assert body["live"] and not body["ready"] and not body["database"]["ok"], body
        assert body["database"]["error"]
        assert health(port, "/healthz/ready")[0] == 503
        assert health(port, "/healthz/live")[0] == 200  # an outage is not a reason to restart
        assert value(samples(port), "pgflow_database_up") == 0
        # Away until the worker process has seen the outage (not just one lost session).
        wait_for(
            "the worker to see the outage",
            lambda: w.events("database_unreachable"),
            60,
            interval=0.2,
        )
        cluster.start()
        wait_for("ready again", lambda: _status(port) == 200, 30, interval=0.2)

        def reconnected() -> Any:
            found = samples(port)
            return found if value(found, "pgflow_database_reconnects_total") else None

        found = wait_for("the reconnect counted", reconnected, 30, interval=0.3)
        assert (value(found, "pgflow_database_unreachable_seconds_total") or 0) > 0
        w.proc.terminate()
        assert w.wait(30) == 0
    finally:
        cluster.remove()


def _status(port: int) -> int | None:
    """The /healthz status, or None while nothing listens yet."""
    try:
        return get(port, "/healthz")[0]
    except OSError:
        return None


@pytest.mark.slow
@pytest.mark.chaos
def test_a_killed_process_is_counted_as_a_recovery(
    app: pgflow.App, database_url: str, worker: Callable[..., Worker], tmp_path: Path
) -> None:
    h = metrics_app.jobs.enqueue(metrics_app.crashes_once, str(tmp_path / "crashed"))
    port = free_port()
    w = worker(database_url, port, "-P", "1", "-c", "1", "-Q", "jobs")
    assert h.result(timeout=30) == "survived"

    def counted() -> Any:
        found = samples(port)
        done = value(
            found,
            "pgflow_workflows_completed_total",
            queue="jobs",
            workflow="tests.metrics_app.crashes_once",
            status="SUCCESS",
        )
        return found if done == 1 else None

    found = wait_for("the second run counted", counted, 10, interval=0.2)
    # The supervisor released the dead child's workflow back to its queue (its own files),
    # the new child claimed it again: the dead process's claim stays in the sum.
    assert value(found, "pgflow_recoveries_total", status="ENQUEUED") == 1
    assert value(found, "pgflow_claims_total", queue="jobs") == 2
    # The dead process's files were folded into the archive (no file per dead process).
    folder = Path(w.events("metrics_listening")[0]["folder"])
    dead = [e["pid"] for e in w.events("worker_process_exited")]
    assert len(dead) == 1
    assert not list(folder.glob(f"*_{dead[0]}.db"))
    assert (folder / "counter_archive.db").exists()
    w.proc.terminate()
    assert w.wait(30) == 0


def test_a_refused_final_write_is_counted(app: pgflow.App) -> None:
    from prometheus_client import REGISTRY

    from pgflow.outcomes import finish
    from pgflow.records import Outcome, Status

    def refused() -> float:
        return REGISTRY.get_sample_value("pgflow_fenced_writes_total", {"kind": "final"}) or 0.0

    before = refused()
    gone = Outcome(
        "no-such-workflow",
        uuid.uuid4(),
        Status.SUCCESS,
        executor_id="nobody",
        name="tests.metrics_app.adds",
    )
    assert finish(app, [gone]) == set()
    assert refused() == before + 1


def test_health_verdicts() -> None:
    from pgflow.health import DatabaseCheck
    from pgflow.worker.metrics_port import ProcessFacts, judge

    fine = ProcessFacts(
        expected=2,
        running=2,
        ready=2,
        silent_max_s=0.5,
        child_timeout=60.0,
        loop_age_s=0.1,
        draining=False,
    )
    up, down = DatabaseCheck(True, 0.01), DatabaseCheck(False, 2.0, "connection refused")
    assert judge(fine, up)[:2] == (True, True)
    assert judge(fine, down)[:2] == (True, False)  # an outage: alive, not ready
    silent = dataclasses.replace(fine, silent_max_s=61.0)
    assert judge(silent, up)[:2] == (False, False)
    assert judge(dataclasses.replace(fine, loop_age_s=90.0), up)[:2] == (False, False)
    assert judge(dataclasses.replace(fine, draining=True), up)[:2] == (True, False)
    starting = dataclasses.replace(fine, ready=0, silent_max_s=0.0)
    assert judge(starting, up)[:2] == (True, False)
    body = judge(fine, down)[2]
    assert body["database"] == {"ok": False, "seconds": 2.0, "error": "connection refused"}
    assert body["processes"]["ready"] == 2


def test_queue_gauges_from_a_client(app: pgflow.App, database_url: str) -> None:
    metrics_app.held.enqueue(metrics_app.adds, 1)
    metrics_app.held.enqueue(metrics_app.adds, 2)
    with pgflow.Client(database_url) as client:
        client.pause_queue("held")
        # As a web process serves it: its own default registry plus the queue gauges.
        body, content_type = metrics.exposition(None, metrics.collect_queue_metrics(client))
    assert content_type.startswith("text/plain")
    text = body.decode()
    found = {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert value(found, "pgflow_queue_enqueued", queue="held") == 2
    assert value(found, "pgflow_queue_paused", queue="held") == 1
    assert value(found, "pgflow_queue_running", queue="held") == 0
    assert (value(found, "pgflow_queue_oldest_wait_seconds", queue="held") or -1) >= 0
    assert value(found, "pgflow_workflows", status="ENQUEUED") == 2
    assert value(found, "pgflow_workflows", status="SUCCESS") == 0


def test_without_prometheus_client_every_call_is_a_no_op() -> None:
    code = """
import sys
sys.modules["prometheus_client"] = None  # as if not installed
from pgflow import metrics
metrics.claimed("q", 3)
metrics.workflow_finished("q", "w", "SUCCESS", 0.1)
metrics.step_finished("s", True, 0.1)
metrics.step_retried("s")
metrics.recovered(["ENQUEUED"])
metrics.adopted(None, "w")
metrics.write_fenced("final")
metrics.database_away(1.0)
metrics.database_reconnected()
assert not metrics.available()
print("ok")
"""
    out = run_python(code)
    assert out.stdout.strip() == "ok", out.stderr


def test_a_killed_supervisors_folder_is_removed_by_the_next(
    database_url: str, worker: Callable[..., Worker]
) -> None:
    port = free_port()
    first = worker(database_url, port, "-P", "1", "-c", "1")
    wait_for("listening", lambda: _status(port) == 200, 30, interval=0.1)
    folder = Path(first.events("metrics_listening")[0]["folder"])
    first.kill()  # SIGKILL: no chance to clean up
    assert folder.exists()
    second = worker(database_url, port, "-P", "1", "-c", "1")
    wait_for("listening again", lambda: _status(port) == 200, 30, interval=0.1)
    assert not folder.exists()
    second.proc.terminate()
    assert second.wait(30) == 0


def test_metrics_port_refused_when_taken(database_url: str, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        w = Worker(
            database_url,
            tmp_path,
            "--metrics-port",
            str(port),
            "--burst",
            app="tests.metrics_app",
            env={"PGFLOW_METRICS_HOST": "127.0.0.1"},
        )
        code = w.wait(60)
    assert code == 1
    assert f"127.0.0.1:{port}" in w.stderr() and "--metrics-port" in w.stderr()
