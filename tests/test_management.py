"""cancel, resume, fork, listing, and the Client (from a process that never imported the app)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pgflow
from tests import mgmt_app
from tests.apps import MakeApp
from tests.inprocess import running_worker, wait_for
from tests.processes import run_python

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def client(database_url: str) -> Iterator[pgflow.Client]:
    with pgflow.Client(database_url) as c:
        yield c


@pytest.fixture
def shared_app(database_url: str) -> Iterator[pgflow.App]:
    """tests.mgmt_app's App on this test's database."""
    app = mgmt_app.app
    app.settings = app.settings.replace(database_url=database_url)
    yield app
    app.shutdown(timeout=5)
    app._stop.clear()
    app._executor = None


# -- cancel ------------------------------------------------------------------------------------


def test_cancel_a_running_workflow_and_its_children(make_app: MakeApp) -> None:
    app = make_app()
    q = app.queue("kids")
    in_step, release = threading.Event(), threading.Event()
    ran: list[str] = []

    @app.step()
    def slow() -> None:
        ran.append("slow")
        in_step.set()
        assert release.wait(10)

    @app.step()
    def after() -> None:
        ran.append("after")

    @app.workflow()
    def waiting_child() -> Any:
        return pgflow.recv(timeout=60)

    @app.workflow()
    def queued_child() -> str:
        return "never claimed"

    @app.workflow()
    def parent() -> str:
        app.start(waiting_child)
        q.enqueue(queued_child)
        slow()
        after()
        return "done"

    handle = app.options(workflow_id="parent").start(parent)
    assert in_step.wait(10)
    kids = app.list_workflows(parent_workflow_id="parent")
    assert len(kids) == 2
    cancelled = time.monotonic()
    assert app.cancel("parent").status is pgflow.Status.CANCELLED
    assert {k.status for k in app.list_workflows(parent_workflow_id="parent")} == {
        pgflow.Status.CANCELLED
    }
    # The child waiting in recv is woken by the cancel and ends at once.
    with pytest.raises(pgflow.WorkflowCancelled):
        app.retrieve(kids[0].workflow_id).result(timeout=5)
    release.set()
    with pytest.raises(pgflow.WorkflowCancelled):
        handle.result(timeout=5)
    assert app.wait_idle(5)
    assert time.monotonic() - cancelled < 3.0
    assert ran == ["slow"]  # the step running at the cancel finished; the next never ran
    # The step running at the cancel completed: its checkpoint is kept (resume won't rerun it).
    assert [s.step_id for s in app.steps("parent")] == [1, 2, 3]
    # Cancelling an ended workflow changes nothing; an unknown id says so.
    assert app.cancel("parent").status is pgflow.Status.CANCELLED
    with pytest.raises(pgflow.UnknownWorkflow, match="no workflow has id 'nope'"):
        app.cancel("nope")


# -- resume ------------------------------------------------------------------------------------


def test_resume_an_errored_workflow_from_its_last_completed_step(make_app: MakeApp) -> None:
    app = make_app()
    calls: Counter[str] = Counter()
    broken = [True]

    @app.step()
    def first() -> int:
        calls["first"] += 1
        return 1

    @app.step()
    def flaky() -> int:
        calls["flaky"] += 1
        if broken[0]:
            raise ValueError("not yet")
        return 2

    @app.workflow(max_recovery_attempts=3)
    def job() -> int:
        return first() + flaky()

    with pytest.raises(ValueError):
        app.options(workflow_id="job").call(job)
    assert app.retrieve("job").status().status is pgflow.Status.ERROR
    broken[0] = False
    assert app.resume("job").result(timeout=10) == 3
    assert calls == {"first": 1, "flaky": 2}  # the completed step was not run again
    status = app.retrieve("job").status()
    assert (status.status, status.recovery_attempts, status.error) == (
        pgflow.Status.SUCCESS,
        0,
        None,
    )
    # Resuming a succeeded workflow returns its handle and changes nothing (as in DBOS).
    assert app.resume("job").result(timeout=1) == 3
    assert calls == {"first": 1, "flaky": 2}
    with pytest.raises(pgflow.UnknownWorkflow):
        app.resume("nope")


def test_resume_a_cancelled_queued_workflow_puts_it_back_on_its_queue(
    make_app: MakeApp, client: pgflow.Client
) -> None:
    app = make_app()
    q = app.queue("later")

    @app.workflow()
    def task(x: int) -> int:
        return x + 1

    handle = q.options(dedup_id="d1").enqueue(task, 1)
    client.cancel(handle.workflow_id)
    assert handle.status().status is pgflow.Status.CANCELLED
    assert handle.status().dedup_id == "d1"
    resumed = client.resume(handle.workflow_id)
    after = resumed.status()
    assert (after.status, after.queue_name, after.recovery_attempts) == (
        pgflow.Status.ENQUEUED,
        "later",
        0,
    )
    assert [w.workflow_id for w in client.list_queued("later")] == [handle.workflow_id]
    with running_worker(app):
        assert resumed.result(timeout=10) == 2


def test_resume_after_max_recovery_attempts_resets_the_count(
    make_app: MakeApp, database_url: str
) -> None:
    app = make_app()

    @app.workflow(max_recovery_attempts=0)
    def fragile() -> str:
        return "fine now"

    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgflow.workflow_status (workflow_id, name, status, app_version, "
            "inputs, recovery_attempts, max_recovery_attempts) VALUES ('f', %s, "
            "'MAX_RECOVERY_ATTEMPTS_EXCEEDED', %s, %s, 1, 0)",
            (
                fragile.__pgflow_workflow__.name,  # type: ignore[attr-defined]
                app.app_version,
                '{"args":[],"kwargs":{}}',
            ),
        )
    assert app.resume("f").result(timeout=10) == "fine now"
    assert app.retrieve("f").status().recovery_attempts == 0


# -- fork --------------------------------------------------------------------------------------


def test_fork_from_step_3_does_not_run_steps_1_and_2(make_app: MakeApp) -> None:
    app = make_app()
    q = app.queue("forks")
    calls: Counter[int] = Counter()

    @app.step()
    def numbered(n: int) -> int:
        calls[n] += 1
        return n * 10

    @app.workflow()
    def four_steps(base: int) -> list[int]:
        return [base + numbered(n) for n in (1, 2, 3, 4)]

    assert app.options(workflow_id="orig").call(four_steps, 5) == [15, 25, 35, 45]
    fork = app.fork("orig", from_step=3)
    assert fork.workflow_id != "orig"
    assert fork.result(timeout=10) == [15, 25, 35, 45]
    assert calls == {1: 1, 2: 1, 3: 2, 4: 2}
    status = fork.status()
    assert status.forked_from == "orig" and status.inputs == {"args": [5], "kwargs": {}}
    assert [s.step_id for s in app.steps(fork.workflow_id)] == [1, 2, 3, 4]

    # A queued original forks onto its queue, with the chosen id and version.
    queued = q.enqueue(four_steps, 1)
    with running_worker(app):
        queued.result(timeout=10)
    onto = app.fork(
        queued.workflow_id, from_step=2, new_workflow_id="forked", app_version=app.app_version
    )
    assert onto.workflow_id == "forked"
    assert onto.status().queue_name == "forks"
    with running_worker(app):
        assert onto.result(timeout=10) == [11, 21, 31, 41]
    with pytest.raises(pgflow.ConfigurationError, match="already taken"):
        app.fork("orig", new_workflow_id="forked")
    with pytest.raises(pgflow.UnknownWorkflow):
        app.fork("nope")
    with pytest.raises(pgflow.ConfigurationError):
        app.fork("orig", from_step=0)


# -- listing -----------------------------------------------------------------------------------


def test_list_queued_and_list_workflows(make_app: MakeApp, client: pgflow.Client) -> None:
    app = make_app()
    a, b = app.queue("a", priority_enabled=True), app.queue("b")

    @app.workflow()
    def noop(x: int) -> int:
        return x

    low = a.options(priority=5).enqueue(noop, 1)
    high = a.options(priority=1).enqueue(noop, 2)
    other = b.enqueue(noop, 3)
    done = app.options(workflow_id="inline").call(noop, 4)
    assert done == 4
    assert [w.workflow_id for w in app.list_queued("a")] == [high.workflow_id, low.workflow_id]
    assert {w.workflow_id for w in client.list_queued()} == {
        high.workflow_id,
        low.workflow_id,
        other.workflow_id,
    }
    assert [w.workflow_id for w in client.list_workflows(status="SUCCESS")] == ["inline"]
    assert [w.workflow_id for w in client.list_workflows(queue="b")] == [other.workflow_id]
    newest = client.list_workflows(newest_first=True, limit=2)
    assert [w.workflow_id for w in newest] == ["inline", other.workflow_id]
    with pytest.raises(pgflow.ConfigurationError, match="unknown status"):
        client.list_workflows(status="DONE")


# -- the Client --------------------------------------------------------------------------------


def test_client_enqueues_from_a_process_that_never_imported_the_app(
    shared_app: pgflow.App, database_url: str
) -> None:
    app = shared_app
    script = (
        "import sys, pgflow\n"
        f"c = pgflow.Client({database_url!r})\n"
        "h = c.enqueue('jobs', 'double', 21, dedup_id='once')\n"
        "print(h.workflow_id)\n"
        "print(h.result(timeout=20))\n"
        "assert not [m for m in sys.modules if m.startswith('tests')], 'imported the app'\n"
    )
    with running_worker(app):
        done = run_python(script)
    assert done.returncode == 0, done.stderr
    workflow_id, result = done.stdout.split()
    assert result == "42"
    status = app.retrieve(workflow_id).status()
    assert (status.name, status.app_version, status.queue_name) == ("double", "mgmt-v1", "jobs")


def test_client_enqueues_before_any_worker_ran(
    client: pgflow.Client, shared_app: pgflow.App
) -> None:
    """As in DBOS: no worker needs to be alive; the row carries no version until a worker
    that knows the name starts it. A version no worker ever ran is refused when strict."""
    with pytest.raises(pgflow.UnknownWorkflow, match="app_version 'nope'"):
        client.enqueue("jobs", "double", 1, app_version="nope", strict=True)
    handle = client.enqueue("jobs", "double", 4, workflow_id="w4")
    status = handle.status()
    assert (status.status, status.app_version) == (pgflow.Status.ENQUEUED, None)
    with running_worker(shared_app):
        assert handle.result(timeout=10) == 8
    assert handle.status().app_version == "mgmt-v1"
    # Now that a worker registered mgmt-v1, it may be named.
    named = client.enqueue("jobs", "double", 5, app_version="mgmt-v1")
    with running_worker(shared_app):
        assert named.result(timeout=10) == 10
    assert [s.name for s in client.steps("w4")] == ["tests.mgmt_app.double_step"]
    assert client.retrieve("w4").status().output == 8
    with pytest.raises(pgflow.UnknownWorkflow):
        client.retrieve("nope")


def test_client_checks_options_against_the_declared_queue(
    client: pgflow.Client, shared_app: pgflow.App
) -> None:
    with running_worker(shared_app):
        wait_for(lambda: client.queue_report()[0], what="the worker to declare its queue")
        with pytest.raises(pgflow.ConfigurationError, match="priority"):
            client.enqueue("jobs", "double", 1, priority=3)
        first = client.enqueue("jobs", "double", 1, dedup_id="x", delay=30)
        with pytest.raises(pgflow.Deduplicated) as caught:
            client.enqueue("jobs", "double", 2, dedup_id="x")
        assert caught.value.existing_workflow_id == first.workflow_id


def test_client_refuses_an_unmigrated_schema(database_url: str) -> None:
    with pytest.raises(pgflow.SchemaNotMigrated, match="pgflow migrate"):
        pgflow.Client(database_url, schema="elsewhere").list_workflows()


def test_the_readmes_pruning_statement_deletes_old_workflows_with_their_steps(
    make_app: MakeApp,
) -> None:
    app = make_app("prune")

    @app.step()
    def one() -> int:
        return 1

    @app.workflow()
    def two_steps() -> int:
        return one() + one()

    old, new = app.start(two_steps), app.start(two_steps)
    assert old.result(timeout=10) == new.result(timeout=10) == 2
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    prune = readme.split("**Pruning.**", 1)[1].split("```sql\n", 1)[1].split("```", 1)[0]
    with app.db.connection() as conn:
        conn.execute(
            "UPDATE pgflow.workflow_status SET completed_at = now() - interval '31 days'"
            " WHERE workflow_id = %s",
            (old.workflow_id,),
        )
        conn.execute(prune)
        left = conn.execute("SELECT workflow_id FROM pgflow.workflow_status").fetchall()
        steps = conn.execute(
            "SELECT workflow_id, count(*) AS n FROM pgflow.operation_outputs GROUP BY workflow_id"
        ).fetchall()
    assert [r["workflow_id"] for r in left] == [new.workflow_id]
    assert [(r["workflow_id"], r["n"]) for r in steps] == [(new.workflow_id, 2)]
