"""send/recv, events, durable sleep (and parking), and deadlines, on a real Postgres; crash
cases kill real child processes."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

import pgflow
import pgflow.checkpoints
from pgflow.recovery import release_executors
from tests import msg_app
from tests.apps import MakeApp
from tests.inprocess import running_worker, wait_for
from tests.processes import run_python


def rows(url: str, statement: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(statement, params).fetchall()


def store_message(url: str, destination_id: str, topic: str, message: str) -> None:
    """A message already stored for ``destination_id`` (send() refuses an id no workflow
    has yet, and these tests need the message there before the workflow starts)."""
    rows(
        url,
        "INSERT INTO pgflow.notifications (destination_id, topic, message) "
        "VALUES (%s, %s, %s) RETURNING message_id",
        (destination_id, topic, message),
    )


@pytest.fixture
def shared_app(database_url: str) -> Iterator[pgflow.App]:
    """tests.msg_app's App (the one child processes run), on this test's database."""
    app = msg_app.app
    app.settings = app.settings.replace(database_url=database_url)
    yield app
    app.shutdown(timeout=5)
    app._stop.clear()
    app._executor = None
    app._launched = False


def run_child(url: str, crash: str, workflow: str, *args: Any, workflow_id: str) -> int:
    """Run one workflow of tests.msg_app in a child process that dies at ``crash``."""
    code = (
        f"from tests import msg_app; msg_app.run_in_child({url!r}, {workflow!r}, "
        f"*{args!r}, workflow_id={workflow_id!r})"
    )
    env = {**os.environ, "MSG_APP_CRASH": crash, "PGFLOW_LOG_LEVEL": "warning"}
    done = run_python(code, env=env)
    return done.returncode


# -- send / recv -------------------------------------------------------------------------------


def test_messages_sent_before_and_during_recv_arrive_at_once(make_app: MakeApp) -> None:
    app = make_app()

    @app.workflow()
    def two_messages() -> list[Any]:
        first = pgflow.recv("greet", timeout=30)
        pgflow.set_event("first", first)
        second = pgflow.recv("greet", timeout=30)
        return [first, second]

    wf_id = "two-messages"
    handle = app.options(workflow_id=wf_id).start(two_messages)
    app.send(wf_id, {"n": 1}, topic="greet")  # (a workflow must exist to be sent to)
    assert app.get_event(wf_id, "first", timeout=10) == {"n": 1}
    time.sleep(0.3)  # recv is waiting now
    sent = time.monotonic()
    app.send(wf_id, {"n": 2}, topic="greet")
    assert handle.result(timeout=10) == [{"n": 1}, {"n": 2}]
    # Woken by NOTIFY: far sooner than the 30 s timeout or the 5 s safety re-check.
    assert time.monotonic() - sent < 1.0
    assert rows(app.db.url, "SELECT * FROM pgflow.notifications") == []
    assert [s.name for s in app.steps(wf_id)] == ["pgflow.recv", "pgflow.set_event", "pgflow.recv"]


def test_topics_are_separate_and_fifo(make_app: MakeApp) -> None:
    app = make_app()

    @app.workflow()
    def by_topic() -> list[Any]:
        return [
            pgflow.recv("b", timeout=5),
            pgflow.recv("a", timeout=5),
            pgflow.recv("a", timeout=5),
            pgflow.recv(timeout=5),
        ]

    handle = app.options(workflow_id="topics").start(by_topic)
    for topic, message in (("a", 1), ("b", 2), ("a", 3), (None, 4)):
        app.send("topics", message, topic=topic)
    assert handle.result(timeout=10) == [2, 1, 3, 4]


def test_recv_timeout_returns_none_and_is_checkpointed(make_app: MakeApp) -> None:
    app = make_app()

    @app.workflow()
    def lonely() -> Any:
        return pgflow.recv(timeout=0.2)

    started = time.monotonic()
    assert app.options(workflow_id="lonely").call(lonely) is None
    assert 0.2 <= time.monotonic() - started < 2.0
    [step] = app.steps("lonely")
    assert (step.name, step.output, step.error) == ("pgflow.recv", None, None)


def test_send_from_a_workflow_is_sent_once_across_replays(make_app: MakeApp) -> None:
    app = make_app()

    @app.workflow()
    def sender(dest: str) -> str:
        pgflow.send(dest, "hello", topic="t")
        return "sent"

    assert app.options(workflow_id="sender").call(sender, "sender") == "sent"  # to itself
    # Fork from step 2: the send (step 1) is replayed from its checkpoint, not sent again.
    assert app.fork("sender", from_step=2).result(timeout=10) == "sent"
    assert len(rows(app.db.url, "SELECT * FROM pgflow.notifications")) == 1


def test_recv_outside_a_workflow_says_what_to_do() -> None:
    with pytest.raises(pgflow.PgflowError, match="outside a workflow"):
        pgflow.recv()
    with pytest.raises(pgflow.PgflowError, match=r"app\.send"):
        pgflow.send("x", 1)


def test_recv_aborted_before_commit_leaves_the_message(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process: the checkpoint write fails after the DELETE; the transaction rolls back."""
    app = make_app()

    @app.workflow()
    def taker() -> Any:
        return pgflow.recv("t", timeout=5)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("checkpoint failed")

    store_message(app.db.url, "taker", "t", '"keep me"')  # stored before the workflow exists
    monkeypatch.setattr(pgflow.checkpoints, "record_in_transaction", broken)
    with pytest.raises(RuntimeError):
        app.options(workflow_id="taker").call(taker)
    assert [r["message"] for r in rows(app.db.url, "SELECT * FROM pgflow.notifications")] == [
        '"keep me"'
    ]


@pytest.mark.chaos
def test_recv_is_exactly_once_across_a_kill_before_and_after_commit(
    shared_app: pgflow.App, database_url: str
) -> None:
    app = shared_app
    # Killed after the DELETE, before its commit: the message is still there, no checkpoint.
    store_message(database_url, "wf-a", "t", '"m1"')  # stored before the workflow exists
    assert run_child(database_url, "before_commit", "receive_one", "t", workflow_id="wf-a") == 9
    assert [r["message"] for r in rows(database_url, "SELECT * FROM pgflow.notifications")] == [
        '"m1"'
    ]
    assert rows(database_url, "SELECT * FROM pgflow.operation_outputs") == []

    # Killed after the commit: the message is gone and the checkpoint holds it.
    store_message(database_url, "wf-b", "t", '"m2"')
    assert run_child(database_url, "after_recv", "receive_one", "t", workflow_id="wf-b") == 9
    assert [
        r["destination_id"] for r in rows(database_url, "SELECT * FROM pgflow.notifications")
    ] == ["wf-a"]
    [checkpoint] = rows(
        database_url,
        "SELECT * FROM pgflow.operation_outputs WHERE workflow_id = 'wf-b' AND step_id = 1",
    )
    assert checkpoint["output"] == '"m2"'

    # A message sent now must not be taken by wf-b's replay, which returns its checkpoint.
    app.send("wf-b", "late", topic="t")
    app.executor.ensure_registered()
    assert app.recover_now() == 2
    assert app.retrieve("wf-a").result(timeout=10) == "m1"
    assert app.retrieve("wf-b").result(timeout=10) == "m2"
    assert [r["message"] for r in rows(database_url, "SELECT * FROM pgflow.notifications")] == [
        '"late"'
    ]


# -- events ------------------------------------------------------------------------------------


def test_events_inside_and_outside(make_app: MakeApp, database_url: str) -> None:
    app = make_app()
    go = threading.Event()

    @app.step()
    def wait_for_go() -> None:
        assert go.wait(10)

    @app.workflow()
    def publisher() -> str:
        pgflow.set_event("stage", "started")
        wait_for_go()
        pgflow.set_event("stage", "done")
        pgflow.set_event("detail", {"items": [1, 2]})
        return "ok"

    @app.workflow()
    def reader(publisher_id: str) -> list[Any]:
        return [
            pgflow.get_event(publisher_id, "detail", timeout=10),
            pgflow.get_event(publisher_id, "missing", timeout=0.1),
        ]

    handle = app.options(workflow_id="pub").start(publisher)
    assert app.get_event("pub", "stage", timeout=10) == "started"
    reading = app.options(workflow_id="reader").start(reader, "pub")
    with pgflow.Client(database_url) as client:
        assert client.get_event("pub", "stage", timeout=0) == "started"
        time.sleep(0.2)
        go.set()
        sent = time.monotonic()
        assert reading.result(timeout=10) == [{"items": [1, 2]}, None]
        assert time.monotonic() - sent < 2.0
        assert handle.result(timeout=10) == "ok"
        assert client.get_event("pub", "stage") == "done"  # the latest value
        assert client.get_event("pub", "nothing", timeout=0.1) is None
    # The reader checkpointed what it read: a replay (fork) returns it without reading again.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE pgflow.workflow_events SET value = '\"changed\"'")
    assert app.fork("reader", from_step=2).result(timeout=10)[0] == {"items": [1, 2]}
    with pytest.raises(pgflow.PgflowError, match="outside a workflow"):
        pgflow.set_event("k", 1)


# -- sleep -------------------------------------------------------------------------------------


@pytest.mark.chaos
def test_sleep_resumed_after_a_crash_sleeps_only_what_is_left(
    shared_app: pgflow.App, database_url: str
) -> None:
    app = shared_app
    assert run_child(database_url, "in_sleep", "nap", 2.4, workflow_id="napper") == 9
    [checkpoint] = rows(database_url, "SELECT * FROM pgflow.operation_outputs")
    wake_at = float(checkpoint["output"])
    assert time.time() < wake_at  # died mid-sleep
    app.executor.ensure_registered()
    assert app.recover_now() == 1
    assert app.retrieve("napper").result(timeout=10) == "awake"
    assert 0 <= time.time() - wake_at < 0.6  # woke at the recorded time, not 2.4 s later


def test_long_sleep_of_a_queued_workflow_gives_its_thread_back(
    make_app: MakeApp, database_url: str
) -> None:
    app = make_app(sleep_threshold=0.3)
    q = app.queue("naps", concurrency=1)
    runs: list[str] = []

    @app.step()
    def note(what: str) -> None:
        runs.append(what)

    @app.workflow()
    def sleeper() -> str:
        note("before")
        pgflow.sleep(1.5)
        note("after")
        return "rested"

    @app.workflow()
    def quick() -> str:
        return "quick"

    with running_worker(app, threads=1):
        long = q.options(workflow_id="long").enqueue(sleeper)
        parked = wait_for(
            lambda: (s := long.status()).status is pgflow.Status.ENQUEUED and s.attempt == 1 and s,
            what="the sleeper to park",
        )
        assert parked.executor_id is None
        # Its thread and its concurrency slot serve other work meanwhile.
        assert q.enqueue(quick).result(timeout=5) == "quick"
        assert long.status().status is pgflow.Status.ENQUEUED
        assert long.result(timeout=10) == "rested"
    assert runs == ["before", "after"]
    assert [s.name for s in app.steps("long")][1] == "pgflow.sleep"
    final = long.status()
    assert final.attempt == 2 and final.recovery_attempts == 0


def test_cancel_wakes_a_sleeping_workflow(make_app: MakeApp) -> None:
    app = make_app()

    @app.workflow()
    def sleepy() -> str:
        pgflow.sleep(30)
        return "late"

    handle = app.options(workflow_id="sleepy").start(sleepy)
    wait_for(lambda: app.steps("sleepy"), what="the sleep checkpoint")
    cancelled = time.monotonic()
    app.cancel("sleepy")
    with pytest.raises(pgflow.WorkflowCancelled):
        handle.result(timeout=5)
    assert app.wait_idle(5)
    assert time.monotonic() - cancelled < 2.0


# -- deadlines ---------------------------------------------------------------------------------


def test_children_inherit_the_parents_deadline(make_app: MakeApp) -> None:
    app = make_app()
    q = app.queue("unserved")

    @app.workflow()
    def child() -> str:
        return "child"

    @app.workflow(timeout=0.8)
    def parent() -> str:
        child()
        q.enqueue(child)
        pgflow.sleep(5)
        return "never"

    with pytest.raises(pgflow.WorkflowCancelled):
        app.options(workflow_id="p").call(parent)
    status = app.retrieve("p").status()
    assert status.status is pgflow.Status.CANCELLED
    inline, queued = app.list_workflows(parent_workflow_id="p")
    assert inline.status is pgflow.Status.SUCCESS
    assert inline.deadline == status.deadline  # no timeout of its own: the parent's
    # The queued child never ran: the parent's deadline cancelled it.
    assert queued.status is pgflow.Status.CANCELLED and queued.deadline == status.deadline
    assert status.deadline is not None and status.started_at is not None
    assert status.deadline - status.started_at == timedelta(seconds=0.8)


def test_a_childs_own_shorter_timeout_wins(make_app: MakeApp) -> None:
    app = make_app()

    @app.workflow(timeout=0.2)
    def short_child() -> str:
        pgflow.sleep(2)
        return "never"

    @app.workflow(timeout=30)
    def parent() -> str:
        try:
            short_child()
        except pgflow.WorkflowCancelled:
            return "child timed out"
        return "no"

    assert app.options(workflow_id=str(uuid.uuid4())).call(parent) == "child timed out"


class Crash(BaseException):
    """Stands for the process dying mid-step: unwinds without writing an outcome."""


def test_the_deadline_survives_recovery(make_app: MakeApp) -> None:
    app = make_app()
    crashing = [True]

    @app.step()
    def maybe_crash() -> None:
        if crashing[0]:
            raise Crash()

    @app.workflow(timeout=60)
    def timed() -> str:
        maybe_crash()
        return "ok"

    with pytest.raises(Crash):
        app.options(workflow_id="timed").call(timed)
    before = app.retrieve("timed").status().deadline
    assert before is not None
    crashing[0] = False
    release_executors(app, [app.executor.executor_id], charge=True)
    assert app.recover_now() == 1
    assert app.retrieve("timed").result(timeout=10) == "ok"
    after = app.retrieve("timed").status()
    assert (after.deadline, after.recovery_attempts) == (before, 1)
