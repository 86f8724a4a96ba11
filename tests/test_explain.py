"""`explain`: why is this workflow not running? Each reason is built for real on the database
(a delay, a held queue, an exhausted rate window, a full key, no worker, another version,
priorities, a live and a dead owner, a sleep, a recv) and its words and numbers checked."""

from __future__ import annotations

import html
import re
import threading
import urllib.request
from datetime import timedelta, timezone
from typing import Any

import psycopg
import pytest

import pgflow
from pgflow.testing import Clock
from tests.apps import MakeApp
from tests.inprocess import running_worker, wait_for


def sql(url: str, statement: str, *params: Any) -> list[Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def blocking(app: pgflow.App, gate: threading.Event) -> Any:
    """A workflow that completes step 1 ('prep'), then blocks in step 2 until the gate opens."""

    @app.step(name="prep")
    def prep() -> int:
        return 1

    @app.step(name="hold")
    def hold() -> int:
        gate.wait(30)
        return 2

    @app.workflow(name="blocked")
    def blocked(tag: str = "") -> int:
        return prep() + hold()

    return blocked


def reason(found: pgflow.Explanation, code: str) -> pgflow.Reason:
    matches = [r for r in found.reasons if r.code == code]
    assert matches, (code, found.text)
    return matches[0]


def pending(handle: Any) -> bool:
    return handle.status().status is pgflow.Status.PENDING


def test_a_paused_queue(make_app: MakeApp) -> None:
    app = make_app("explain", app_version="v1")
    q = app.queue("held")
    wf = blocking(app, threading.Event())
    h = q.enqueue(wf)
    with pgflow.Client(app.database_url()) as client:
        client.pause_queue("held")
        found = app.explain(h.workflow_id)
        assert found.codes[0] == "paused"
        paused = reason(found, "paused")
        assert paused.numbers["queue"] == "held" and 0 <= paused.numbers["paused_for_s"] < 30
        assert "`pgflow queues resume held`" in paused.text
        client.resume_queue("held")
    assert "paused" not in app.explain(h.workflow_id).codes


def test_delayed_and_no_worker(make_app: MakeApp) -> None:
    app = make_app("explain", app_version="v1")
    q = app.queue("later")
    wf = blocking(app, threading.Event())
    h = q.options(delay=120).enqueue(wf)
    found = app.explain(h.workflow_id)
    assert found.status == "ENQUEUED" and found.codes == ["delayed", "no_worker"]
    delayed = reason(found, "delayed")
    assert 110 < delayed.numbers["in_s"] <= 120
    assert delayed.numbers["until"] - found.now == timedelta(seconds=delayed.numbers["in_s"])
    assert "It is delayed until " in delayed.text
    assert "in 2m00s" in delayed.text or "in 1m59s" in delayed.text
    assert "No live worker serves queue 'later'" in reason(found, "no_worker").text
    assert found.text.startswith(
        f"Workflow {h.workflow_id} (blocked) is ENQUEUED on queue 'later'."
    )


def test_concurrency_taken_by_a_running_workflow(make_app: MakeApp) -> None:
    app = make_app("explain", app_version="v1")
    q = app.queue("single", concurrency=1)
    gate = threading.Event()
    wf = blocking(app, gate)
    with running_worker(app):
        first = q.enqueue(wf, "a")
        wait_for(lambda: pending(first), what="the first to run")
        second = q.enqueue(wf, "b")
        found = app.explain(second.workflow_id)
        gate.set()
        assert first.result(timeout=10) == 3 and second.result(timeout=10) == 3
    assert found.codes == ["concurrency_full"]
    full = reason(found, "concurrency_full")
    assert full.numbers["running"] == 1 and full.numbers["concurrency"] == 1
    assert [t["workflow_id"] for t in full.numbers["taken_by"]] == [first.workflow_id]
    assert 0 <= full.numbers["taken_by"][0]["running_s"] < 10
    assert f"The queue's concurrency is 1 of 1, taken by {first.workflow_id} (for " in full.text


def test_rate_window_used_up(make_app: MakeApp) -> None:
    app = make_app("explain", app_version="v1")
    q = app.queue("metered", rate_limit=pgflow.Rate(2, per=90.0))
    gate = threading.Event()
    gate.set()
    wf = blocking(app, gate)
    with running_worker(app):
        done = [q.enqueue(wf, str(i)) for i in range(2)]
        assert [h.result(timeout=10) for h in done] == [3, 3]
        third = q.enqueue(wf, "c")
        found = app.explain(third.workflow_id)
    assert found.codes == ["rate_limited"]
    rate = reason(found, "rate_limited")
    assert (rate.numbers["used"], rate.numbers["limit"], rate.numbers["per_s"]) == (2, 2, 90.0)
    starts = [h.status().started_at for h in done]
    assert None not in starts, starts
    first_start = min(t for t in starts if t is not None)
    assert rate.numbers["next_slot"] == first_start + timedelta(seconds=90)
    assert 80 < rate.numbers["in_s"] <= 90
    assert "The rate limit used 2 of 2 starts in the current 90s window; next slot at " in rate.text


def test_partition_key_at_its_limit(make_app: MakeApp) -> None:
    app = make_app("explain", app_version="v1")
    q = app.queue("regions", concurrency=1, partitioned=True)
    gate = threading.Event()
    wf = blocking(app, gate)
    with running_worker(app):
        eu = q.options(partition_key="eu").enqueue(wf, "eu1")
        wait_for(lambda: pending(eu), what="eu1 to run")
        waiting = q.options(partition_key="eu").enqueue(wf, "eu2")
        found = app.explain(waiting.workflow_id)
        us = q.options(partition_key="us").enqueue(wf, "us1")
        wait_for(lambda: pending(us), what="another key to run meanwhile")
        gate.set()
    assert found.codes == ["partition_full"]
    full = reason(found, "partition_full")
    assert full.numbers["partition_key"] == "eu" and full.numbers["running"] == 1
    assert (
        f"Its partition key 'eu' is at its limit: 1 of 1 running, taken by {eu.workflow_id}"
        in full.text
    )
    assert "(partition key 'eu')" in found.text


def test_every_worker_concurrency_full(make_app: MakeApp) -> None:
    app = make_app("explain", app_version="v1")
    q = app.queue("narrow", worker_concurrency=1)
    gate = threading.Event()
    wf = blocking(app, gate)
    with running_worker(app, threads=4) as worker:
        first = q.enqueue(wf, "a")
        wait_for(lambda: pending(first), what="the first to run")
        second = q.enqueue(wf, "b")
        found = app.explain(second.workflow_id)
        gate.set()
    assert found.codes == ["workers_full"]
    full = reason(found, "workers_full")
    assert full.numbers["worker_concurrency"] == 1
    assert full.numbers["workers"] == [{"executor_id": worker.executor_id, "running": 1}]
    assert "Every live worker's worker_concurrency is full: " in full.text
    assert f"executor {worker.executor_id[:12]} on " in full.text and ": 1 of 1." in full.text


def test_version_rules(make_app: MakeApp, database_url: str) -> None:
    """A started row only on its own version; a name no live worker knows."""
    app = make_app("explain", app_version="v2")
    q = app.queue("jobs")
    wf = blocking(app, threading.Event())
    with running_worker(app), pgflow.Client(database_url) as client:
        h = client.enqueue("jobs", "nobody.knows")
        unknown = app.explain(h.workflow_id)
        # A row that started on v1 (it has checkpoints of v1's code) stays with v1.
        started = q.options(delay=3600).enqueue(wf)
        sql(
            database_url,
            "UPDATE pgflow.workflow_status SET app_version = 'v1', "
            "started_at = pgflow.clock(), not_before = NULL WHERE workflow_id = %s",
            started.workflow_id,
        )
        stranded = app.explain(started.workflow_id)
    assert unknown.codes == ["unknown_name"]
    text = reason(unknown, "unknown_name").text
    assert text == (
        "None of the 1 live worker of queue 'jobs' knows workflow 'nobody.knows' "
        "(their versions: v2); no registered version knows it."
    )
    # (the unknown name, enqueued first, is ahead of it in the queue)
    assert stranded.codes == ["wrong_version", "ahead"]
    wrong = reason(stranded, "wrong_version")
    assert wrong.numbers == {"app_version": "v1", "live_versions": ["v2"]}
    assert (
        "it started on version v1, and only that version may run it; the live workers "
        "of the queue run v2" in wrong.text
    )
    assert "pgflow workflows retarget --from v1 --to v2" in wrong.text


def test_higher_priority_and_earlier_ahead(make_app: MakeApp) -> None:
    app = make_app("explain", app_version="v1")
    q = app.queue("ranked", priority_enabled=True)
    wf = blocking(app, threading.Event())
    for p in (1, 1, 5):
        q.options(priority=p).enqueue(wf)
    q.options(priority=9).enqueue(wf)  # behind it: not counted
    q.options(priority=0, delay=600).enqueue(wf)  # not due: not counted
    target = q.options(priority=5).enqueue(wf)
    q.options(priority=9).enqueue(wf)
    found = app.explain(target.workflow_id)
    ahead = reason(found, "ahead")
    assert ahead.numbers == {"ahead": 3, "higher_priority": 2, "earlier": 1}
    assert ahead.text == (
        "3 workflows (2 of higher priority and 1 enqueued earlier) are "
        "ahead of it in queue 'ranked'."
    )


def test_pending_on_a_live_executor_in_its_step(make_app: MakeApp) -> None:
    app = make_app("explain", app_version="v1")
    q = app.queue("jobs")
    gate = threading.Event()
    wf = blocking(app, gate)
    with running_worker(app) as worker:
        h = q.enqueue(wf)
        wait_for(lambda: len(app.steps(h.workflow_id)) == 1, what="step 1 to complete")
        found = app.explain(h.workflow_id)
        gate.set()
        assert h.result(timeout=10) == 3
    assert found.codes == ["running"]
    running = reason(found, "running")
    assert running.numbers["executor_id"] == worker.executor_id
    assert running.numbers["step"] == 2 and running.numbers["last_step"]["name"] == "prep"
    assert 0 <= running.numbers["heartbeat_age_s"] < 10 and 0 <= running.numbers["in_step_s"] < 10
    assert f"It runs on executor {worker.executor_id} (host " in running.text
    assert "version v1; heartbeat " in running.text
    assert ", in its step 2 for " in running.text and "(step 1 'prep' completed at " in running.text


def test_pending_on_a_dead_executor(make_app: MakeApp, database_url: str) -> None:
    """An owner whose heartbeat is older than the timeout: dead, adoption due at heartbeat +
    timeout (the database's clock, moved forward)."""
    app = make_app("explain", app_version="v1", heartbeat_timeout=30.0)
    q = app.queue("jobs")
    wf = blocking(app, threading.Event())
    h = q.enqueue(wf)
    sql(
        database_url,
        "INSERT INTO pgflow.executors (executor_id, hostname, pid, app_version, "
        "kind, queues, heartbeat_at) VALUES ('gone-1', 'far-host', 4242, 'v1', 'worker', "
        "ARRAY['jobs'], pgflow.clock())",
    )
    sql(
        database_url,
        "UPDATE pgflow.workflow_status SET status = 'PENDING', "
        "executor_id = 'gone-1', started_at = pgflow.clock() WHERE workflow_id = %s",
        h.workflow_id,
    )
    alive = app.explain(h.workflow_id)
    assert alive.codes == ["running"] and "(no step has completed yet)" in alive.text
    [(beat,)] = sql(database_url, "SELECT heartbeat_at FROM pgflow.executors")
    Clock(app).advance(45)
    found = app.explain(h.workflow_id)
    assert found.codes == ["owner_dead"]
    dead = reason(found, "owner_dead")
    assert dead.numbers["adoption_due"] == beat + timedelta(seconds=30)
    assert 45 <= dead.numbers["heartbeat_age_s"] < 55 and dead.numbers["timeout_s"] == 30.0
    assert dead.numbers["live_executors"] == 0
    assert (
        "Its executor gone-1 (host far-host, pid 4242) is dead: its last heartbeat was "
        in dead.text
    )
    assert re.search(r"past the 30s timeout; adoption was due at .* UTC, 1[5-9]s ago", dead.text)
    assert "no live executor runs now to adopt it" in dead.text


def test_parked_in_a_durable_sleep(make_app: MakeApp, database_url: str) -> None:
    app = make_app("explain", app_version="v1", sleep_threshold=0.5)
    q = app.queue("naps")

    @app.step(name="before")
    def before() -> int:
        return 1

    @app.workflow(name="nap")
    def nap() -> int:
        before()
        pgflow.sleep(600)
        return 2

    with running_worker(app):
        h = q.enqueue(nap)
        wait_for(lambda: parked(h), what="the workflow to park")
        found = app.explain(h.workflow_id)
    assert found.codes == ["sleeping"]
    sleeping = reason(found, "sleeping")
    assert sleeping.numbers["step"] == 2 and 590 < sleeping.numbers["in_s"] <= 600
    [(not_before,)] = sql(
        database_url,
        "SELECT not_before FROM pgflow.workflow_status WHERE workflow_id = %s",
        h.workflow_id,
    )
    # The checkpointed wake-up time (the park's not_before is computed a moment later).
    assert abs((sleeping.numbers["until"] - not_before).total_seconds()) < 1
    assert "It is parked in a durable sleep (its step 2, since " in sleeping.text
    assert "in 9m5" in sleeping.text or "in 10m00s" in sleeping.text


def test_waiting_in_recv_for_its_topic_with_messages_on_another(
    make_app: MakeApp, database_url: str
) -> None:
    from pgflow.dashboard import create_app
    from tests.serving import serving

    app = make_app("explain", app_version="v1")
    q = app.queue("inbox")

    @app.step(name="ready")
    def ready() -> int:
        return 1

    @app.workflow(name="listener")
    def listener() -> Any:
        ready()
        return pgflow.recv("go", timeout=600)

    def waits(h: Any) -> Any:
        found = app.explain(h.workflow_id)
        return found if "waiting_recv" in found.codes else None

    with running_worker(app):
        h = q.enqueue(listener)
        found = wait_for(lambda: waits(h), what="the recv to wait")
        app.send(h.workflow_id, "hello", topic="other")
        found = app.explain(h.workflow_id)
        with serving(create_app(database_url)) as base:
            page = urllib.request.urlopen(f"{base}/workflows/{h.workflow_id}", timeout=10)
            shown = html.unescape(page.read().decode())
        [(step, topic, since, until)] = sql(
            database_url,
            "SELECT wait_step, wait_topic, wait_since, wait_until FROM pgflow.workflow_status "
            "WHERE workflow_id = %s",
            h.workflow_id,
        )
        app.send(h.workflow_id, "go!", topic="go")
        assert h.result(timeout=10) == "go!"
    assert found.codes == ["waiting_recv", "messages_waiting"]
    recv = reason(found, "waiting_recv")
    assert (step, topic) == (2, "go") and recv.numbers["since"] == since
    assert recv.numbers["step"] == 2 and recv.numbers["topic"] == "go"
    assert 0 <= recv.numbers["waiting_s"] < 10
    # until: the recv's timeout left when it began to wait (a few ms less than its 600 s)
    assert recv.numbers["until"] == until and 599 < (until - since).total_seconds() <= 600
    assert 590 < recv.numbers["in_s"] <= 600
    utc = since.astimezone(timezone.utc)
    assert f"waiting in recv for topic 'go' since {utc:%Y-%m-%d %H:%M:%S} UTC (" in recv.text
    assert "its step 2; it gives up at " in recv.text
    waiting = reason(found, "messages_waiting")
    assert waiting.numbers == {"unread": 1, "topics": {"other": 1}}
    assert waiting.text == "1 unread message waits for it ('other': 1)."
    # The dashboard gives the same answer.
    assert f"waiting in recv for topic 'go' since {utc:%Y-%m-%d %H:%M:%S} UTC" in shown
    assert "1 unread message waits" in shown
    # The message taken, the wait is cleared in the same transaction.
    assert sql(
        database_url,
        "SELECT wait_step, wait_topic, wait_since, wait_until FROM pgflow.workflow_status "
        "WHERE workflow_id = %s",
        h.workflow_id,
    ) == [(None, None, None, None)]


def test_a_recv_records_its_wait_only_when_it_waits(
    make_app: MakeApp, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgflow.db.pool import Database

    ran: list[str] = []
    run = Database.run

    def spy(self: Database, name: str, params: Any = None) -> int:
        ran.append(name)
        return run(self, name, params)

    monkeypatch.setattr(Database, "run", spy)
    app = make_app("explain", app_version="v1")
    gate = threading.Event()

    @app.step(name="gate")
    def at_gate() -> None:
        gate.wait(30)

    @app.workflow(name="fast")
    def fast() -> Any:
        at_gate()
        return pgflow.recv("go", timeout=30), pgflow.recv("late", timeout=0.5)

    h = app.start(fast)
    app.send(h.workflow_id, "there", topic="go")  # before the recv: its fast path
    gate.set()
    assert tuple(h.result(timeout=10)) == ("there", None)
    # Only the second recv waited (and timed out): one record, cleared by its timeout.
    assert ran.count("record_recv_wait") == 1
    assert sql(
        database_url,
        "SELECT wait_step FROM pgflow.workflow_status WHERE workflow_id = %s",
        h.workflow_id,
    ) == [(None,)]


def test_a_finished_workflow_is_done(make_app: MakeApp) -> None:
    app = make_app("explain", app_version="v1")
    gate = threading.Event()
    gate.set()
    wf = blocking(app, gate)
    h = app.start(wf)
    assert h.result(timeout=10) == 3
    found = app.explain(h.workflow_id)
    assert found.codes == ["done"]
    assert reason(found, "done").numbers["status"] == "SUCCESS"
    assert "It is done: SUCCESS at " in found.text and "nothing blocks it" in found.text
    with pytest.raises(pgflow.UnknownWorkflow, match="no workflow has id 'nope'"):
        app.explain("nope")


def parked(h: Any) -> bool:
    """ENQUEUED after it started (a durable sleep gave its thread back), read at once."""
    s = h.status()
    return s.status is pgflow.Status.ENQUEUED and s.started_at is not None
