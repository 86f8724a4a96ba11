"""Management semantics DBOS users rely on (issue 13, item 3): resume of waiting and
succeeded workflows, id conflicts between functions, send to an unknown id, fork and events,
Deduplicated inside a workflow, unlimited recovery attempts, and the checks on ids and
priorities at every entry."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest

import pgflow
from tests.apps import MakeApp
from tests.inprocess import running_worker


@pytest.fixture
def client(database_url: str) -> Iterator[pgflow.Client]:
    with pgflow.Client(database_url) as c:
        yield c


# -- one id, one function ----------------------------------------------------------------------


def test_a_different_function_under_a_taken_id_is_a_conflict(
    make_app: MakeApp, client: pgflow.Client
) -> None:
    app = make_app()
    q = app.queue("conflicts")

    @app.workflow(name="first")
    def first() -> str:
        return "first's result"

    @app.workflow(name="second")
    def second() -> str:
        return "second's result"

    assert app.options(workflow_id="taken").call(first) == "first's result"
    # The same function under the same id is the same execution: its result comes back.
    assert app.options(workflow_id="taken").call(first) == "first's result"
    assert app.options(workflow_id="taken").start(first).result(timeout=5) == "first's result"
    starts: list[Callable[[], object]] = [
        lambda: app.options(workflow_id="taken").call(second),
        lambda: app.options(workflow_id="taken").start(second),
        lambda: q.options(workflow_id="taken").enqueue(second),
        lambda: client.enqueue(
            "conflicts", "second", workflow_id="taken", app_version=app.app_version
        ),
    ]
    for start in starts:
        with pytest.raises(pgflow.WorkflowConflict, match=r"'first'.*'second'") as err:
            start()
        assert (err.value.workflow_id, err.value.existing_name, err.value.requested_name) == (
            "taken",
            "first",
            "second",
        )
    assert isinstance(err.value, pgflow.PgflowError)
    # An enqueue of the same function under a taken id still stands for the existing one.
    assert q.options(workflow_id="taken").enqueue(first).result(timeout=5) == "first's result"
    assert [w.name for w in app.list_workflows()] == ["first"]


# -- resume ------------------------------------------------------------------------------------


def test_resume_starts_a_delayed_workflow_now(make_app: MakeApp, client: pgflow.Client) -> None:
    app = make_app()
    q = app.queue("later")

    @app.workflow()
    def task(x: int) -> int:
        return x + 1

    hour = q.options(delay=3600).enqueue(task, 1)
    other = q.options(delay=3600).enqueue(task, 2)
    with running_worker(app):
        with pytest.raises(pgflow.WorkflowTimeout):
            hour.result(timeout=0.5)
        assert app.resume(hour.workflow_id).workflow_id == hour.workflow_id
        assert hour.result(timeout=5) == 2
        # From a Client too (no application code): the workers claim it at once.
        assert client.resume(other.workflow_id).status().status in (
            pgflow.Status.ENQUEUED,
            pgflow.Status.PENDING,
            pgflow.Status.SUCCESS,
        )
        assert other.result(timeout=5) == 3
    # A queued workflow that was never delayed is left claimable; a succeeded one is untouched.
    assert client.resume(hour.workflow_id).status().status is pgflow.Status.SUCCESS
    assert app.resume(hour.workflow_id).result(timeout=1) == 2


def test_resume_adopts_an_ownerless_pending_workflow(make_app: MakeApp, database_url: str) -> None:
    import psycopg

    app = make_app()

    @app.workflow(name="orphan")
    def orphan() -> str:
        return "ran"

    version = app.app_version
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgflow.workflow_status (workflow_id, name, status, app_version, "
            "inputs) VALUES ('o1', 'orphan', 'PENDING', %s, %s)",
            (version, '{"args":[],"kwargs":{}}'),
        )
    assert app.resume("o1").result(timeout=10) == "ran"


# -- send to an unknown id ---------------------------------------------------------------------


def test_send_to_an_unknown_workflow_raises_everywhere_and_on_replay(
    make_app: MakeApp, client: pgflow.Client, database_url: str
) -> None:
    import psycopg

    app = make_app()
    for who in (app, client):
        with pytest.raises(pgflow.UnknownWorkflow, match="no workflow has id 'ghost'"):
            who.send("ghost", "boo")
    outcomes: list[str] = []

    @app.workflow(name="sender")
    def sender() -> str:
        try:
            pgflow.send("ghost", "boo")
        except pgflow.UnknownWorkflow:
            outcomes.append("unknown")
        else:
            outcomes.append("sent")
        return "done"

    assert app.options(workflow_id="s").call(sender) == "done"
    [step] = app.steps("s")
    assert step.name == "pgflow.send" and isinstance(step.error, pgflow.UnknownWorkflow)
    # A workflow named 'ghost' exists now; a replay of the first run still takes the path it
    # took (the recorded error), and sends nothing.
    app.options(workflow_id="ghost").call(sender)
    assert app.fork("s", from_step=2).result(timeout=10) == "done"
    assert outcomes == ["unknown", "sent", "unknown"]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM pgflow.notifications").fetchone() == (1,)


# -- Deduplicated inside a workflow ------------------------------------------------------------


def test_an_enqueue_refused_as_deduplicated_in_a_workflow_is_checkpointed(
    make_app: MakeApp,
) -> None:
    app = make_app()
    q = app.queue("dedup")

    @app.workflow(name="child")
    def child() -> str:
        return "child ran"

    @app.workflow(name="parent")
    def parent() -> str:
        try:
            q.options(dedup_id="once").enqueue(child)
        except pgflow.Deduplicated as exc:
            return f"refused: held by {exc.existing_workflow_id}"
        return "enqueued"

    holder = q.options(dedup_id="once", workflow_id="holder").enqueue(child)
    assert app.options(workflow_id="p").call(parent) == "refused: held by holder"
    [step] = app.steps("p")
    assert step.name == "child" and isinstance(step.error, pgflow.Deduplicated)
    assert step.error.existing_workflow_id == "holder"
    # The dedup id is free now, yet a replay of the parent takes the path it took.
    app.cancel(holder.workflow_id)
    assert app.fork("p", from_step=2).result(timeout=10) == "refused: held by holder"
    assert [w.workflow_id for w in app.list_workflows(name="child")] == ["holder"]
    # A new run is free to enqueue.
    assert app.options(workflow_id="p2").call(parent) == "enqueued"


# -- unlimited recovery attempts ---------------------------------------------------------------


def test_max_recovery_attempts_none_means_unlimited(
    make_app: MakeApp, client: pgflow.Client
) -> None:
    app = make_app(max_recovery_attempts=3)
    q = app.queue("recover")

    @app.workflow(name="default_limit")
    def default_limit() -> None: ...

    @app.workflow(name="unlimited", max_recovery_attempts=None)
    def unlimited() -> None: ...

    @app.workflow(name="five", max_recovery_attempts=5)
    def five() -> None: ...

    def stored(handle: pgflow.WorkflowHandle[Any]) -> int | None:
        return handle.status().max_recovery_attempts

    assert stored(q.enqueue(default_limit)) == 3  # not given: the app's setting
    assert stored(q.enqueue(unlimited)) is None  # before: None fell back to the app's 3
    assert stored(q.enqueue(five)) == 5
    assert stored(app.start(unlimited)) is None
    assert stored(client.enqueue("recover", "five", app_version="v")) == 10  # its setting
    assert (
        stored(client.enqueue("recover", "five", app_version="v", max_recovery_attempts=None))
        is None
    )

    # A crash past any count leaves an unlimited workflow to be recovered again.
    executor = app.executor
    executor.ensure_registered()
    for limit in (None, 50):
        app.db.fetchone(
            "insert_workflow",
            {
                "workflow_id": f"crashy-{limit}",
                "name": "unlimited",
                "parent_workflow_id": None,
                "executor_id": executor.executor_id,
                "app_version": "elsewhere",
                "max_recovery_attempts": limit,
                "serializer": "json",
                "inputs": '{"args":[],"kwargs":{}}',
                "timeout_ms": None,
                "deadline": None,
                "fence": None,
                "trace_context": None,
            },
        )
    with app.db.connection() as conn:
        conn.execute(
            "UPDATE pgflow.workflow_status SET recovery_attempts = 50 "
            "WHERE workflow_id LIKE 'crashy-%'"
        )
    app.db.fetchall(
        "release_executor_work",
        {
            "executor_ids": [executor.executor_id],
            "charge": True,
            "channel": "x",
            "workflow_ids": ["crashy-None", "crashy-50"],
        },
    )
    assert app.retrieve("crashy-None").status().status is pgflow.Status.PENDING
    assert app.retrieve("crashy-50").status().status is pgflow.Status.MAX_RECOVERY_ATTEMPTS_EXCEEDED


# -- fork and events ---------------------------------------------------------------------------


def test_a_fork_sees_the_events_published_before_its_first_step(
    make_app: MakeApp, client: pgflow.Client
) -> None:
    app = make_app()

    @app.step()
    def work(n: int) -> int:
        return n

    @app.workflow(name="publisher")
    def publisher() -> str:
        pgflow.set_event("stage", "one")  # step 1
        work(2)  # step 2
        pgflow.set_event("stage", "three")  # step 3
        pgflow.set_event("other", "four")  # step 4
        work(5)  # step 5
        return "done"

    assert app.options(workflow_id="pub").call(publisher) == "done"
    assert app.get_event("pub", "stage", timeout=0) == "three"
    # The fork reuses steps 1-2: it starts with the events they published, and no later one.
    # (Forked by a Client, it waits for an executor: nothing runs before the checks.)
    fork = client.fork("pub", from_step=3, new_workflow_id="pub-fork")
    assert app.get_event("pub-fork", "stage", timeout=0) == "one"
    assert app.get_event("pub-fork", "other", timeout=0) is None
    assert app.recover_now() == 1
    assert app.retrieve(fork.workflow_id).result(timeout=10) == "done"
    assert app.get_event("pub-fork", "stage", timeout=0) == "three"
    # A fork of the fork, from step 5: steps 1-4 and their events carry over.
    client.fork("pub-fork", from_step=5, new_workflow_id="pub-fork-2")
    assert app.get_event("pub-fork-2", "stage", timeout=0) == "three"
    assert app.get_event("pub-fork-2", "other", timeout=0) == "four"


# -- ids and priorities at every entry ---------------------------------------------------------

BLANKS = (" ", "   ", "\u3000", "\u00a0\u2003")


def test_a_blank_workflow_id_is_refused_on_every_path(
    make_app: MakeApp, client: pgflow.Client, database_url: str
) -> None:
    from click.testing import CliRunner

    from pgflow.cli import main

    app = make_app()
    q = app.queue("blank")

    @app.workflow(name="noop")
    def noop() -> None: ...

    app.options(workflow_id="real").call(noop)
    for blank in BLANKS:
        paths: list[Callable[[], object]] = [
            partial(app.options, workflow_id=blank),
            partial(q.options, workflow_id=blank),
            partial(client.enqueue, "blank", "noop", workflow_id=blank, app_version="v"),
            partial(app.fork, "real", new_workflow_id=blank),
            partial(client.fork, "real", new_workflow_id=blank),
            partial(app.send, blank, "x"),
            partial(q.options, dedup_id=blank),
        ]
        for path in paths:
            with pytest.raises(pgflow.InvalidValue, match="only whitespace"):
                path()
        runner = CliRunner()
        env = {"PGFLOW_DATABASE_URL": database_url, "PGFLOW_LOG_LEVEL": "warning"}
        for args in (
            ["enqueue", "blank", "noop", "[]", "--workflow-id", blank, "--app-version", "v"],
            ["workflows", "fork", "real", "--workflow-id", blank],
        ):
            done = runner.invoke(main, args, env=env)
            assert done.exit_code == 1 and "only whitespace" in done.output, done.output
    assert [w.workflow_id for w in app.list_workflows()] == ["real"]


def test_priorities_are_checked_on_every_enqueue_path(
    make_app: MakeApp, client: pgflow.Client, database_url: str
) -> None:
    from click.testing import CliRunner

    from pgflow.cli import main

    app = make_app()
    q = app.queue("prio", priority_enabled=True)

    @app.workflow(name="noop")
    def noop() -> None: ...

    for bad in (-1, 2**31, True, 1.5, "1"):
        for path in (
            lambda bad=bad: q.options(priority=bad),
            lambda bad=bad: client.enqueue("prio", "noop", priority=bad, app_version="v"),
        ):
            with pytest.raises(pgflow.InvalidValue, match="lower runs first"):
                path()
    done = CliRunner().invoke(
        main,
        ["enqueue", "prio", "noop", "--priority", "-1", "--app-version", "v"],
        env={"PGFLOW_DATABASE_URL": database_url, "PGFLOW_LOG_LEVEL": "warning"},
    )
    assert done.exit_code == 1 and "lower runs first" in done.output
    assert app.list_workflows() == []
    # The ends of the range are accepted; lower runs first, 0 (the default) first of all.
    last = q.options(priority=2**31 - 1).enqueue(noop)
    first = q.enqueue(noop)
    middle = client.enqueue("prio", "noop", priority=5, app_version=app.app_version)
    q.options(priority=1).enqueue_many(noop, [(), ()])
    assert [w.priority for w in app.list_queued("prio")] == [0, 1, 1, 5, 2**31 - 1]
    assert next(w.workflow_id for w in app.list_queued("prio")) == first.workflow_id
    assert {last.workflow_id, middle.workflow_id} <= {
        w.workflow_id for w in app.list_queued("prio")
    }
